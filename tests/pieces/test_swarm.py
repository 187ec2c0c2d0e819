"""The lean swarm against servers mqprobe did not write: python-socketio, Node socket.io 4 and 2."""
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import socketio
from aiohttp import web

from mqprobe.pieces.swarm import Swarm, SwarmConfig, plan_members
from mqprobe.stamps import new_trace_id, now_ns

from ..conftest import run_cli


def test_members_spread_over_nodes_and_slices():
    config = SwarmConfig(node_urls=["a", "b"], group_sizes={"1": 5, "2": 7})
    everyone = plan_members(config)
    assert len(everyone) == 12
    assert {m.url for m in everyone} == {"a", "b"}
    slices = [plan_members(SwarmConfig(node_urls=["a", "b"], group_sizes={"1": 5, "2": 7},
                                       slice_index=i, slice_count=3)) for i in range(3)]
    assert sum(len(s) for s in slices) == 12
    assert all(3 <= len(s) <= 5 for s in slices)


async def _foreign_server_scenario() -> Swarm:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    @sio.on("join")
    async def join(sid, data):
        await sio.enter_room(sid, f"group.{data['group']}")
        return True

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    swarm = Swarm(SwarmConfig(node_urls=[f"http://127.0.0.1:{port}"], group_sizes={"1": 4}))
    await swarm.start()
    t = now_ns()
    good = [1, new_trace_id(), "1", 0, "n9", t, t + 1, t + 2, t]
    for payload in ({"text": "no trace"}, {"mqprobe": [7, "x"]}, {"mqprobe": "1;2;3"},
                    {"mqprobe": good}, {"mqprobe": good}, {"mqprobe": [*good[:3], 1, *good[4:]]}):
        await sio.emit("message", payload, room="group.1")
    await sio.emit("message", {"mqprobe": [*good[:2], "2", *good[3:]]}, room="group.1")
    for _ in range(100):
        if swarm.untraced == 12 and swarm.delivered == 8 and swarm.misrouted == 4:
            break
        await asyncio.sleep(0.05)
    await swarm.stop()
    await runner.cleanup()
    return swarm


def test_foreign_trace_fields_are_counted_not_fatal():
    swarm = asyncio.run(_foreign_server_scenario())
    assert swarm.untraced == 3 * 4  # no field, wrong version, not a list: per member
    assert swarm.result()["untraced_reasons"] == {  # no field and a string field alike
        "no mqprobe list first in the event's object": 8, "mqprobe field version 7 is not 1": 4}
    assert swarm.tallies["1"].delivered == 2 * 4  # seq 0 and seq 1
    assert swarm.tallies["1"].duplicated == 4  # seq 0 sent twice
    assert swarm.misrouted == 4  # a group-2 message in a group-1 room
    assert swarm.disconnects == 0


def test_the_pieces_run_by_hand_and_the_swarm_prints_its_hops(broker):
    """node, swarm and publish as a user runs them on separate hosts (here: one)."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    piece = [sys.executable, "-m", "mqprobe"]
    url = ["--amqp-url", broker.amqp_url]
    node = subprocess.Popen([*piece, "node", "--port", "0", "--groups", "1,2", "--prefix",
                             "byhand.", *url], stdout=subprocess.PIPE, text=True, env=env)
    swarm = None
    try:
        port = json.loads(node.stdout.readline())["port"]
        swarm = subprocess.Popen([*piece, "swarm", "--node-urls", f"http://127.0.0.1:{port}",
                                  "--group-sizes", "3,4"], stdout=subprocess.PIPE, text=True,
                                 env=env)
        assert json.loads(swarm.stdout.readline())["joined"] == 7
        published = subprocess.run([*piece, "publish", "--groups", "1,2", "--rate", "20",
                                    "--duration", "1", "--prefix", "byhand.", *url],
                                   capture_output=True, text=True, env=env, timeout=60)
        assert published.returncode == 0, published.stderr
        time.sleep(1.0)
    finally:
        for proc in (swarm, node):  # ours, by pid
            if proc:
                proc.send_signal(signal.SIGINT)
    out, _ = swarm.communicate(timeout=30)
    node.communicate(timeout=30)
    assert '"delivered": 140' in out
    table = out[out.index("swarm: 140 deliveries"):]
    for hop in ("mq", "server", "delivery", "e2e", "self-lag"):
        assert f"│ {hop}" in table


def test_a_foreign_seq_far_ahead_is_untraced_not_a_huge_allocation():
    import json

    from mqprobe.pieces.swarm import SEQ_JUMP_MAX, Swarm, SwarmConfig
    from mqprobe.stamps import field_from_frame

    swarm = Swarm(SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"1": 1}))
    member = swarm.members[0]

    def frame(seq: int) -> str:
        field = [1, "a" * 32, "1", seq, "n1", 1, 2, 3, 1]
        return "42" + json.dumps(["message", {"mqprobe": field}], separators=(",", ":"))

    swarm._on_event(member, frame(5), 10)
    swarm._on_event(member, frame(300_000_000), 10)
    assert swarm.untraced == 1 and len(member.seen) < SEQ_JUMP_MAX
    assert swarm.untraced_reasons == {f"seq more than {SEQ_JUMP_MAX} ahead of its group's last": 1}
    swarm._on_event(member, frame(5000), 10)  # ahead, but within reach: counted
    assert swarm.tallies["1"].delivered == 2
    assert field_from_frame('42["message",{"mqprobe":' + "[" * 200_000 + "]") is None


def test_a_frame_is_read_by_its_head_and_the_longest_field_fits_in_it():
    """The trace is read from a frame's first FIELD_HEAD characters (a 20 KB body is never
    hashed per member): copies of one message share it, another message with the same body
    is its own, and a field longest in every part fits in the head."""
    import json

    from mqprobe.pieces.swarm import FIELD_HEAD, Swarm, SwarmConfig

    swarm = Swarm(SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"g" * 64: 2}))
    first, second = swarm.members

    def frame(trace_id: str, seq: int, body: str) -> str:
        field = [1, trace_id, "g" * 64, seq, "n" * 64, 10**19, 10**19, 10**19, 10**19]
        return "42" + json.dumps(["m" * 46, {"mqprobe": field, "body": body}],  # marker at 52
                                 separators=(",", ":"))

    longest = frame("a" * 32, 5, "x" * 20_000)  # but for its seq (a far one is refused)
    assert longest.index("]") + 19 < FIELD_HEAD  # with a 20-digit seq too
    swarm._on_event(first, longest, 10**19 + 5)
    swarm._on_event(second, frame("a" * 32, 5, "x" * 20_000), 10**19 + 5)  # its copy
    assert swarm.untraced == 0 and len(swarm._decoded) == 1  # one message, read once
    small = frame("b" * 32, 6, "x" * 20_000)
    swarm._on_event(first, small, 10**19 + 5)
    assert len(swarm._decoded) == 2 and swarm.tallies["g" * 64].delivered == 3
    late = '42["message",{"mqprobe":[1,"' + "c" * 32 + '","' + " " * FIELD_HEAD + '"]}]'
    swarm._on_event(first, late, 1)  # a field that has not closed by the head is none
    assert swarm.untraced_reasons == {"no mqprobe list first in the event's object": 1}


NPM_SERVERS = ("socket.io@4", "sio2@npm:socket.io@2")  # socket.io 2 under an alias of its own


@contextlib.contextmanager
def _node_server(script: str, *args: str):
    """An official Node socket.io server (npm, installed once into .venv/node) running
    tests/servers/<script>; yields its URL and emit(group, seq) and get(path)."""
    import shutil
    import urllib.request

    from mqprobe.broker import free_port

    from ..conftest import REPO

    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed to test against socket.io 4 and 2"
    prefix = REPO / ".venv" / "node"
    if not all((prefix / "node_modules" / name).is_dir() for name in ("socket.io", "sio2")):
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(prefix), *NPM_SERVERS], check=True, timeout=300)
    port = free_port()
    proc = subprocess.Popen([node, str(REPO / "tests" / "servers" / script), str(port), *args],
                            env={"NODE_PATH": str(prefix / "node_modules"), "PATH": ""},
                            stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def get(path: str) -> bytes:
        return urllib.request.urlopen(url + path, timeout=5).read()

    try:
        assert "listening" in proc.stdout.readline()
        yield url, lambda group, seq: get(f"/emit?group={group}&seq={seq}"), get
    finally:
        proc.terminate()  # ours, by pid
        proc.wait(10)


@pytest.fixture(scope="module")
def socketio4_server():
    """The official Node socket.io 4 server."""
    with _node_server("socketio4.js") as server:
        yield server


@pytest.fixture(scope="module")
def socketio2_server():
    """The official Node socket.io 2 server (engine.io 3), pinging fast: a client that does
    not ping it is dropped after 2 s instead of 45."""
    with _node_server("socketio2.js", "1000") as server:
        yield server


async def _joined_swarm(url: str) -> Swarm:
    """30 members in groups 1 (20) and 2 (10) on one server, every one joined."""
    swarm = Swarm(SwarmConfig(node_urls=[url], group_sizes={"1": 20, "2": 10},
                              connect_timeout_s=20))
    await swarm.start()
    assert (swarm._joined, swarm.failed) == (30, 0), swarm.first_error
    return swarm


def test_how_far_each_member_got_and_the_reordering_it_saw():
    """What a member misses past its highest seq, or within the deepest reordering the run
    showed below it, may still be on its way; a deeper hole is not (merge_run decides)."""
    import json

    from mqprobe.pieces.swarm import Swarm, SwarmConfig

    swarm = Swarm(SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"1": 2}))
    first, second = swarm.members
    for member in swarm.members:
        member.joined = True

    def frame(seq: int) -> str:
        field = [1, "a" * 32, "1", seq, "n1", 1, 2, 3, 1]
        return "42" + json.dumps(["message", {"mqprobe": field}], separators=(",", ":"))

    for seq in (0, 1, 3, 5, 9, 7):  # 7 came 2 below its highest: a reordering of 2
        swarm._on_event(first, frame(seq), 10)
    for seq in (0, 1, 2):
        swarm._on_event(second, frame(seq), 10)
    tally = swarm.result()["groups"]["1"]
    assert swarm.reorder_max == 2
    # first: top 10, misses 8 (within 2 of it) and 2, 4, 6 (deeper); second: top 3, none
    assert (tally["reached"], tally["gaps_near_top"], tally["live"]) == (13, 1, 2)
    second.down_since = 1  # down at the end: what it missed is lost, not on its way
    assert swarm.result()["groups"]["1"]["live"] == 1


def test_the_swarm_joins_and_times_an_official_socketio4_server(socketio4_server):
    url, emit, _get = socketio4_server

    async def run() -> dict:
        swarm = await _joined_swarm(url)
        for seq in range(5):
            await asyncio.to_thread(emit, "1", seq)
        await asyncio.to_thread(emit, "2", 0)
        await asyncio.sleep(1.0)
        return await swarm.stop()

    result = asyncio.run(run())
    assert result["groups"]["1"]["delivered"] == 100 and result["groups"]["2"]["delivered"] == 10
    assert (result["disconnects"], result["untraced"], result["misrouted"]) == (0, 0, 0)


def test_the_swarm_finds_socketio2_and_pings_it_through_a_run_longer_than_its_timeout(
        socketio2_server):
    """engine.io 3 drops a client that does not ping within pingInterval + pingTimeout
    (here 1 s + 1 s); the run lasts 5 s."""
    url, emit, _get = socketio2_server

    async def run() -> dict:
        swarm = await _joined_swarm(url)
        for seq in range(5):
            await asyncio.to_thread(emit, "1", seq)
            await asyncio.to_thread(emit, "2", seq)
            await asyncio.sleep(1.0)
        return await swarm.stop()

    result = asyncio.run(run())
    assert result["protocols"] == {url: 3}
    assert result["groups"]["1"]["delivered"] == 100 and result["groups"]["2"]["delivered"] == 50
    assert (result["disconnects"], result["untraced"], result["misrouted"]) == (0, 0, 0)


def test_a_server_that_cannot_be_joined_fails_every_member_at_once_with_its_reason(
        socketio2_server, socketio4_server):
    """One sentence per cause, quickly: not each of 300 members waiting out a timeout."""
    cases = [
        (socketio2_server[0], 4, "speaks socket.io 2 (engine.io 3): pass --eio 3"),
        (socketio4_server[0], 3, "refuses engine.io 3 (HTTP 400: Unsupported protocol version)"),
        ("http://127.0.0.1:1", None, "cannot connect to http://127.0.0.1:1: connection refused"),
    ]

    async def run(url: str, eio: int | None) -> tuple[dict, float]:
        swarm = Swarm(SwarmConfig(node_urls=[url], group_sizes={"1": 300}, eio=eio))
        started = time.monotonic()
        await swarm.start()
        return await swarm.stop(), time.monotonic() - started

    for url, eio, reason in cases:
        result, took = asyncio.run(run(url, eio))
        assert (result["failed"], result["joined"]) == (300, 0)
        assert reason in result["first_error"], result["first_error"]
        assert took < 5, took


def test_a_dropped_member_comes_back_and_its_outage_is_on_the_timeline(socketio4_server):
    url, emit, get = socketio4_server

    async def run() -> dict:
        swarm = Swarm(SwarmConfig(node_urls=[url], group_sizes={"1": 10}, connect_timeout_s=20))
        await swarm.start()
        await asyncio.to_thread(emit, "1", 0)
        await asyncio.to_thread(get, "/kick")  # the server closes every connection
        for _ in range(100):
            await asyncio.sleep(0.1)
            if swarm.reconnects == 10:
                break
        assert swarm.progress()["down"] == 0
        await asyncio.to_thread(emit, "1", 1)
        await asyncio.sleep(0.5)
        return await swarm.stop()

    result = asyncio.run(run())
    assert (result["disconnects"], result["reconnects"], result["failed"]) == (10, 10, 0)
    assert result["groups"]["1"]["delivered"] == 20  # before the drop and after the return
    outages = [e for e in result["timeline"]["events"] if e[0] == "client-down"]
    assert len(outages) == 10 and all(0 < end - start < 10e9 for _k, start, end, _d in outages)


def test_the_swarm_command_says_why_no_client_joined():
    result = run_cli("swarm", "--node-urls", "http://127.0.0.1:1", "--group-sizes", "5",
                     timeout=60)
    assert result.returncode == 1
    assert "no client joined its group (cannot connect to http://127.0.0.1:1: connection refused)" \
        in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr
    result = run_cli("swarm", "--eio", "5", timeout=60)
    assert result.returncode != 0 and "--eio must be 3, 4 or auto" in result.stderr


def test_a_command_a_piece_cannot_apply_is_refused_and_its_figures_still_arrive(tmp_path):
    """compare depends on `clock` being applied (or hops print a ± they do not have): a
    piece started from its spec answers every command line, refusing with why what it
    cannot read or apply; a refusal is a RunError naming piece and reason (test_process)."""
    from mqprobe.model import PieceRole
    from mqprobe.pieces.process import Child
    from mqprobe.protocol import PieceSpec, Reset, SetClock, command_line, to_document

    config = SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"1": 1})

    async def run() -> tuple[dict | None, list[str]]:
        swarm = Child("swarm1", PieceSpec(PieceRole.SWARM, to_document(config)), tmp_path,
                      dict(os.environ))
        await swarm.start()
        refusals = []
        try:
            await swarm.wait_for("ready", 30)
            await swarm.command(Reset())
            await swarm.command(SetClock(publisher_ns=0, nodes_ns={"n1": 250_000_000}))
            for bad in ('{"command": "clock", "publisher_ns": "x", "nodes_ns": {}}',
                        '{"command": "clock"', "dance", command_line(SetClock(0, {})) + "x"):
                swarm.latest.pop("refused", None)
                await swarm.send(bad)
                refusals.append((await swarm.wait_for("refused", 10))["message"])
        finally:
            result = await swarm.stop()
        return result, refusals

    result, refusals = asyncio.run(run())
    assert result is not None and result["planned"] == 1  # what it had is not lost
    assert "publisher_ns must be a whole number" in refusals[0]
    assert "not a JSON command" in refusals[1]
    assert "unknown command 'dance'" in refusals[2]
    assert "not a JSON command" in refusals[3]
    assert (tmp_path / "swarm1.spec.json").is_file()  # what it was given, beside its log


def test_the_swarm_applies_a_clock_table_and_refuses_what_it_does_not_know():
    from mqprobe.protocol import CommandRefused, SetClock, Stop

    swarm = Swarm(SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"1": 1}))
    swarm.command(SetClock(publisher_ns=5, nodes_ns={"n1": 7}))
    assert swarm.clock_shift == {"n1": (7, 5)}
    with pytest.raises(CommandRefused, match="knows `reset`, `settle` and `clock`"):
        swarm.command(Stop())
    assert swarm.clock_shift == {"n1": (7, 5)}

"""`mqprobe trace` gives the verdict on a live system: the same engine as compare on what
the servers' embed hands over, and what can be said from outside servers with no mqprobe
code. Pure rules first; then real servers on the session's broker (frozen on purpose, and
continued): the example chat server (embedding) and python-socketio's manager unchanged."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mqprobe.broker import ManagedBroker, free_port
from mqprobe.errors import InputError
from mqprobe.model import Cause, Culprit
from mqprobe.run.live_verdict import ServerIntervals, outside_verdict
from mqprobe.timeline import EventKind, TimedEvent

from ..conftest import REPO

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def _late(*at_ms: float, e2e_ms: float = 200) -> list[tuple[int, int]]:
    return [(T0 + int(t * MS), int(e2e_ms * MS)) for t in at_ms]


def _span(kind: EventKind, start_ms: float, end_ms: float, **detail) -> TimedEvent:
    return TimedEvent(kind, "broker", T0 + int(start_ms * MS), T0 + int(end_ms * MS), detail)


def test_from_outside_a_backlog_while_probes_were_late_is_a_consumer_behind():
    backlog = [_span(EventKind.QUEUE_BACKLOG, 950, 1300, queue="amq.gen-x", ready_max=2)]
    said = outside_verdict(_late(1000, 1100), 78, backlog, [], 50,
                           {"http://a": (2, 40), "http://b": (0, 40)})
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.CONSUMER_SATURATED)
    assert "RabbitMQ held ready messages in its queue while 2 of the 2 late probes" in said.prose
    assert ("late by server (each probe reached every server's queue at once): http://a 2 of "
            "40, http://b 0 of 40") in said.evidence


def test_from_outside_a_broker_stopped_while_probes_were_late_is_the_mq():
    stopped = [_span(EventKind.BROKER_UNAVAILABLE, 900, 3000, unresponsive=True, stopped=True)]
    backlog = [_span(EventKind.QUEUE_BACKLOG, 3000, 3200, queue="q", ready_max=40)]
    said = outside_verdict(_late(1000, 1500, 2000, e2e_ms=1500), 20, backlog, stopped, 50)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_UNAVAILABLE)
    assert said.prose.startswith("RabbitMQ's process was stopped"), said.prose


def test_from_outside_the_backlog_a_frozen_broker_left_is_the_broker_draining():
    """RabbitMQ frozen, then draining what it held: probes late in the drain overlapped the
    servers' queues' backlog, not the freeze, yet the backlog began with it."""
    stopped = [_span(EventKind.BROKER_UNAVAILABLE, 900, 2400, unresponsive=True, stopped=True)]
    drain = [_span(EventKind.QUEUE_BACKLOG, 2450, 3500, queue="q", ready_max=30)]
    said = outside_verdict(_late(1000, 2500, 2600, 2700, 2800, e2e_ms=300), 40, drain,
                           stopped, 50)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_UNAVAILABLE), said


def test_from_outside_what_cannot_be_split_is_said_to_need_the_embed():
    said = outside_verdict(_late(1000), 99, [], [], 50)
    assert (said.culprit, said.cause) == (Culprit.NONE, Cause.SPLIT_UNKNOWN)
    assert "only mqprobe's embed in the server can tell" in said.prose
    within = outside_verdict([], 100, [], [], 50)
    assert within.cause == Cause.WITHIN_BUDGET


@pytest.mark.parametrize(("doc", "says"), [
    ({"node": "x"}, "are not mqprobe's embed's"),  # a foreign server's JSON
    ("<html>", "are not mqprobe's embed's"),
    ({"mqprobe_intervals": 1, "node": "x", "events": [["no-such-kind", 1, 2, {}]]}, "malformed"),
    ({"mqprobe_intervals": 1, "node": "x", "loop_cpu": {"rows": [[1, 0, 0, 0, 0]]}},
     "loop CPU window"),
])
def test_intervals_that_are_not_the_embeds_are_one_sentence(doc, says):
    with pytest.raises(InputError, match=says) as raised:
        ServerIntervals.from_json(doc, "http://10.0.0.7:8080/metrics/intervals")
    assert "http://10.0.0.7:8080/metrics/intervals" in str(raised.value)


def test_a_servers_intervals_are_moved_onto_our_clock():
    doc = {"mqprobe_intervals": 1, "node": "chat-1",
           "events": [["loop-stall", 100, 300, {"held_by": "x.py:1 in f"}]],
           "loop_cpu": {"rows": [[100, 50, 10, 0, 0]]}, "link": [[100, 7, 3]], "queues": ["q"]}
    server = ServerIntervals.from_json(doc).shifted(-40)
    assert (server.events[0].piece, server.events[0].start_ns, server.events[0].end_ns) == (
        "chat-1", 60, 260)
    assert server.loop_cpu == ((60, 50, 10, 0, 0),) and server.link == ((60, 7, 3),)


def test_a_hosts_consumer_reports_its_full_window_and_busy_handler_with_its_intervals():
    """Tracer.consumer: the meters compare's nodes keep, for a host's own consumer; what
    they record is served with the intervals trace judges with."""
    import asyncio

    from mqprobe.embed import Tracer

    tracer = Tracer("chat-9")
    consumer = tracer.consumer("chat.groups.chat-9", prefetch=2)
    consumer.arrived()
    consumer.busy.enter()
    consumer.arrived()  # the window is full: 2 unacked of 2
    asyncio.run(asyncio.sleep(0.01))
    consumer.busy.leave()
    consumer.acked()  # room again
    consumer.acked()
    server = ServerIntervals.from_json(tracer.intervals())
    kinds = {e.kind for e in server.events}
    assert kinds == {EventKind.WINDOW_FULL, EventKind.CONSUMER_BUSY}, server.events
    (full,) = [e for e in server.events if e.kind == EventKind.WINDOW_FULL]
    assert full.piece == "chat-9" and full.detail["prefetch"] == 2
    assert full.end_ns - full.start_ns >= 10 * MS


@pytest.mark.integration  # an aiohttp server of its own, on loopback
def test_the_embed_serves_its_intervals_beside_its_metrics():
    """GET <metrics>/intervals?since=NS: the pauses since then, the loop's CPU windows, the
    link and the queues; a `since` that is not a number is a 400 with one sentence."""
    import asyncio
    import urllib.error
    import urllib.request

    from aiohttp import web

    from mqprobe.embed import Tracer

    async def main() -> tuple[dict, dict, int]:
        tracer = Tracer("chat-9")
        tracer.watch_pauses(stacks=False)
        app = web.Application()
        tracer.mount_metrics(app)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        await asyncio.sleep(0.25)
        before = time.time_ns()
        time.sleep(0.05)  # a stall after `before`
        await asyncio.sleep(0.25)
        base = f"http://127.0.0.1:{port}/metrics/intervals"
        since = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(
            f"{base}?since={before}")))
        everything = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(base)))
        try:
            await asyncio.to_thread(urllib.request.urlopen, f"{base}?since=yesterday")
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        tracer.stop_watching()
        await runner.cleanup()
        return since, everything, status

    since, everything, status = asyncio.run(main())
    server = ServerIntervals.from_json(since)
    assert server.node == "chat-9"
    stalls = [e for e in server.events if e.kind == EventKind.LOOP_STALL]
    assert stalls and all(e.end_ns > since["since_ns"] for e in server.events)
    assert server.loop_cpu and len(everything["loop_cpu"]["rows"]) >= len(server.loop_cpu)
    assert status == 400


# -- real servers on the session's broker -------------------------------------------------------


@pytest.fixture
def home(broker_home: Path) -> Path:
    """The session's broker's home: a compare or trace there uses that broker, as a user's
    uses theirs (the broker faults act on it; what they do is undone in their finally)."""
    return broker_home


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    return env | {"MQPROBE_HOME": str(home)}


def _amqp_url(home: Path) -> str:
    return ManagedBroker(home / "broker").running_state().amqp_url


@contextlib.contextmanager
def _servers(home: Path, commands: list[list[str]]):
    """Servers in processes of their own, each reporting its port as it is ready; ended by
    pid."""
    procs, ports = [], []
    try:
        for command in commands:
            # stderr to a file: a pipe nobody reads fills (64 KB of a client library's
            # warnings as RabbitMQ freezes) and blocks the server in its next write
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, env=_env(home))
            procs.append(proc)
            ports.append(json.loads(proc.stdout.readline())["port"])
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _chat(home: Path, node: str, stall_ms: int = 0) -> list[str]:
    return [sys.executable, str(REPO / "examples" / "chat_server.py"), "--port", "0", "--node",
            node, "--amqp-url", _amqp_url(home), "--stall", str(stall_ms)]


def _manager(home: Path, stall_ms: int = 0) -> list[str]:
    return [sys.executable, str(REPO / "tests" / "servers" / "socketio_manager.py"),
            str(free_port()), _amqp_url(home), str(stall_ms)]


def _trace(home: Path, tmp_path: Path, *flags: str,
           freeze: _Freeze | None = None) -> tuple[str, dict]:
    """A 4 s trace of group 7; `freeze` starts at the first probe trace printed (on a slow
    host trace's start-up alone can outlast a freeze timed from its launch)."""
    errors = tmp_path / "trace.stderr"
    with errors.open("w") as stderr_file:  # a file: a pipe read only at the end can fill
        trace = subprocess.Popen([sys.executable, "-m", "mqprobe", "trace", "--group", "7",
                                  "--publish", "10", "--duration", "4", *flags,
                                  "--json", str(tmp_path / "trace.json")],
                                 stdout=subprocess.PIPE, stderr=stderr_file, text=True,
                                 env=_env(home), cwd=REPO)
    # a 4 s trace that has not ended in 120 s fails the test, never hangs the suite
    deadline = threading.Timer(120, trace.kill)
    deadline.start()
    try:
        lines = []
        for line in trace.stdout:
            lines.append(line)
            if freeze and " seq " in line:
                freeze.start()
        trace.wait(120)
    finally:
        deadline.cancel()
        if trace.poll() is None:
            trace.kill()
        if freeze:
            freeze.join()
    stderr = errors.read_text()
    assert trace.returncode != -signal.SIGKILL, "trace did not end in 120 s: " + stderr[-2000:]
    assert "Traceback" not in stderr, stderr
    assert (tmp_path / "trace.json").exists(), stderr + "".join(lines)
    return "".join(lines), json.loads((tmp_path / "trace.json").read_text())


class _Freeze:
    """The broker stopped (SIGSTOP) `after_s` after `start`, for `for_s`, and always
    continued."""

    def __init__(self, home: Path, after_s: float = 0.5, for_s: float = 1.5) -> None:
        self.pid = ManagedBroker(home / "broker").running_state().pid
        self.after_s, self.for_s = after_s, for_s
        self.thread = threading.Thread(target=self._freeze)

    def _freeze(self) -> None:
        time.sleep(self.after_s)
        os.killpg(self.pid, signal.SIGSTOP)
        try:
            time.sleep(self.for_s)
        finally:
            os.killpg(self.pid, signal.SIGCONT)

    def start(self) -> None:
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    def join(self) -> None:
        if self.thread.ident is not None:
            self.thread.join()


@pytest.mark.integration
def test_a_stall_in_an_embedding_servers_handler_is_the_server_and_its_code_named(home, tmp_path):
    """500 ms a second in chat-1's handler: more than a host crowded by the suite's other
    runs does to RabbitMQ (beside them a 200 ms stall once read mq 42% to server 42%)."""
    with _servers(home, [_chat(home, "chat-1", stall_ms=500), _chat(home, "chat-2")]) as urls:
        out, summary = _trace(home, tmp_path, "--socketio-url", ",".join(urls), "--exchange",
                              "chat.groups", "--metrics-url",
                              ",".join(f"{url}/metrics" for url in urls))
    verdict = summary["verdict"]
    assert (verdict["culprit"], Cause.of(verdict["cause"])) == ("server", Cause.SERVER_STALL), out
    assert "chat-1's loop was held" in verdict["cause"]
    assert "examples/chat_server.py" in verdict["cause"] and "in handle" in verdict["cause"]
    assert "off the CPU" in verdict["cause"]
    assert "verdict: server - server-stall" in " ".join(out.split())


@pytest.mark.integration
def test_rabbitmq_frozen_while_trace_watches_an_embedding_cluster_is_the_mq(home, tmp_path):
    with _servers(home, [_chat(home, "chat-1"), _chat(home, "chat-2")]) as urls:
        _out, summary = _trace(home, tmp_path, "--socketio-url", ",".join(urls), "--exchange",
                               "chat.groups", "--metrics-url",
                               ",".join(f"{url}/metrics" for url in urls), freeze=_Freeze(home))
    verdict = summary["verdict"]
    assert (verdict["culprit"], Cause.of(verdict["cause"])) == ("mq", Cause.BROKER_UNAVAILABLE)
    assert "its process was stopped" in verdict["cause"], verdict


@pytest.mark.integration
def test_a_stalled_server_with_no_mqprobe_code_is_found_from_outside(home, tmp_path):
    """python-socketio's manager, unchanged, one node blocked 300 ms a second: RabbitMQ held
    ready messages in its queue (found by the management API: bound to the manager's
    exchange) while the probes through it were late, and those through the other node
    were not."""
    with _servers(home, [_manager(home, stall_ms=300), _manager(home)]) as urls:
        _out, summary = _trace(home, tmp_path, "--socketio-url", ",".join(urls),
                               "--via", "socketio-manager")
    verdict = summary["verdict"]
    assert (verdict["culprit"], Cause.of(verdict["cause"])) == ("server",
                                                                Cause.CONSUMER_SATURATED), verdict
    (line,) = [e for e in verdict["evidence"] if e.startswith("late by server")]
    late = {url: int(n) for url, n in re.findall(r"(http://[\d.:]+) (\d+) of", line)}
    assert late[urls[0]] > 2 * late[urls[1]], line  # the stalled one's probes, not the other's


@pytest.mark.integration
def test_rabbitmq_frozen_under_a_cluster_with_no_mqprobe_code_is_the_mq(home, tmp_path):
    with _servers(home, [_manager(home), _manager(home)]) as urls:
        _out, summary = _trace(home, tmp_path, "--socketio-url", ",".join(urls),
                               "--via", "socketio-manager", freeze=_Freeze(home))
    verdict = summary["verdict"]
    assert (verdict["culprit"], Cause.of(verdict["cause"])) == ("mq", Cause.BROKER_UNAVAILABLE)


# -- watching until it happens -----------------------------------------------------------------
def test_an_episode_begins_with_the_first_late_delivery_and_ends_on_a_recovery():
    from mqprobe.run.live_verdict import RECOVER_NS, EpisodeWatch

    watch = EpisodeWatch("7", 50 * MS)
    assert watch.see(T0, T0 + 2 * MS, "n1") is None and watch.open is None  # on time
    began = watch.see(T0 + 1000 * MS, T0 + 1300 * MS, "n2")
    assert began is not None and began.start_ns == T0 + 1000 * MS
    assert watch.see(T0 + 1100 * MS, T0 + 1400 * MS, "n2") is None  # the same episode
    last_late = T0 + 1400 * MS
    # silence is no recovery: nothing arrived, the group may be down
    assert watch.ended(last_late + 2 * RECOVER_NS) is None
    for i in range(3):
        watch.see(last_late + (i + 1) * 1000 * MS, last_late + (i + 1) * 1000 * MS + 2 * MS, "n1")
    assert watch.ended(last_late + RECOVER_NS - 1) is None  # not for long enough yet
    episode = watch.ended(last_late + RECOVER_NS)
    assert episode is not None and watch.open is None
    assert (episode.late, episode.seen, episode.worst_ns, episode.servers) == (
        2, 5, 300 * MS, {"n2"})
    assert episode.end_ns == last_late


@pytest.mark.parametrize(("text", "groups"), [("7", ["7"]), ("16,17,18", ["16", "17", "18"]),
                                              ("16-18", ["16", "17", "18"]), ("a, b,a", ["a", "b"])])
def test_groups_to_follow_are_a_list_or_a_range(text, groups):
    from mqprobe.run.trace import parse_groups

    assert parse_groups(text) == groups


def test_several_groups_compared_name_the_late_ones_their_cause_and_their_servers():
    from mqprobe.run.trace import compare_groups

    stalled = {"culprit": "server", "cause": "server-stall: n2's loop was held"}
    summaries = {"16": {"verdict": {"culprit": "none", "cause": "within-budget"}},
                 "17": {"verdict": stalled, "nodes": {"n2": {"e2e": {"p99_ms": 300}},
                                                      "n1": {"e2e": {"p99_ms": 3}}}},
                 "18": {"verdict": stalled, "nodes": {"n2": {"e2e": {"p99_ms": 280}}}}}
    assert compare_groups(summaries, 50) == (
        "17, 18 late (server: server-stall) through n2; 16 on time")


def test_an_episode_log_reads_back_and_a_foreign_one_is_one_sentence():
    from mqprobe.errors import ResultFormatError
    from mqprobe.output.trace_report import episodes_of

    line = {"kind": "episode", "group": "7", "start_ns": T0, "end_ns": T0 + 5, "late": 2,
            "seen": 9, "servers": ["n1"], "worst_e2e_ms": 300.0,
            "verdict": {"culprit": "mq", "cause": "broker-side: x", "evidence": []}}
    assert episodes_of(json.dumps(line, separators=(",", ":"))) == [line]
    assert episodes_of('{"mqprobe_version": "0.1.0"}') is None  # a result: not a log
    with pytest.raises(ResultFormatError, match="line 2 of the episode log"):
        episodes_of(json.dumps(line, separators=(",", ":")) + '\n{"kind":"episode"}')


@pytest.mark.integration
def test_a_watch_leaves_an_episode_that_went_away_by_itself(home, tmp_path):
    """trace --duration 0: RabbitMQ frozen 2 s and back, then the watch is stopped (SIGINT,
    as Ctrl-C): one line when the group went late, one when it recovered with the
    episode's verdict, the episode in the log, and `mqprobe report LOG` renders it."""
    log = tmp_path / "episodes.jsonl"
    with _servers(home, [_chat(home, "chat-1"), _chat(home, "chat-2")]) as urls:
        watch = subprocess.Popen(
            [sys.executable, "-m", "mqprobe", "trace", "--group", "7", "--duration", "0",
             "--socketio-url", ",".join(urls), "--exchange", "chat.groups", "--metrics-url",
             ",".join(f"{url}/metrics" for url in urls), "--log", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home), cwd=REPO)
        lines: list[str] = []
        recovered = threading.Event()

        def read() -> None:
            for line in watch.stdout:
                lines.append(line)
                if "episode: recovered at" in line:
                    recovered.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # from when the watch says it follows the group (a fresh clone's first imports
            # compile for seconds: a freeze timed from the launch can end before it probes)
            deadline = time.monotonic() + 60
            while not lines and time.monotonic() < deadline and watch.poll() is None:
                time.sleep(0.05)
            freeze = _Freeze(home, after_s=2.0, for_s=1.5)
            freeze.start()
            freeze.join()
            # the recovery: 5 s within budget after the last late delivery, seen on the next
            # probe; a busy host (the suite runs three at a time) may take a few seconds more
            recovered.wait(timeout=20)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=60)
            reader.join(timeout=10)
            err = watch.stderr.read()
        out = "".join(lines)
    assert watch.returncode == 0, err
    out = " ".join(out.split())
    assert out.count(" group 7 late: ") == 1, out
    assert " group 7 episode: recovered at " in out, out
    assert "verdict: mq - broker-unavailable" in out, out
    (episode,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert episode["verdict"]["culprit"] == "mq" and not episode["ongoing"]
    assert episode["worst_e2e_ms"] > 400  # a probe a second: one of them waited 0.5-1.5 s
    report = subprocess.run([sys.executable, "-m", "mqprobe", "report", str(log)],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert report.returncode == 0, report.stderr
    assert "1 episode(s) over budget, group(s) 7" in report.stdout

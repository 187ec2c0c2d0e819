"""Pieces on "another host": an agent with its own (skewed) clock runs a node for compare.

One machine stands in for two hosts: the agent's process pretends its clock is 400 ms
ahead (MQPROBE_CLOCK_SKEW_MS), so its clock id differs and every stamp it makes is off.
Its node's records travel back over the results exchange, the offset is measured over the
broker, and the hops must come out corrected with an honest error bar.
"""

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from mqprobe.broker import BrokerState
from mqprobe.broker.topology import resolve
from mqprobe.clocks import clock_id
from mqprobe.model import PieceRole
from mqprobe.pieces.agent import AgentInfo, Hub, parse_placement
from mqprobe.pieces.node import NodeConfig
from mqprobe.pieces.process import RunError
from mqprobe.pieces.swarm import SwarmConfig
from mqprobe.protocol import PieceSpec
from mqprobe.run.placement import Placement
from mqprobe.stamps import check_id

from ..conftest import REPO, run_cli

SKEW_MS = 400.0


@pytest.fixture(scope="module")
def agent(broker: BrokerState):
    env = dict(os.environ, MQPROBE_CLOCK_SKEW_MS=str(SKEW_MS))
    proc = subprocess.Popen([sys.executable, "-m", "mqprobe", "agent", "--name", "skewed",
                             "--amqp-url", broker.amqp_url], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "agent skewed ready" in line, line
    assert broker.password not in line
    yield proc
    proc.terminate()  # our own child, by its pid
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def placed_run(broker: BrokerState, agent, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("placed")
    result = run_cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                     "--nodes", "2", "--place", "node=skewed,local", "--group-sizes", "5,7",
                     "--rate", "20", "--duration", "1.5", "--samples", "100000",
                     "--json", str(out / "r.json"), "--run-dir", str(out / "logs"),
                     amqp_url=broker.amqp_url)
    assert result.returncode == 0, result.stderr + result.stdout
    return {"run": json.loads((out / "r.json").read_text())["runs"][0], "stdout": result.stdout}


def test_records_of_the_remote_node_come_back_over_the_broker(placed_run):
    run = placed_run["run"]
    assert run["lost"] == 0 and run["duplicated"] == 0
    assert run["delivered"] == run["expected_deliveries"] == 30 * 12
    # node n1 ran under the agent: its result (handled messages) reached compare
    assert {n["node"] for n in run["nodes"]} == {"n1", "n2"}


def test_the_offset_is_measured_within_its_error_bar(placed_run):
    clocks = placed_run["run"]["clocks"]["pieces"]
    remote = clocks["n1"]
    assert remote["exchanges"] > 0
    assert 0 < remote["uncertainty_ms"] < 20
    assert abs(remote["offset_ms"] - SKEW_MS) <= remote["uncertainty_ms"] + 0.2
    assert clocks["n2"] == clocks["publisher"] == clocks["swarm1"] == {
        "offset_ms": 0.0, "uncertainty_ms": 0.0, "exchanges": 0, "drift_ms": 0.0}
    assert remote["exchanges"] == 16  # measured before and after the run
    assert 0 <= remote["drift_ms"] < 1  # one machine's clock does not drift from itself


def test_hops_are_corrected_and_carry_the_error_bar(placed_run):
    run = placed_run["run"]
    bar = run["clocks"]["hop_uncertainty_ms"]
    assert bar["mq"] == bar["delivery"] == run["clocks"]["pieces"]["n1"]["uncertainty_ms"]
    assert bar["server"] == bar["e2e"] == 0.0
    tolerance_ns = bar["mq"] * 1e6 + 1e6
    for _group, _seq, _plan, t_pub, t_deq, t_emit, t_recv in run["samples"]:
        # uncorrected, n1's half of these would be off by 400 ms either way
        assert -tolerance_ns <= t_deq - t_pub < 150e6
        assert -tolerance_ns <= t_recv - t_emit < 150e6
    # the printed offset is the measured one (about +400 ms: +399.99 happens too)
    offset = run["clocks"]["pieces"]["n1"]["offset_ms"]
    assert "±" in placed_run["stdout"] and f"n1: {offset:+.3f} ms" in placed_run["stdout"]
    assert any("clocks differ" in line for line in run["verdict"]["evidence"])


def _ours_on(managed_broker, vhost: str) -> set[str]:
    """Every exchange of mqprobe's and every queue on a virtual host."""
    from mqprobe.broker import management_get

    api = managed_broker.running_state().management_url
    found = {f"exchange {e['name']}" for e in management_get(
        api, f"/api/exchanges/{vhost}?columns=name") if e["name"].startswith("mqprobe.")}
    return found | {f"queue {q['name']}" for q in management_get(
        api, f"/api/queues/{vhost}?columns=name")}


@contextlib.contextmanager
def _agent_elsewhere(amqp_url: str):
    """An agent whose host name is another machine's (a UTS namespace of its own), or a skip."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("another host name needs root and util-linux's unshare")
    proc = subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", "hostname elsewhere && exec \"$0\" \"$@\"",
         sys.executable, "-m", "mqprobe", "agent", "--name", "far", "--amqp-url", amqp_url],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        if "agent far ready" not in line:
            pytest.skip(f"no agent under another host name here: {line.strip()}")
        yield
    finally:
        proc.terminate()  # ours, by its pid (sh exec'd it)
        proc.wait(timeout=30)


REFUSALS = {  # what is refused after compare connected: its flags, and what it says
    "unknown agent": (["--place", "swarm=nobody"], "agent 'nobody' did not answer"),
    "a swarm that cannot reach its nodes": (["--place", "swarm=far"],
                                            "the swarm on far cannot reach nodes on local"),
    "the broker's queue limit": ([], "queue limit in vhost"),
    "a user the broker does not let declare them": ([], "ACCESS_REFUSED - access to queue"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_every_refusal_after_connecting_is_one_sentence_and_leaves_the_broker_as_it_was(
        managed_broker, vhost_url, tmp_path, refusal):
    """A virtual host of the test's own is listed before and after: nothing of the run's
    stays (`mqprobe.results` once stayed after an unknown agent: the broker's cancel of the
    coordinator's consumer made aio-pika declare its queue again). The broker refuses a
    run's queues where an operator limited the virtual host's queues, or the user's rights
    to configure (here: the control exchanges and server-named queues only)."""
    flags, says = REFUSALS[refusal]
    vhost = vhost_url.rsplit("/", 1)[1]
    if refusal == "the broker's queue limit":
        managed_broker.rabbitmqctl("set_vhost_limits", "-p", vhost, '{"max-queues": 1}')
    if refusal == "a user the broker does not let declare them":
        managed_broker.rabbitmqctl("set_permissions", "-p", vhost,
                                   managed_broker.running_state().user,
                                   r"^(mqprobe\.(control|results)|amq\.gen.*)$", ".*", ".*")
    with contextlib.ExitStack() as stack:
        if refusal == "a swarm that cannot reach its nodes":
            stack.enter_context(_agent_elsewhere(vhost_url))
        before = _ours_on(managed_broker, vhost)
        result = run_cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                         "--duration", "1", *flags, "--run-dir", str(tmp_path),
                         amqp_url=vhost_url, timeout=120)
        assert result.returncode != 0
        assert says in result.stderr + result.stdout, result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        assert _ours_on(managed_broker, vhost) == before


@pytest.mark.parametrize("bad", ["nodes=hostb", "node=", "swarm"])
def test_placement_is_checked(bad):
    with pytest.raises(ValueError):
        parse_placement([bad])


def test_a_swarm_on_another_machine_is_not_sent_to_a_loopback_node():
    hub = Hub("amqp://unused/")
    here = clock_id().split("~")[0]
    hub.agents = {"far": AgentInfo("far", "elsewhere:1234abcd", "10.0.0.12"),
                  "near": AgentInfo("near", here + "~skew5", "127.0.0.1")}
    with pytest.raises(RunError, match="--listen-host on this command"):
        Placement({"swarm": ["far"]}, hub).check_reachable(nodes=2, swarms=1)
    with pytest.raises(RunError, match="`mqprobe agent --listen-host` on near"):
        Placement({"node": ["near"], "swarm": ["far"]}, hub).check_reachable(1, 1)
    Placement({"node": ["far"]}, hub).check_reachable(1, 1)  # reachable: 10.0.0.12
    Placement({"node": ["near"]}, hub).check_reachable(1, 1)  # one machine: loopback is fine
    Placement({"swarm": ["far"]}, hub, "10.0.0.11").check_reachable(1, 1)


def test_remote_piece_names_travel_as_ids_even_for_sweep_labels(tmp_path):
    hub = Hub("amqp://unused/")
    hub.agents = {"far": AgentInfo("far", "elsewhere:1", "10.0.0.12")}
    piece = Placement({"swarm": ["far"]}, hub).make(
        PieceRole.SWARM, 0, "swarm1", SwarmConfig(["http://10.0.0.12:5000"], {"1": 3}), tmp_path, {},
        "single-topic_groups=8")
    assert check_id("piece", piece.name) == "single-topic_groups-8.swarm1"
    assert piece.spec.config["group_sizes"] == {"1": 3}  # the whole config, as one document


def test_a_node_placed_on_an_agent_listens_where_that_agent_is_reached(tmp_path):
    hub = Hub("amqp://unused/")
    hub.agents = {"far": AgentInfo("far", "elsewhere:1", "10.0.0.12")}
    config = NodeConfig("n1", "amqp://secret@x/", resolve("per-group"), "per-group", ["1"])
    piece = Placement({"node": ["far"]}, hub).make(PieceRole.NODE, 0, "node1", config, tmp_path, {},
                                                   "run")
    assert piece.spec.config["host"] == "10.0.0.12"
    assert "amqp_url" not in piece.spec.config and "secret" not in json.dumps(piece.spec.to_json())
    assert piece.spec.config["topology"]["table"]["name"] == "per-group"  # inline, no file


def test_a_second_agent_of_the_same_name_is_refused(broker: BrokerState, agent):
    result = run_cli("agent", "--name", "skewed", amqp_url=broker.amqp_url, timeout=60)
    assert result.returncode == 1
    assert "an agent named 'skewed' already runs on this broker" in result.stderr
    assert "Traceback" not in result.stderr


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_an_agent_stops_the_pieces_of_a_coordinator_that_went_away(broker, tmp_path):
    agent = subprocess.Popen([sys.executable, "-m", "mqprobe", "agent", "--name", "orphans",
                              "--amqp-url", broker.amqp_url], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    compare = None
    try:
        assert "agent orphans ready" in agent.stderr.readline()
        compare = subprocess.Popen(
            [sys.executable, "-m", "mqprobe", "compare", "--topologies", "single-topic",
             "--layouts", "per-node", "--nodes", "1", "--place", "node=orphans", "--groups",
             "1", "--group-size", "3", "--duration", "60", "--run-dir", str(tmp_path),
             "--amqp-url", broker.amqp_url], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _children_of(agent.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _children_of(agent.pid), "the agent never started the node"
        compare.kill()  # ours, by pid: the coordinator vanishes without a word
        compare.wait(10)
        deadline = time.monotonic() + 30
        while _children_of(agent.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _children_of(agent.pid), "the orphaned node still runs"
        assert agent.poll() is None  # the agent itself goes on serving
    finally:
        for proc in (compare, agent):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def test_the_last_agent_or_coordinator_to_stop_leaves_no_exchange_behind(vhost_url, tmp_path):
    import asyncio

    from mqprobe.pieces.agent import CONTROL_EXCHANGE, RESULTS_EXCHANGE, Agent

    from ..broker.test_broker import _exists

    def ours_left() -> list[str]:
        return [name for name in (CONTROL_EXCHANGE, RESULTS_EXCHANGE)
                if _exists(vhost_url, "exchange", name)]

    async def scenario() -> list[list[str]]:
        ready = asyncio.Event()
        agent = asyncio.get_running_loop().create_task(
            Agent("leaver", vhost_url, work_dir=tmp_path).run(lambda _agent: ready.set()))
        await asyncio.wait_for(ready.wait(), 30)
        hub = Hub(vhost_url)
        await hub.open()
        await hub.hello("leaver")
        seen = [await asyncio.to_thread(ours_left)]  # both in use
        await hub.close()
        seen.append(await asyncio.to_thread(ours_left))  # the agent still holds both
        agent.cancel()  # as its Ctrl-C does: it stops, the last one out
        with pytest.raises(asyncio.CancelledError):
            await agent
        seen.append(await asyncio.to_thread(ours_left))
        return seen

    both = [CONTROL_EXCHANGE, RESULTS_EXCHANGE]
    assert asyncio.run(scenario()) == [both, both, []]


@pytest.mark.parametrize("spec, says", [
    ({"role": "node", "config": {"node_id": "n1", "shell": "rm -rf /"}}, "unknown field 'shell'"),
    ({"role": "broker", "config": {}}, "refused it: a piece's role is one of"),
])
def test_an_agent_runs_only_a_spec_every_field_of_which_checks_out(broker, agent, spec, says):
    """Whoever can publish on the broker can ask an agent for a piece: a role it does not run
    is refused by the agent, a config with a field no piece has by the piece, each in one
    sentence that comes back as the piece's error."""
    async def run() -> str:
        hub = Hub(broker.amqp_url)
        await hub.open()
        try:
            await hub.hello("skewed")
            piece = hub.piece("skewed", "hostile", PieceSpec(PieceRole.NODE, {}))
            await hub.command("skewed", "spawn", piece=piece.name, spec=spec)  # as sent
            piece.started = True
            return (await piece.wait_for("error", 30))["message"]
        finally:
            await hub.close()

    assert says in asyncio.run(run())


def test_an_agent_that_cannot_log_in_leaves_no_directory(tmp_path):
    """Its work directory is made before it connects: each failed start left one behind."""
    from mqprobe.broker import free_port
    from mqprobe.pieces.agent import Agent

    agent = Agent("lonely", f"amqp://u:p@127.0.0.1:{free_port()}/")
    assert agent.work_dir.is_dir()
    with pytest.raises(Exception):  # noqa: B017 - whichever aio-pika raises: not ours to name
        asyncio.run(agent.run())
    assert not agent.work_dir.exists()

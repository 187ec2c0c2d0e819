"""Faults of the whole run on real processes: the verdict names them, the run keeps what it
measured, and compare exits non-zero. Each kills only a process this test started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqprobe.broker import BrokerState, ManagedBroker, management_get
from mqprobe.model import Cause

from .conftest import REPO

pytestmark = pytest.mark.integration  # every test here runs a broker of its own

ARGS = ["compare", "--topologies", "single-topic", "--layouts", "per-node", "--duration", "8"]


def _start_compare(tmp_path: Path, amqp_url: str, prometheus_url: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_AMQP_URL"] = amqp_url
    if prometheus_url:
        env["MQPROBE_PROMETHEUS_URL"] = prometheus_url
    return subprocess.Popen([sys.executable, "-m", "mqprobe", *ARGS, "--json",
                             str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)


def _wait_until_publishing(tmp_path: Path, compare: subprocess.Popen, broker: BrokerState | Path,
                           logs: str = "logs", at_least: int = 100) -> None:
    """Until the run measures: its publisher started (its log appears), then the broker
    delivered `at_least` of its messages (a second's worth of the default workload; the
    management API's count, sampled every second). A fixed wait was too short on a
    crowded host: nothing published yet."""
    deadline = time.monotonic() + 120

    def waiting(what: str) -> None:
        assert compare.poll() is None, compare.communicate()
        assert time.monotonic() < deadline, f"the run never {what}"
        time.sleep(0.2)

    while not list((tmp_path / logs).glob("*/publisher.log")):
        waiting("started publishing")
    state = broker if isinstance(broker, BrokerState) else ManagedBroker(broker).load_state()
    before = _delivered(state)
    while _delivered(state) < before + at_least:
        waiting("delivered")


def _delivered(broker: BrokerState) -> int:
    """Messages the broker delivered to consumers so far."""
    try:
        stats = management_get(broker.management_url, "/api/overview", timeout=2)["message_stats"]
    except (OSError, ValueError, KeyError):
        return 0
    return int(stats.get("deliver_get", 0))


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of this process's direct children."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _finish(compare: subprocess.Popen, tmp_path: Path) -> tuple[int, str, dict]:
    stdout, stderr = compare.communicate(timeout=180)
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    return compare.returncode, stdout + stderr, run


def test_a_broker_killed_mid_run_is_the_mq_and_fails_the_command(tmp_path):
    own = ManagedBroker(tmp_path / "broker")  # not the session's: this one dies
    state = own.up()
    try:
        compare = _start_compare(tmp_path, state.amqp_url)
        _wait_until_publishing(tmp_path, compare, state)
        os.killpg(state.pid, signal.SIGKILL)
        code, output, run = _finish(compare, tmp_path)
    finally:
        own.down()
    assert code == 1, output
    assert "Traceback" not in output and "error when creating transport" not in output
    assert run["lost"] > 0 and run["delivered"] > 0  # what was measured before is kept
    assert run["verdict"]["culprit"] == "mq", run["verdict"]
    assert run["verdict"]["cause"].startswith("broker-unavailable: RabbitMQ could not be "
                                              "reached from "), run["verdict"]
    down = [e for e in run["timeline"]["events"] if e["kind"] == "broker-unavailable"]
    assert down and down[0]["start_ms"] > 0


def test_a_node_killed_mid_run_is_named_not_blamed_on_the_swarm(broker, tmp_path):
    compare = _start_compare(tmp_path, broker.amqp_url)
    _wait_until_publishing(tmp_path, compare, broker)
    nodes = [pid for pid, cmd in _children(compare.pid).items() if "/node1.spec.json " in cmd]
    assert len(nodes) == 1, _children(compare.pid)
    os.kill(nodes[0], signal.SIGKILL)
    code, output, run = _finish(compare, tmp_path)
    assert code == 1, output
    assert "Traceback" not in output
    assert (run["verdict"]["culprit"], Cause.of(run["verdict"]["cause"])) == (
        "server", "node-died"), run["verdict"]
    assert "node1" in run["verdict"]["cause"] and "into the run" in run["verdict"]["cause"]
    assert run["error"] and run["published"] > 0


def _when_a_file_appears(broker: ManagedBroker, go: Path, erlang: str):
    """A fault the broker does to itself (`erlang`, evaluated on its node) when `go`
    appears; returns what makes it appear and waits until the fault is over. On one core
    rabbitmqctl took 7-12 s to boot, so a fault asked for once the run published came after
    the run had measured, and nothing was on its timeline to name: the CLI boots here,
    before the run starts, and the broker says (a file of its own) when it waits."""
    armed = go.with_name(go.name + ".armed")
    waiting = broker.rabbitmqctl_started(
        "eval", f'ok = file:write_file("{armed}", <<>>), Go = "{go}", W = fun Wait() -> '
        'case filelib:is_regular(Go) of true -> ok; false -> timer:sleep(20), Wait() end '
        f'end, W(), {erlang}')
    deadline = time.monotonic() + 120  # until the broker waits for it: the CLI has booted
    while not armed.exists():
        assert waiting.poll() is None, waiting.communicate()
        assert time.monotonic() < deadline, "rabbitmqctl eval never started"
        time.sleep(0.1)

    def now() -> None:
        go.touch()
        out, errors = waiting.communicate(timeout=120)
        assert waiting.returncode == 0 and "Error" not in out, (out, errors)
    return now


@pytest.mark.measuring  # the block's share of the tail
def test_a_broker_that_blocks_the_publisher_is_named_with_its_share(managed_broker, tmp_path):
    # a memory alarm: RabbitMQ blocks publishing connections (connection.blocked) until it
    # clears; the messages published meanwhile wait for the block to lift
    state = managed_broker.running_state()
    alarm = _when_a_file_appears(managed_broker, tmp_path / "alarm-now", (
        "vm_memory_monitor:set_vm_memory_high_watermark(0.0001), timer:sleep(3500), "
        "vm_memory_monitor:set_vm_memory_high_watermark(0.4)."))
    compare = _start_compare(tmp_path, state.amqp_url, state.prometheus_url)
    _wait_until_publishing(tmp_path, compare, state)
    alarm()
    code, output, run = _finish(compare, tmp_path)
    assert code == 0, output
    blocked = [e for e in run["timeline"]["events"] if e["kind"] == "publisher-blocked"]
    assert blocked and 1500 < blocked[0]["end_ms"] - blocked[0]["start_ms"] < 10_000, blocked
    assert (run["verdict"]["culprit"], Cause.of(run["verdict"]["cause"])) == (
        "mq", "broker-blocked"), run["verdict"]
    assert run["verdict"]["shares"][0]["share"] > 0.5
    # the alarm as RabbitMQ's Prometheus endpoint reported it (the management API was not
    # given here, and its default port is not this broker's)
    broker = run["evidence"]["broker"]
    assert "prometheus" in broker["sources"] and "management" not in broker["sources"], broker
    assert "memory alarm" in broker["alarms"], broker
    alarms = [e for e in run["timeline"]["events"] if e["kind"] == "broker-alarm"]
    assert alarms and alarms[0]["alarms"] == ["memory alarm"], alarms


def _compare_with_own_home(tmp_path: Path) -> subprocess.Popen:
    """compare on the managed broker of a home of its own: it starts it, it must stop it."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(tmp_path / "home")
    return subprocess.Popen([sys.executable, "-m", "mqprobe", *ARGS, "--json",
                             str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)


def _no_broker_left(tmp_path: Path) -> None:
    from mqprobe.broker import pid_alive

    state_file = tmp_path / "home" / "broker" / "state.json"
    if state_file.exists():
        pid = json.loads(state_file.read_text())["pid"]
        assert not pid_alive(pid), "the managed broker was left running"
    # nor its Erlang port mapper, which detaches from it (found by the home in its env)
    mark = f"MQPROBE_HOME={tmp_path / 'home'}".encode()
    deadline = time.monotonic() + 5
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            try:
                if ((entry / "comm").read_text().strip() == "epmd"
                        and mark in (entry / "environ").read_bytes().split(b"\0")
                        and pid_alive(int(entry.name))):
                    left.append(int(entry.name))
            except (OSError, ValueError):
                continue
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, "the broker's epmd was left running"


def _wait_until_the_nodes_start(tmp_path: Path, compare: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not list((tmp_path / "logs").glob("*/node*.log")):
        assert compare.poll() is None, compare.communicate()
        assert time.monotonic() < deadline, "the run never started its nodes"
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code", "again", "when"), [
    (signal.SIGTERM, 143, (), "mid-run"),  # one signal: the whole orderly stop
    (signal.SIGINT, 130, (), "start-up"),  # while the pieces start and clients connect
    # impatient: Ctrl-C, then again while the pieces stop, and while the broker stops
    (signal.SIGINT, 130, (0.2, 0.3, 0.5, 1.0, 1.0, 1.0), "mid-run")])
def test_a_signal_saves_what_was_measured_and_leaves_nothing(tmp_path, signum, code, again,
                                                             when):
    compare = _compare_with_own_home(tmp_path)
    if when == "start-up":
        _wait_until_the_nodes_start(tmp_path, compare)
    else:
        _wait_until_publishing(tmp_path, compare, tmp_path / "home" / "broker")
    pieces = _children(compare.pid)
    compare.send_signal(signum)
    for pause in again:
        time.sleep(pause)
        if compare.poll() is None:
            compare.send_signal(signum)
    stdout, stderr = compare.communicate(timeout=120)
    assert compare.returncode == code, stdout + stderr
    assert "Traceback" not in stderr and "saved in" in stderr
    result = json.loads((tmp_path / "r.json").read_text())
    (run,) = result["runs"]
    assert result["interrupted"] and (run["delivered"] > 0) == (when == "mid-run")
    assert run["verdict"]["cause"].startswith("interrupted: stopped by the user")
    assert not run["declared"]["left"]
    assert not [pid for pid in pieces if Path(f"/proc/{pid}").exists()], "a piece was left"
    _no_broker_left(tmp_path)


def test_sigterm_while_the_broker_starts_leaves_no_broker(tmp_path):
    compare = _compare_with_own_home(tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "home" / "broker" / "state.json").exists():
        assert time.monotonic() < deadline and compare.poll() is None
        time.sleep(0.05)
    compare.send_signal(signal.SIGTERM)
    _stdout, stderr = compare.communicate(timeout=120)
    assert compare.returncode == 143, stderr
    assert "Traceback" not in stderr
    _no_broker_left(tmp_path)


@pytest.mark.parametrize("piece", ["swarm1", "publisher"])
def test_a_dead_swarm_or_publisher_still_counts_the_loss(broker, tmp_path, piece):
    compare = _start_compare(tmp_path, broker.amqp_url)
    _wait_until_publishing(tmp_path, compare, broker)
    pids = [pid for pid, cmd in _children(compare.pid).items() if f"/{piece}.spec.json " in cmd]
    assert len(pids) == 1, _children(compare.pid)
    os.kill(pids[0], signal.SIGKILL)
    code, output, run = _finish(compare, tmp_path)
    assert code == 1, output
    # counted against what was published (a dead publisher: its last report) and planned
    assert run["published"] > 0 and run["expected_deliveries"] >= run["published"] * 100
    assert run["lost"] + run["not_delivered"] == max(0, run["expected_deliveries"]
                                                     - run["delivered"])
    assert (run["verdict"]["culprit"], Cause.of(run["verdict"]["cause"])) == (
        "client", "instrument-failed"), run["verdict"]
    # which figures are bounds is said, in the JSON and in the verdict's evidence
    said = "swarm1 gave no result" if piece == "swarm1" else "the publisher gave no result"
    assert any(said in bound for bound in run["bounds"]), run["bounds"]
    assert any(said in line for line in run["verdict"]["evidence"])
    if piece == "swarm1":  # what its members had received by its last report, not nothing
        assert run["delivered"] >= 100 and run["swarm"]["clients"] == 600
        assert run["lost"] == run["expected_deliveries"] - run["delivered"]


def test_two_commands_on_one_home_share_the_broker_and_the_last_stops_it(tmp_path):
    # the first starts the managed broker and ends first; the second, still measuring,
    # must keep it (before: the first stopped it under the second, which lost deliveries)
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(tmp_path / "home")
    small = ["--topologies", "single-topic", "--layouts", "per-node", "--groups", "2",
             "--group-size", "20"]
    first = subprocess.Popen([sys.executable, "-m", "mqprobe", "compare", *small, "--duration",
                              "4", "--run-dir", str(tmp_path / "l1")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    # once it publishes it holds the broker; the second joins well within its 4 s (waiting
    # for the broker's delivery count as well outlasted a 2 s, then a 4 s run on a host
    # crowded by three test workers: the management API's figures lag)
    _wait_until_publishing(tmp_path / "l1", first, tmp_path / "home" / "broker", logs="",
                           at_least=0)
    second = subprocess.Popen([sys.executable, "-m", "mqprobe", "compare", *small, "--duration",
                               "5", "--json", str(tmp_path / "second.json"), "--run-dir",
                               str(tmp_path / "l2")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    run = json.loads((tmp_path / "second.json").read_text())["runs"][0]
    assert run["lost"] == 0 and run["error"] is None and run["delivered"] > 0
    _no_broker_left(tmp_path)


def test_a_broker_started_by_broker_up_shows_its_url_and_outlives_the_commands_that_use_it(
        tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(tmp_path / "home")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mqprobe", *args], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=180)

    absent = cli("broker", "url")
    assert absent.returncode == 1 and "mqprobe broker up" in absent.stderr
    assert cli("broker", "up").returncode == 0
    try:
        state = json.loads((tmp_path / "home" / "broker" / "state.json").read_text())
        redacted = cli("broker", "url").stdout.strip()
        assert state["password"] not in redacted and redacted.endswith(
            f"@127.0.0.1:{state['amqp_port']}/")
        shown = cli("broker", "url", "--show-password").stdout.strip()
        assert shown == f"amqp://{state['user']}:{state['password']}@127.0.0.1:{state['amqp_port']}/"
        done = cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                   "--groups", "1", "--group-size", "5", "--duration", "1",
                   "--run-dir", str(tmp_path / "logs"))
        assert done.returncode == 0, done.stderr
        assert cli("broker", "status").returncode == 0  # still running
    finally:
        assert "broker stopped" in cli("broker", "down").stdout
    _no_broker_left(tmp_path)


@pytest.fixture(scope="module")
def fragile_broker(tmp_path_factory):
    """A broker of these tests' own: they stop its app and pause it."""
    own = ManagedBroker(tmp_path_factory.mktemp("fragile"))
    own.up()
    yield own
    own.down()


def _pause(broker: ManagedBroker, _armed_at: Path):
    """SIGSTOP for 4 s: a broker that does not answer (swapping, a VM paused)."""
    pid = broker.load_state().pid

    def now() -> None:
        os.killpg(pid, signal.SIGSTOP)
        try:
            time.sleep(4)
        finally:
            os.killpg(pid, signal.SIGCONT)
    return now


def _stop_app(broker: ManagedBroker, armed_at: Path):
    """RabbitMQ's app stopped for 3 s, as `rabbitmqctl stop_app` and `start_app` do."""
    return _when_a_file_appears(broker, armed_at / "stop-app-now",
                                "rabbit:stop(), timer:sleep(3000), rabbit:start().")


@pytest.mark.measuring  # the outage's share of the tail
@pytest.mark.parametrize(("fault", "says"), [
    (_stop_app, "RabbitMQ could not be reached from "),
    (_pause, "RabbitMQ did not answer from "),
])
def test_a_broker_app_stopped_or_paused_is_the_mq(fragile_broker, tmp_path, fault, says):
    strike = fault(fragile_broker, tmp_path)
    compare = _start_compare(tmp_path, fragile_broker.load_state().amqp_url)
    _wait_until_publishing(tmp_path, compare, fragile_broker.load_state())
    strike()
    code, output, run = _finish(compare, tmp_path)
    assert "Traceback" not in output
    outages = [e for e in run["timeline"]["events"] if e["kind"] == "broker-unavailable"]
    # (one core, at 59e8f8a: the nodes' logs show the app stopped mid-run, CONNECTION_FORCED
    # and refused reconnects, yet compare's broker sampler recorded no outage: open)
    assert outages, "no outage on the run's timeline: nothing to name"
    assert run["verdict"]["culprit"] == "mq", run["verdict"]
    assert run["verdict"]["cause"].startswith(f"broker-unavailable: {says}"), run["verdict"]
    assert code == (1 if run["lost"] or run["error"] else 0)

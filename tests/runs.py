"""A compare run as a user starts it, in a process of its own, watched from outside: the
fault, interrupt and broker tests start one, wait until it measures, and read what it left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mqprobe.broker import BrokerState, ManagedBroker, management_get

from .conftest import REPO

ARGS = ["compare", "--topologies", "single-topic", "--layouts", "per-node", "--duration", "8"]


def _compare(tmp_path: Path, *extra: str, **env: str) -> subprocess.Popen:
    """`mqprobe compare ARGS EXTRA` with its result in tmp_path/r.json and its logs beside
    it; the environment's broker URL replaced by `env`."""
    env = {**{k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}, **env}
    return subprocess.Popen([sys.executable, "-m", "mqprobe", *ARGS, *extra, "--json",
                             str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)


def start_compare(tmp_path: Path, amqp_url: str, prometheus_url: str = "",
                  *extra: str) -> subprocess.Popen:
    return _compare(tmp_path, *extra, MQPROBE_AMQP_URL=amqp_url,
                    **({"MQPROBE_PROMETHEUS_URL": prometheus_url} if prometheus_url else {}))


def wait_until_publishing(tmp_path: Path, compare: subprocess.Popen, broker: BrokerState | Path,
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
    before = delivered(state)
    while delivered(state) < before + at_least:
        waiting("delivered")


def delivered(broker: BrokerState) -> int:
    """Messages the broker delivered to consumers so far."""
    try:
        stats = management_get(broker.management_url, "/api/overview", timeout=2)["message_stats"]
    except (OSError, ValueError, KeyError):
        return 0
    return int(stats.get("deliver_get", 0))


def children(pid: int) -> dict[int, str]:
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


def finish(compare: subprocess.Popen, tmp_path: Path) -> tuple[int, str, dict]:
    stdout, stderr = compare.communicate(timeout=180)
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    return compare.returncode, stdout + stderr, run


def killed_mid_run(tmp_path: Path, broker: BrokerState, piece: str,
                   *extra: str) -> tuple[int, str, dict]:
    """compare (with `extra` flags) on the broker, the piece named `piece` (its spec's name:
    node1, swarm1, publisher, swarm-load) killed once it publishes; what compare then gave."""
    compare = start_compare(tmp_path, broker.amqp_url, "", *extra)
    wait_until_publishing(tmp_path, compare, broker)
    pids = [pid for pid, cmd in children(compare.pid).items() if f"/{piece}.spec.json " in cmd]
    assert len(pids) == 1, children(compare.pid)
    os.kill(pids[0], signal.SIGKILL)
    return finish(compare, tmp_path)


def compare_with_own_home(tmp_path: Path) -> subprocess.Popen:
    """compare on the managed broker of a home of its own: it starts it, it must stop it."""
    return _compare(tmp_path, MQPROBE_HOME=str(tmp_path / "home"))


def no_broker_left(tmp_path: Path) -> None:
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


def wait_until_the_nodes_start(tmp_path: Path, compare: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not list((tmp_path / "logs").glob("*/node*.log")):
        assert compare.poll() is None, compare.communicate()
        assert time.monotonic() < deadline, "the run never started its nodes"
        time.sleep(0.05)


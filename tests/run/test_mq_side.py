"""The MQ side's faults planted on a real broker at the default workload, as a user plants
them (`--inject`): a slow path to RabbitMQ, RabbitMQ under a CPU quota of its own, RabbitMQ
frozen, RabbitMQ short of a CPU beside busy processes. Each must name the mechanism, not
only the culprit: the advice is what an operator acts on.

The broker faults act on mqprobe's managed broker only, so these runs find the session's
as a user's compare finds theirs (MQPROBE_HOME), and what each does to it is undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqprobe.model import Cause, Culprit
from mqprobe.pieces.inject import CpuQuota

from ..conftest import REPO

pytestmark = pytest.mark.integration  # a real broker

DEFAULT = ["--topologies", "single-topic", "--layouts", "per-node"]  # the default workload


@pytest.fixture
def home(broker_home: Path) -> Path:
    """The session's broker's home: a compare or trace there uses that broker, as a user's
    uses theirs (the broker faults act on it; what they do is undone in their finally)."""
    return broker_home


def compare(home: Path, tmp_path: Path, *flags: str) -> dict:
    """`mqprobe compare` on the default workload with `flags`; its one run."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "mqprobe", "compare", *DEFAULT, *flags,
                           "--json", str(tmp_path / "r.json"), "--run-dir", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "r.json").exists(), done.stderr
    return json.loads((tmp_path / "r.json").read_text())["runs"][0]


def said(run: dict) -> tuple[str, Cause | None]:
    return run["verdict"]["culprit"], Cause.of(run["verdict"]["cause"])


def mq_shares(run: dict) -> dict[str, float]:
    return {s["cause"]: s["share"] for s in run["attribution"]["shares"] if s["culprit"] == "mq"}


@pytest.mark.measuring  # the network's share of the tail
def test_a_slow_jittered_link_is_the_network_and_names_its_node(home, tmp_path):
    """n1's connection alone through a proxy that holds each chunk 30-50 ms each way
    (jittered: a node in another zone, behind a load balancer): the broker idles, and the
    verdict says the time was on the way to RabbitMQ, naming n1's link, not that RabbitMQ
    starved. (Every link at 20 ms and at 10-30 ms read the same: BENCHMARKS.)"""
    run = compare(home, tmp_path, "--inject", "link-delay=n1:30ms+20ms")
    assert said(run) == (Culprit.MQ, Cause.NETWORK), run["verdict"]
    assert "RabbitMQ -> n1" in run["verdict"]["cause"]
    assert "beyond the first hop (a proxy or load balancer" in run["verdict"]["cause"]
    assert mq_shares(run).get("broker-starved", 0) < 0.15, run["attribution"]["shares"]
    links = {link["link"]: link["rtt_ms"]["p50"] for link in run["links"]}
    assert set(links) == {"publisher", "n1", "n2", "compare"}
    assert links["n1"] > 60 and links["n2"] < 10 and links["publisher"] < 10, links
    assert links["compare"] < 10  # the control goes straight to RabbitMQ
    legs = run["mq_legs"]  # each leg: the least of its link's round trips nearby, halved
    assert legs["deliver"]["p99"] > 30 and legs["publish"]["p99"] < 10, legs


@pytest.mark.measuring  # three neighbours on two cores once read a node cpu-starved first
def test_rabbitmq_under_a_cpu_quota_of_its_own_is_throttled_and_the_quota_named(home, tmp_path):
    """The managed broker in a cgroup whose quota is 5% of a CPU (a pod's CPU limit): the
    kernel counted its throttling; the verdict names the quota to raise, not who had the
    CPU (nobody took it)."""
    if problem := CpuQuota.problem():
        pytest.skip(f"no writable cgroup CPU controller here: {problem}")
    run = compare(home, tmp_path, "--inject", "broker-throttle=5%")
    assert said(run) == (Culprit.MQ, Cause.BROKER_THROTTLED), run["verdict"]
    assert "CPU quota (5% of a CPU)" in run["verdict"]["cause"]
    assert "raise the broker's CPU limit" in run["verdict"]["cause"]
    assert "put the swarms" not in run["verdict"]["cause"]
    assert any(line.startswith("its cgroup's CPU quota is 5% of a CPU, and held it back ")
               for line in run["verdict"]["evidence"]), run["verdict"]["evidence"]


def test_rabbitmq_frozen_mid_run_is_the_mq_not_a_saturated_consumer(home, tmp_path):
    """SIGSTOP for 3 s, 1 s into publishing, with the managed broker's management API and
    Prometheus endpoint sampled as by default (their calls hang through the freeze): the
    culprit is the MQ, and the verdict says the process was stopped."""
    run = compare(home, tmp_path, "--inject", "broker-freeze=3s")
    assert said(run) == (Culprit.MQ, Cause.BROKER_UNAVAILABLE), run["verdict"]
    assert "its process was stopped" in run["verdict"]["cause"], run["verdict"]["cause"]
    assert mq_shares(run)["broker-unavailable"] > 0.8, run["attribution"]["shares"]


@pytest.mark.measuring  # who had the CPU
def test_rabbitmq_short_of_a_cpu_beside_busy_processes_is_starved(home, tmp_path):
    """RabbitMQ's threads in the idle scheduling class, pinned to one core beside two busy
    processes there (ended by pid, its class and core given back): its schedulers wait
    for a CPU the busy processes have. At the default workload that costs a few ms a
    message; what the MQ side is charged is starvation, not the network nor the host's
    instrument."""
    pid = json.loads((home / "broker" / "state.json").read_text())["pid"]
    threads = [int(tid) for p in _tree(pid) for tid in os.listdir(f"/proc/{p}/task")]
    core = max(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda: os.sched_setaffinity(0, {core}))
            for _ in range(2)]
    before = {tid: (os.sched_getscheduler(tid), os.sched_getaffinity(tid)) for tid in threads}
    try:
        for tid in threads:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setaffinity(tid, {core})
        run = compare(home, tmp_path, "--budget-ms", "10")
    finally:
        for process in busy:
            process.kill()
            process.wait()
        for tid, (policy, cores) in before.items():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(0))
                os.sched_setaffinity(tid, cores)
            except ProcessLookupError:
                pass
    mq = mq_shares(run)
    assert max(mq, key=mq.__getitem__) == "broker-starved", run["attribution"]["shares"]
    assert mq.get("network", 0) < 0.05, mq
    assert any(line.startswith("RabbitMQ's schedulers waited for a CPU ")
               for line in run["verdict"]["evidence"] + [run["verdict"]["cause"]]) or (
        said(run)[1] != Cause.BROKER_STARVED), run["verdict"]


def _tree(pid: int) -> list[int]:
    from mqprobe.cpu import process_tree

    return process_tree(pid)

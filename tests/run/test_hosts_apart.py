"""Hosts that are really apart: the nodes on one network stack, the swarm on another, compare
and the broker on this one (tests/hosts.py makes them: network namespaces, veth links).

The agents reach the broker only through their own links, the swarm reaches the nodes only
through theirs, and each host pretends its clock is off, so the offsets are measured across
real separate stacks. Then the swarm's host vanishes mid-run (its interfaces down: no
FIN, no RST): the run must say which host went silent and when, keep what the other hosts
measured, exit non-zero, and leave nothing of its own on the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mqprobe.broker import management_get

from ..conftest import REPO
from ..hosts import Hosts, NoNamespaces

SKEW_MS = {"nodes": -120.0, "swarm": 250.0}  # each host pretends its clock is off


@pytest.fixture(scope="module")
def apart(managed_broker):
    """Two hosts apart from this one, an agent on each reaching the broker through its own
    link, on a virtual host of the module's own: (hosts, the coordinator's broker URL)."""
    state = managed_broker.running_state()
    try:
        hosts = Hosts(state.amqp_port)
    except NoNamespaces as why:
        pytest.skip(f"hosts apart cannot be made here: {why}")
    vhost = "t-hosts-apart"
    managed_broker.rabbitmqctl("add_vhost", vhost)
    managed_broker.rabbitmqctl("set_permissions", "-p", vhost, state.user, ".*", ".*", ".*")
    try:
        hosts.start_agents(state.user, state.password, vhost, cwd=str(REPO), skew_ms=SKEW_MS)
        yield hosts, f"{state.amqp_url}{vhost}"
    finally:
        hosts.close()
        managed_broker.rabbitmqctl("delete_vhost", vhost)


def _compare(vhost_url: str, out, duration: str, *flags: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "mqprobe", "compare", "--topologies", "single-topic",
         "--layouts", "per-node", "--place", "node=nodes", "--place", "swarm=swarm",
         "--groups", "3", "--group-size", "20", "--duration", duration, *flags,
         "--json", str(out / "r.json"), "--run-dir", str(out / "logs"),
         "--amqp-url", vhost_url], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _left_on_broker(managed_broker, vhost_url: str) -> list[str]:
    vhost = vhost_url.rsplit("/", 1)[1]
    api = managed_broker.running_state().management_url
    left = [e["name"] for e in management_get(api, f"/api/exchanges/{vhost}?columns=name")
            if e["name"].startswith("mqprobe.")]
    return left + [q["name"] for q in management_get(api, f"/api/queues/{vhost}?columns=name")]


def test_a_run_across_three_network_stacks_measures_as_on_one(apart, managed_broker, tmp_path):
    _hosts, vhost_url = apart
    compare = _compare(vhost_url, tmp_path, "3")
    out, errors = compare.communicate(timeout=180)
    assert compare.returncode == 0, errors + out
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    assert run["delivered"] == run["expected_deliveries"] > 0
    clocks = run["clocks"]["pieces"]  # each measured over its own host's link
    for piece, host in (("swarm1", "swarm"), ("n1", "nodes"), ("n2", "nodes")):
        clock = clocks[piece]
        assert clock["exchanges"] > 0 and 0 < clock["uncertainty_ms"] < 20, (piece, clock)
        assert abs(clock["offset_ms"] - SKEW_MS[host]) <= clock["uncertainty_ms"] + 0.2, clock
    # the agents still run: their own queues and the two exchanges they hold, nothing else
    assert set(_left_on_broker(managed_broker, vhost_url)) <= {
        "mqprobe.control", "mqprobe.results", "mqprobe.pieces.agent.nodes",
        "mqprobe.pieces.agent.swarm"}


def test_a_host_that_vanishes_mid_run_is_named_and_the_others_figures_are_kept(
        apart, managed_broker, tmp_path):
    """(After the run above: the vanished host stays gone.)"""
    hosts, vhost_url = apart
    compare = _compare(vhost_url, tmp_path, "40", "--tcp-keepalive", "2")
    try:
        _wait_for_deliveries(managed_broker, vhost_url, compare, 30)  # a second's worth
        vanished_at = time.time()
        hosts.hosts["swarm"].vanish()
        out, errors = compare.communicate(timeout=120)
    finally:
        if compare.poll() is None:
            compare.kill()  # ours, by its pid
    assert compare.returncode == 1, errors + out
    assert "Traceback" not in errors
    run = json.loads((tmp_path / "r.json").read_text())["runs"][0]
    assert "agent 'swarm' has said nothing" in run["error"], run["error"]
    assert abs(_clock_in(run["error"]) - vanished_at) < 5, run["error"]  # and when
    assert run["published"] > 0  # the publisher (here) kept what it sent
    # the nodes' connections to the vanished swarm: with TCP keepalive after 2 s (and as long
    # for data never acknowledged), the kernel gave up on them about 5 s after it went
    held = [line for line in run["verdict"]["evidence"] if line.startswith("swarm1 was last")]
    assert len(held) == 2, run["verdict"]["evidence"]
    for line in held:
        assert "then held 30 connections" in line and "; 30 ended" in line, line
        assert "by their connection closing" in line and "still held" not in line, line
    for node in run["nodes"]:  # the kernel's count as the run ended: none held any more
        assert node["connections"]["rows"][-1][1:] == [0, 0], node["connections"]["rows"][-3:]
    handled = sum(n.get("handled", 0) for n in run["nodes"])
    assert handled > 0, run["nodes"]  # the nodes' host kept its figures
    # the run's queues are gone, and the vanished agent's once RabbitMQ missed two of its
    # heartbeats (5 s each: a dead connection is dropped, its exclusive queue with it)
    expected = {"mqprobe.control", "mqprobe.results", "mqprobe.pieces.agent.nodes"}
    deadline = vanished_at + 30
    while (left := set(_left_on_broker(managed_broker, vhost_url))) - expected and \
            time.time() < deadline:
        time.sleep(1)
    assert left <= expected, left


def _wait_for_deliveries(managed_broker, vhost_url: str, compare: subprocess.Popen,
                         at_least: int) -> None:
    """Until the run's own queues (not the agents' control traffic on the same virtual host)
    delivered `at_least` messages: the pieces are up on both hosts and the run publishes."""
    vhost = vhost_url.rsplit("/", 1)[1]
    api = managed_broker.running_state().management_url
    deadline = time.monotonic() + 120
    while True:
        queues = management_get(api, f"/api/queues/{vhost}?columns=name,message_stats")
        done = sum((q.get("message_stats") or {}).get("deliver_get", 0) for q in queues
                   if not q["name"].startswith(("mqprobe.pieces.", "amq.")))
        if done >= at_least:
            return
        assert compare.poll() is None, compare.communicate()
        assert time.monotonic() < deadline, "the run never delivered"
        time.sleep(0.2)


def _clock_in(error: str) -> float:
    """The wall time `last heard at HH:MM:SS` names, today."""
    text = error.split("last heard at ", 1)[1][:8]
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hours, minutes, seconds,
                        0, 0, -1))

"""The seed's question 2 on a real broker: where a server's loop time goes with many quiet
connections. 3,000 members (five times the default workload's) in quiet groups, the nodes
pinging each one every second: each node's profiler finds engine.io's pings and pongs among
its loop's work (the packet in the socket's hands says which writes are pings), the result
says what they cost per 1,000 connections a ping interval, and the node's timeline has the
spans the verdict charges."""

from __future__ import annotations

import pytest

from mqprobe.timeline import EventKind
from mqprobe.watch.profile import HEARTBEATS

from .test_mq_side import compare, home  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration  # a real broker


# not `measuring`: its bounds are wide (what a loop that waits for a busy core counts too),
# and it held pinned to one core and beside a CPU hog (BENCHMARKS)
def test_quiet_connections_pinged_every_second_cost_the_nodes_their_heartbeats(home, tmp_path):  # noqa: F811
    run = compare(home, tmp_path, "--groups", "30", "--group-size", "100", "--rate", "0.2",
                  "--duration", "6", "--ping-interval", "1", "--ping-timeout", "5")
    assert run["lost"] == 0, run["verdict"]
    for node in run["nodes"]:
        beats = node["heartbeats"]
        assert beats["connections"] == 1500 and beats["ping_interval_s"] == 1, beats
        # BENCHMARKS: 50-58 ms a node per 1,000 connections a wave (27,000 quiet
        # connections, from the waves' CPU; 1,500 a node pinged every second, from the
        # profiler); a loop that waits for a busy core counts its waits too
        assert 15 < beats["per_1k_ms"] < 250, beats
        # the writes of the run's 600 deliveries a second are not pings
        kinds = node["profile"]["kinds"]
        assert kinds[HEARTBEATS] > 0.02, kinds
        assert beats["loop_ms"] == pytest.approx(
            kinds[HEARTBEATS] * node["profile"]["sampled_ms"], rel=0.05), (beats, kinds)
    spans = [e for e in run["timeline"]["events"] if e["kind"] == EventKind.HEARTBEAT_WORK]
    assert {e["piece"] for e in spans} == {"n1", "n2"}
    lines = run["verdict"]["evidence"]
    assert any(line.startswith("n1's loop spent ") and "socket.io's heartbeats" in line
               and "a ping every 1 s" in line for line in lines), lines

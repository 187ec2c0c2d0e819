"""What the nodes held after a swarm went silent, and whose their connection work was,
from their connection figures alone: pure decisions, no broker."""

import pytest

from mqprobe.figures import ConnectionFigures, LoopLag, NodeFigures
from mqprobe.model import Cause
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.connections import churn_lines, connection_cause, outlived
from mqprobe.watch.connections import PING_TIMEOUT, PING_UNANSWERED, TRANSPORT_CLOSE

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a whole second


def node(name: str, rows, ended) -> NodeFigures:
    return NodeFigures(node=name, handled=0, untraced=0, filtered=0, unacked_max=0, prefetch=1,
                       busy_ratio={}, loop_lag_ms=LoopLag.from_json({}),
                       connections=ConnectionFigures(1.0, tuple(rows), tuple(ended)))


def test_connections_freed_by_the_ping_timeout_say_when_and_how_many():
    n1 = node("n1", [(T0 + i * S, 60 if i < 7 else 0, 60 if i < 7 else 0) for i in range(10)],
              [(T0 + 6 * S, "ping timeout", 40), (T0 + 7 * S, "ping timeout", 20)])
    [line] = outlived([n1], "swarm1", T0 + 2 * S + S // 2, (2.0, 2.0), 0.0)
    assert "n1 then held 60 connections (60 ESTABLISHED); 60 ended 4-6 s later" in line, line
    assert "60 by the socket.io ping timeout" in line and "still held" not in line, line
    assert line.endswith("(ping every 2 s, timeout 2 s; no TCP keepalive)")


def test_connections_nothing_freed_say_so_and_for_how_long():
    n1 = node("n1", [(T0 + i * S, 30, 30) for i in range(12)],
              [(T0, "client disconnect", 3)])  # before it went silent: not its
    [line] = outlived([n1], "swarm1", T0 + 2 * S, (25.0, 20.0), 0.0)
    assert " ended " not in line.split("; it still")[0], line
    assert "it still held 30 (30 ESTABLISHED) 9 s later, as the run ended: nothing freed " \
           "them within the run" in line, line


def test_a_node_that_did_not_watch_and_a_swarm_never_heard_say_nothing():
    unwatched = NodeFigures(node="n2", handled=0, untraced=0, filtered=0, unacked_max=0,
                            prefetch=1, busy_ratio={}, loop_lag_ms=LoopLag.from_json({}))
    assert outlived([unwatched], "swarm1", T0, (25.0, 20.0), 0.0) == []
    assert outlived([node("n1", [(T0, 1, 1)], [])], "swarm1", 0, (25.0, 20.0), 0.0) == []


def test_the_kernels_count_read_seconds_before_says_how_long_before():
    rows = [(T0, 50, 50), *((T0 + i * S, None, 50) for i in range(1, 5))]
    [line] = outlived([node("n1", rows, [])], "swarm1", T0 + 4 * S, (25.0, 20.0), 0.0)
    assert "n1 then held 50 connections (50 ESTABLISHED 4 s before)" in line, line


def test_a_node_with_other_swarms_clients_says_its_counts_are_all_of_them():
    n1 = node("n1", [(T0, 80, 80), (T0 + S, 80, 80)], [])
    [line] = outlived([n1], "swarm2", T0 + S, (25.0, 20.0), 0.0, others=True)
    assert "held 80 connections (80 ESTABLISHED) (the other swarms' among them)" in line, line


def _e2e(episodes_s: list[float], p99_ms: float = 500.0) -> list[list[float]]:
    """100 ms rows over a minute: 10 ms p99, and p99_ms for a second from each episode."""
    return [[t, 100, 5.0, p99_ms if any(e * 1000 <= t < e * 1000 + 1000 for e in episodes_s)
             else 10.0, 20.0] for t in range(0, 60_000, 100)]


def test_episodes_a_ping_interval_apart_are_said_with_how_to_tell():
    from mqprobe.verdict.connections import ping_episodes

    line = ping_episodes(_e2e([20, 42, 46]), 50.0, 25.0, 13_500)
    assert line.startswith("the worst e2e came in 2 episodes, 22 s apart (at 20, 42 s), about "
                           "the nodes' socket.io ping interval (25 s) with up to 13,500"), line
    assert "--ping-interval" in line


def test_episodes_at_another_period_or_alone_or_within_budget_say_nothing():
    from mqprobe.verdict.connections import ping_episodes

    assert ping_episodes(_e2e([10, 42]), 50.0, 25.0, 13_500) == ""  # 32 s: not the pings'
    assert ping_episodes(_e2e([20]), 50.0, 25.0, 13_500) == ""  # one: no period
    assert ping_episodes(_e2e([20, 45], p99_ms=40.0), 50.0, 25.0, 13_500) == ""  # in budget



def counted(ended: dict[str, int], began: int = 0) -> NodeFigures:
    return NodeFigures("n1", 0, 0, 0, 0, 0, {}, LoopLag(0, 0, 0), connections=ConnectionFigures(
        1.0, ((T0, 10, 10),), tuple((T0, reason, n) for reason, n in ended.items()),
        ((T0, began),) if began else ()))


@pytest.mark.parametrize(("ended", "cause"), [
    ({TRANSPORT_CLOSE: 300}, Cause.CONNECTION_CHURN),
    ({PING_TIMEOUT: 120, PING_UNANSWERED: 150, TRANSPORT_CLOSE: 30}, Cause.CLIENTS_UNRESPONSIVE),
    ({PING_TIMEOUT: 10, TRANSPORT_CLOSE: 290}, Cause.CONNECTION_CHURN),
    ({}, Cause.CONNECTION_CHURN),
])
def test_connection_work_is_the_clients_when_most_ended_silent(ended, cause):
    assert connection_cause(counted(ended)) == cause


def test_the_lines_say_what_the_loop_spent_and_why_connections_ended():
    events = [TimedEvent(EventKind.CONNECTION_WORK, "n1", T0, T0 + 40_000_000),
              TimedEvent(EventKind.CONNECTION_WORK, "n1", T0 + 100_000_000, T0 + 120_000_000)]
    [line] = churn_lines([counted({PING_UNANSWERED: 200, TRANSPORT_CLOSE: 20}, began=220)], events)
    assert line.startswith("n1's loop spent 60 ms on connections coming and going")
    assert "220 connected, 220 ended" in line and "clients-unresponsive" in line
    assert churn_lines([counted({})], []) == []

"""Which cause a node's connection work is charged to, from the reasons its connections
ended: a pure decision, no broker."""

from __future__ import annotations

import pytest

from mqprobe.figures import ConnectionFigures, LoopLag, NodeFigures
from mqprobe.model import Cause
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.connections import churn_lines, connection_cause
from mqprobe.watch.connections import PING_TIMEOUT, PING_UNANSWERED, TRANSPORT_CLOSE

T = 1_700_000_000_000_000_000


def node(ended: dict[str, int], began: int = 0) -> NodeFigures:
    return NodeFigures("n1", 0, 0, 0, 0, 0, {}, LoopLag(0, 0, 0), connections=ConnectionFigures(
        1.0, ((T, 10, 10),), tuple((T, reason, n) for reason, n in ended.items()),
        ((T, began),) if began else ()))


@pytest.mark.parametrize(("ended", "cause"), [
    ({TRANSPORT_CLOSE: 300}, Cause.CONNECTION_CHURN),
    ({PING_TIMEOUT: 120, PING_UNANSWERED: 150, TRANSPORT_CLOSE: 30}, Cause.CLIENTS_UNRESPONSIVE),
    ({PING_TIMEOUT: 10, TRANSPORT_CLOSE: 290}, Cause.CONNECTION_CHURN),
    ({}, Cause.CONNECTION_CHURN),
])
def test_connection_work_is_the_clients_when_most_ended_silent(ended, cause):
    assert connection_cause(node(ended)) == cause


def test_the_lines_say_what_the_loop_spent_and_why_connections_ended():
    events = [TimedEvent(EventKind.CONNECTION_WORK, "n1", T, T + 40_000_000),
              TimedEvent(EventKind.CONNECTION_WORK, "n1", T + 100_000_000, T + 120_000_000)]
    [line] = churn_lines([node({PING_UNANSWERED: 200, TRANSPORT_CLOSE: 20}, began=220)], events)
    assert line.startswith("n1's loop spent 60 ms on connections coming and going")
    assert "220 connected, 220 ended" in line and "clients-unresponsive" in line
    assert churn_lines([node({})], []) == []

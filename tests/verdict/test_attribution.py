"""Attribution and verdicts on synthetic runs: pure functions, no broker (times in ms)."""

from __future__ import annotations

import json

import pytest

from mqprobe.figures import BrokerCpu, Share, Verdict
from mqprobe.model import Cause, Culprit
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.analysis import Failure, RunFacts, verdict
from mqprobe.verdict.attribution import (
    PAUSED_WITH,
    Charger,
    Intervals,
    MessageDeliveries,
    Timeline,
    attribute,
    claim,
    paused_together,
    weighted_percentile,
)

from ..made import record

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
BUDGET = 50.0


def messages(count: int = 100, every_ms: float = 20, mq: float = 1, server: float = 0.05,
             delivery: float = 2, members: int = 50, node: str = "n1", swarm: str = "swarm1",
             wait: float = 0, fanout: float = 0.3, slow: dict | None = None) -> list:
    """`count` messages, one every `every_ms`; `slow` maps a message index to hop overrides."""
    out = []
    for i in range(count):
        hops = {"mq": mq, "server": server, "delivery": delivery, "wait": wait, **(slow or {}).get(i, {})}
        t_pub = T0 + int(i * every_ms * MS)
        t_deq = t_pub + int(hops["mq"] * MS)
        t_emit = t_deq + int(hops["server"] * MS)
        out.append(MessageDeliveries("1", i, node, swarm, t_pub, t_deq, t_emit,
                                     [(int(hops["delivery"] * MS), members)],
                                     int(hops["wait"] * MS), int(fanout * MS)))
    return out


def event(kind: EventKind, piece: str, start_ms: float, end_ms: float, **detail) -> TimedEvent:
    return TimedEvent(kind, piece, T0 + int(start_ms * MS), T0 + int(end_ms * MS), detail)


def run_of(msgs: list, lost: int = 0, self_lag_p99: float = 1.0, failed: int = 0,
           handled: int | None = None, nacked: int = 0) -> dict:
    """The run dict a verdict reads, with figures taken from the messages."""
    def p99(values):
        return round(weighted_percentile(values, 99) / MS, 3)

    mq = [(m.t_deq - m.t_pub, m.count) for m in msgs]
    server = [(m.t_emit - m.t_deq, m.count) for m in msgs]
    delivery = [(d, n) for m in msgs for d, n in m.receipts]
    e2e = [(m.t_emit - m.t_pub + d, n) for m in msgs for d, n in m.receipts]
    hop = lambda values: {"count": sum(n for _, n in values), "p50_ms": 0.0,  # noqa: E731
                          "p99_ms": p99(values), "max_ms": p99(values)}
    delivered = sum(m.count for m in msgs)
    return {
        "published": len(msgs), "expected_deliveries": delivered + lost, "delivered": delivered,
        "lost": lost, "duplicated": 0,
        "hops": {"mq": hop(mq), "server": hop(server), "delivery": hop(delivery),
                 "e2e": hop(e2e), "fanout": hop([(0.3 * MS, 1)])},
        "self_lag_ms": {"p50": 0.5, "p99": self_lag_p99, "max": self_lag_p99 * 2},
        "swarm": {"failed": failed, "disconnects": 0},
        "publisher": {"nacked": nacked, "errors": 0, "first_error": ""},
        "nodes": [{"node": "n1", "handled": len(msgs) if handled is None else handled,
                   "busy_ratio": {"q": 0.2}, "prefetch": 50, "unacked_max": 3,
                   "loop_lag_ms": {"p50": 0.1, "p99": 1.0, "max": 5.0}}],
        "evidence": {"broker": {"available": True, "max_ready": 0, "max_ready_queue": "",
                                "management_api": True, "alarms": [],
                                "blocked_connections_max": 0}},
    }


def judged(msgs: list, events: list | None = None, failure: Failure | None = None,
           **run_kwargs):
    events = events or []
    attribution = attribute(msgs, events, BUDGET)
    facts = RunFacts.of(record(**run_of(msgs, **run_kwargs)), events, T0, failure)
    return verdict(facts, attribution, BUDGET), attribution


# The table: each synthetic run and the cause its verdict must name.
CASES = [
    pytest.param(
        # every message waits 80 ms in the broker; one incidental 50 ms stall on the node
        lambda: (messages(mq=80), [event(EventKind.LOOP_STALL, "n1", 500, 550, cpu_share=0.1)]),
        Culprit.MQ, Cause.BROKER_SIDE, id="constant-broker-delay-beats-one-stall"),
    pytest.param(
        # a 130 ms gen-2 collection on the node, seen by its loop-lag monitor as a stall
        # too: the messages published meanwhile are dequeued when it ends, and the stall
        # is the collector's, named so
        lambda: (messages(slow={i: {"mq": 332 - 20 * i} for i in range(10, 16)}),
                 [event(EventKind.GC, "n1", 200, 330, generation=2),
                  event(EventKind.LOOP_STALL, "n1", 198, 332, cpu_share=1.0)]),
        Culprit.SERVER, Cause.GC_PAUSE, id="gc-pause-named-as-such"),
    pytest.param(
        # a handler blocks the node's loop 500 ms every second on a crowded host: what was
        # published meanwhile is read 9 ms after each stall ends (its lag monitor's tick
        # came first), later than GAP_NS, yet it waited for the node all along
        lambda: (messages(count=40, every_ms=100,
                          slow={i: {"mq": 509 - (i % 10) * 100} for i in range(40) if i % 10 < 5}),
                 [event(EventKind.LOOP_STALL, "n1", s, s + 500, cpu_share=0.0)
                  for s in (0, 1000, 2000, 3000)]),
        Culprit.SERVER, Cause.SERVER_STALL, id="read-just-after-a-stall-on-a-crowded-host"),
    pytest.param(
        # the node's loop stalls 300 ms every second: the messages behind it wait
        lambda: (messages(slow={i: {"mq": 300 - (i % 50) * 20} for i in range(100) if i % 50 < 15}),
                 [event(EventKind.LOOP_STALL, "n1", 0, 300, cpu_share=0.05),
                  event(EventKind.LOOP_STALL, "n1", 1000, 1300, cpu_share=0.05)]),
        Culprit.SERVER, Cause.SERVER_STALL, id="stall-covering-the-tail"),
    pytest.param(
        # 4 s in the broker for a third of the messages, beside a 60 ms swarm lag spike
        lambda: (messages(slow={i: {"mq": 4000} for i in range(30, 60)}),
                 [event(EventKind.LOOP_STALL, "swarm1", 700, 760, cpu_share=1.0)]),
        Culprit.MQ, Cause.BROKER_SIDE, id="swarm-lag-beside-a-4s-mq-tail"),
    pytest.param(
        # prefetch window full and a queue backlog while messages wait before the node
        lambda: (messages(slow={i: {"mq": 100 + i * 5} for i in range(20, 80)}),
                 [event(EventKind.WINDOW_FULL, "n1", 400, 2000, queue="q", prefetch=1),
                  event(EventKind.QUEUE_BACKLOG, "broker", 400, 2000, queue="q", ready_max=30)]),
        Culprit.SERVER, Cause.CONSUMER_SATURATED, id="full-window-and-backlog"),
    pytest.param(
        # messages wait in the node's own backlog before their handling begins
        lambda: (messages(server=120, wait=110), []),
        Culprit.SERVER, Cause.CONSUMER_SATURATED, id="own-backlog-wait"),
    pytest.param(
        lambda: (messages(server=70), []),
        Culprit.SERVER, Cause.SLOW_HANDLER, id="slow-handler"),
    pytest.param(
        # the swarm's own loop lag is what made the tail
        lambda: (messages(slow={i: {"delivery": 200} for i in range(40, 50)}),
                 [event(EventKind.LOOP_STALL, "swarm1", 800, 1002, cpu_share=1.0)]),
        Culprit.CLIENT, Cause.SWARM_SATURATED, id="swarm-lag-is-the-tail"),
    pytest.param(
        lambda: (messages(slow={i: {"mq": 500} for i in range(10, 20)}),
                 [event(EventKind.PUBLISHER_BLOCKED, "publisher", 150, 700)]),
        Culprit.MQ, Cause.BROKER_BLOCKED, id="publisher-blocked"),
    pytest.param(
        lambda: (messages(), []), Culprit.NONE, Cause.WITHIN_BUDGET, id="clean-run"),
]


@pytest.mark.parametrize(("make", "culprit", "cause"), CASES)
def test_verdict_names_the_cause_with_the_largest_share(make, culprit, cause):
    msgs, events = make()
    said, attribution = judged(msgs, events)
    assert (said.culprit, said.cause) == (culprit, cause), (said, attribution.shares)
    if culprit != Culprit.NONE:
        assert said.shares[0].cause == cause
        assert f"{said.shares[0].share:.0%} of the tail excess" in said.prose
    assert any(line.startswith("tail:") for line in said.evidence)


def test_shares_add_up_to_the_whole_excess():
    msgs = messages(mq=80, slow={i: {"delivery": 30} for i in range(5)})
    attribution = attribute(msgs, [event(EventKind.GC, "n1", 0, 40, generation=2)], BUDGET)
    assert sum(s.share for s in attribution.shares) == pytest.approx(1.0)
    assert sum(attribution.hop_shares.values()) == pytest.approx(1.0)
    assert attribution.tail == "over-budget" and attribution.tail_deliveries == 100 * 50


def test_floor_never_swallows_a_delay_every_message_carries():
    attribution = attribute(messages(mq=80), [], BUDGET)
    assert attribution.floors_ms["mq"] == pytest.approx(BUDGET / 10)
    assert attribution.excess_ms == pytest.approx(75, abs=1)


def test_within_budget_reports_the_p99_tail():
    attribution = attribute(messages(slow={3: {"delivery": 9}}), [], BUDGET)
    assert attribution.tail == "p99" and attribution.shares[0].cause == Cause.DELIVERY


def test_lost_deliveries_are_never_none():
    # what arrived met the budget, with a p99 tail of its own: the loss is still the story
    said, attribution = judged(messages(slow={3: {"delivery": 9}}), lost=10)
    assert attribution.tail == "p99" and attribution.shares
    assert said.culprit != Culprit.NONE
    assert said.cause == Cause.LOST and "lost 10 of" in said.evidence[0]
    said, _ = judged(messages(slow={3: {"delivery": 9}}), lost=10, handled=90)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.LOST_BEFORE_NODE)


def test_nothing_delivered_and_nothing_lost_is_said_plainly():
    facts = RunFacts.of(record(**run_of([], lost=0) | {"published": 0}), [], T0)
    assert verdict(facts, None, BUDGET).cause == Cause.INSTRUMENT_FAILED
    facts = RunFacts.of(record(**run_of([], lost=600) | {"published": 12}), [], T0)
    assert verdict(facts, None, BUDGET).culprit != Culprit.NONE


def test_broker_gone_is_mq_with_when_and_how_long():
    events = [event(EventKind.BROKER_UNAVAILABLE, "broker", 1500, 4000)]
    said, _ = judged(messages(count=60), events, lost=300)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_UNAVAILABLE)
    assert "from 1.5 s to 4.0 s of the run" in said.prose and "2.5 s in all" in said.prose
    events = [event(EventKind.BROKER_UNAVAILABLE, "broker", 1500, 4000, until_end=True)]
    said, _ = judged(messages(count=60), events, lost=300)
    assert "from 1.5 s until the run ended" in said.prose


def test_dead_node_is_named_and_a_dead_swarm_is_the_instrument():
    said, _ = judged(messages(), lost=5, failure=Failure("node1", "node1 exited early: boom"))
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.NODE_DIED)
    assert "node1 exited early" in said.prose
    said, _ = judged(messages(), lost=5, failure=Failure("swarm1", "swarm1 exited early"))
    assert (said.culprit, said.cause) == (Culprit.CLIENT, Cause.INSTRUMENT_FAILED)


def test_refused_publishes_are_the_brokers():
    said, _ = judged(messages(), nacked=4)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.PUBLISH_REJECTED)


def test_verdict_json_keeps_the_design_shape():
    said, _ = judged(messages(mq=80))
    data = said.to_json()
    assert data["culprit"] == "mq" and data["cause"].startswith("broker-side: ")
    assert isinstance(data["evidence"], list) and data["shares"][0]["cause"] == "broker-side"


def test_higher_precedence_wins_overlaps_and_the_rest_is_left_free():
    got, free = claim([(0, 100)], [(10, 30, {Cause.GC_PAUSE: 1.0}),
                                   (0, 50, {Cause.SERVER_STALL: 1.0})])
    assert got == {Cause.GC_PAUSE: 20, Cause.SERVER_STALL: 30} and free == [(50, 100)]
    # a stall's claim is shared by its parts: a quarter computing, the rest waiting
    got, _ = claim([(0, 100)], [(20, 60, {Cause.SERVER_STALL: 0.25, Cause.CPU_STARVED: 0.75})])
    assert got == {Cause.SERVER_STALL: 10, Cause.CPU_STARVED: 30}


def test_intervals_merge_and_clip():
    spans = Intervals([(50, 60), (0, 10), (5, 20), (100, 90)])
    assert spans.within(8, 55) == [(8, 20), (50, 55)]
    assert spans.within(20, 50) == []


def test_a_broker_that_did_not_answer_is_charged_not_a_whole_run_fault():
    # paused for 2 s while a fifth of the messages waited on it; a second blip elsewhere
    msgs = messages(slow={i: {"mq": 2000 - (i - 50) * 20} for i in range(50, 70)})
    events = [event(EventKind.BROKER_UNAVAILABLE, "broker", 1000, 3000, unresponsive=True)]
    said, attribution = judged(msgs, events)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_UNAVAILABLE)
    assert "did not answer from 1.0 s to 3.0 s" in said.prose
    assert attribution.shares[0].share > 0.9
    blip = [event(EventKind.BROKER_UNAVAILABLE, "broker", 100, 1150, unresponsive=True)]
    said, _ = judged(messages(), blip)  # nothing waited on it: it explains nothing
    assert said.culprit == Culprit.NONE


def test_a_few_late_deliveries_do_not_miss_the_budget():
    # 1 message of 200 (0.5% of deliveries) 80 ms late behind a 60 ms stall: p99 is met
    msgs = messages(count=200, slow={7: {"mq": 80}})
    said, attribution = judged(msgs, [event(EventKind.LOOP_STALL, "n1", 140, 220)])
    assert attribution.tail == "p99" and said.culprit == Culprit.NONE
    msgs = messages(count=200, slow={i: {"mq": 80} for i in range(7, 10)})  # 1.5%: missed
    said, attribution = judged(msgs, [event(EventKind.LOOP_STALL, "n1", 140, 280)])
    assert attribution.tail == "over-budget" and said.cause == Cause.SERVER_STALL


def test_a_swarm_stall_is_not_charged_to_delivery_when_the_kernel_stamped_receipts():
    """The same late receipts beside the same swarm stall: with t_recv taken when the swarm
    read the frame, the stall is the tail (client); with the kernel's receive stamps the
    stall only delayed the reading, so the tail is the delivery path's own."""
    from mqprobe.figures import SwarmFigures
    from mqprobe.verdict.analysis import charged_events

    msgs = messages(slow={i: {"delivery": 200} for i in range(40, 50)})
    stall = [event(EventKind.LOOP_STALL, "swarm1", 800, 1002, cpu_share=1.0),
             event(EventKind.LOOP_STALL, "n1", 5000, 5010, cpu_share=1.0)]
    for source, culprit, cause in (
            ({"read": 5000, "kernel": 0, "kernel_shared": 0}, Culprit.CLIENT, Cause.SWARM_SATURATED),
            ({"read": 0, "kernel": 4990, "kernel_shared": 10}, Culprit.DELIVERY, Cause.DELIVERY),
            # frames that queued in one read share its stamp: more than 1% and it is not trusted
            ({"read": 0, "kernel": 4900, "kernel_shared": 100}, Culprit.CLIENT, Cause.SWARM_SATURATED)):
        run = run_of(msgs)
        run["swarm"]["t_recv_source"] = source
        kernel = SwarmFigures.from_json(run["swarm"]).kernel_stamped
        events = charged_events(SwarmFigures.from_json(run["swarm"]), stall)
        assert len(events) == (1 if kernel else 2)  # n1's stall stays
        attribution = attribute(msgs, events, BUDGET)
        judged_verdict = verdict(RunFacts.of(record(**run), stall, T0, None), attribution, BUDGET)
        assert (judged_verdict.culprit, judged_verdict.cause) == (culprit, cause), source
        lag_line = next(line for line in judged_verdict.evidence if "swarm loop lag" in line)
        assert ("receive stamps are the kernel's" in lag_line) == kernel


def test_a_piece_that_gave_no_result_is_the_instrument_never_idle_consumers():
    """Nodes whose figures never arrived must not read as consumers with busy ratio 0."""
    msgs = messages(slow={i: {"mq": 900} for i in range(40, 60)})
    failure = Failure("node1", "node1 gave no result when asked to stop: its figures are "
                      "missing", T0, gave_no_result=True)
    judged_verdict, _ = judged(msgs, failure=failure)
    assert (judged_verdict.culprit, judged_verdict.cause) == (Culprit.CLIENT,
                                                              Cause.INSTRUMENT_FAILED)
    assert "node1 gave no result" in judged_verdict.prose
    died, _ = judged(msgs, failure=Failure("node1", "node1 exited early", T0))
    assert died.cause == Cause.NODE_DIED  # one that ended by itself is still a dead node


@pytest.mark.parametrize("cause", list(Cause))
def test_a_verdict_reads_back_from_its_json_with_its_cause_typed(cause):
    verdict = Verdict.of(cause, evidence=["measured: 3 stalls"],
                         shares=[Share(cause, 0.75, 12.5)])
    assert Verdict.from_json(json.loads(json.dumps(verdict.to_json()))) == verdict
    assert Cause.of(verdict.to_json()["cause"]) is cause


def test_a_cause_text_with_no_known_code_is_said_not_guessed():
    from mqprobe.errors import ResultFormatError

    assert Cause.of("broker-side") is Cause.BROKER_SIDE and Cause.of("elves: busy") is None
    with pytest.raises(ResultFormatError, match="no cause mqprobe knows"):
        Verdict.from_json({"culprit": "mq", "cause": "elves: busy"})


# -- what built a backlog, and why a loop could not run (issue 19) --------------------------
def consumer(count: int = 300, every_ms: float = 10, service_ms: float = 5,
             stall: tuple[float, float] | list[tuple[float, float]] | None = None,
             members: int = 50) -> list:
    """A sequential consumer, simulated: a message reaches the node 1 ms after its publish;
    while the loop is stalled (one stall, or a list) nothing is dequeued; then each waits
    in the node's backlog until the one before it is served (service_ms each, emit
    included)."""
    stalls = [stall] if isinstance(stall, tuple) else (stall or [])
    out, free_at = [], 0.0
    for i in range(count):
        published = i * every_ms
        arrived = published + 1
        for a, b in stalls:
            if a <= arrived < b:
                arrived = b
        start = max(arrived, free_at)
        free_at = start + service_ms
        for a, b in stalls:
            if a <= start < b:
                start = free_at = b
                free_at += service_ms
        out.append(MessageDeliveries(
            "1", i, "n1", "swarm1", T0 + int(published * MS), T0 + int(arrived * MS),
            T0 + int((start + 0.05) * MS), [(2 * MS, members)], int((start - arrived) * MS),
            int(0.3 * MS)))
    return out


def cpu_rows(until_ms: float, waiting: float, on: float = 0.2) -> dict:
    """n1's loop CPU windows of 100 ms: `waiting` and `on` are shares of each window."""
    return {"n1": [[T0 + int(t * MS), 100 * MS, int(on * 100 * MS), int(waiting * 100 * MS), 0]
                   for t in range(0, int(until_ms), 100)]}


STARVED = {"on_cpu_ms": 8.0, "waiting_ms": 180.0, "throttled_ms": 0.0, "off_cpu_ms": 12.0}
BLOCKED = {"on_cpu_ms": 1.0, "waiting_ms": 0.0, "throttled_ms": 0.0, "off_cpu_ms": 199.0}


@pytest.mark.parametrize(("detail", "cause"), [
    ({"cpu_share": 0.1}, Cause.SERVER_STALL),  # no counters: today's reading
    (BLOCKED, Cause.SERVER_STALL),
    ({"on_cpu_ms": 190.0, "waiting_ms": 10.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0},
     Cause.SERVER_STALL),
    (STARVED, Cause.CPU_STARVED),
    ({"on_cpu_ms": 20.0, "waiting_ms": 20.0, "throttled_ms": 150.0, "off_cpu_ms": 0.0},
     Cause.CPU_THROTTLED),
    # a planted spin on a crowded core: half of it waiting, but the code held the loop and
    # its own 95 ms were a stall by themselves
    ({"on_cpu_ms": 95.0, "waiting_ms": 105.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0,
      "held_by": "mqprobe/pieces/node.py:190 in _stall: pass"}, Cause.SERVER_STALL),
    # a callback caught by the samples while the thread mostly waited: not its stall
    ({"on_cpu_ms": 2.0, "waiting_ms": 30.0, "throttled_ms": 0.0, "off_cpu_ms": 0.5,
      "held_by": "socketio/async_server.py:180 in emit"}, Cause.CPU_STARVED),
    # a spin on one crowded core: a quarter of it computing, seen running in its code
    ({"on_cpu_ms": 52.0, "waiting_ms": 148.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0,
      "held_by": "mqprobe/pieces/node.py:192 in _stall: pass"}, Cause.SERVER_STALL),
    # a throttled node: the watchdog saw the loop stopped in a write, never running there
    ({"on_cpu_ms": 11.4, "waiting_ms": 9.7, "throttled_ms": 127.0, "off_cpu_ms": 0.0,
      "in": "asyncio/selector_events.py:1057 in write"}, Cause.CPU_THROTTLED),
])
def test_a_stall_is_charged_by_what_its_time_was_spent_on(detail, cause):
    from mqprobe.verdict.attribution import stall_cause

    assert stall_cause(detail) == cause


@pytest.mark.parametrize("service_ms", [4, 9])  # a fast host, and one where the drain is long
def test_a_stall_then_its_drain_is_the_stalls(service_ms):
    msgs = consumer(service_ms=service_ms, stall=(1000, 1200))
    events = [event(EventKind.LOOP_STALL, "n1", 1000, 1200, **BLOCKED)]
    assert max(m.wait_ns for m in msgs) > 50 * MS  # the drain waited in the node's backlog
    said, attribution = judged(msgs, events)
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.SERVER_STALL), attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) > 0.9
    assert attribution.share_of(Cause.CONSUMER_SATURATED) < 0.05
    assert "event loop was blocked" in said.prose


def test_true_saturation_with_no_stall_is_the_consumers():
    msgs = consumer(service_ms=12)  # arrivals every 10 ms, 12 ms each: the backlog grows
    said, attribution = judged(msgs, [])
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.CONSUMER_SATURATED)
    assert attribution.share_of(Cause.CONSUMER_SATURATED) > 0.9


def test_saturation_on_a_starved_loop_is_the_starvation():
    """The same growing backlog, while the node's loop waited for a CPU half of the time:
    the wait is charged to the starvation first, the consumer only for what is left."""
    msgs = consumer(service_ms=12)
    _said, plain = judged(msgs, [])
    attribution = attribute(msgs, Timeline([], cpu_rows(3000, waiting=0.5)), BUDGET)
    assert attribution.share_of(Cause.CPU_STARVED) >= 0.45
    assert attribution.share_of(Cause.CONSUMER_SATURATED) < plain.share_of(Cause.CONSUMER_SATURATED)


def test_messages_queued_at_the_broker_while_the_node_could_not_run_are_the_nodes():
    """Prefetch 1: while n1 waited 200 ms for a CPU the messages stayed at the broker; the
    mq hop is long, and the node is charged, not RabbitMQ."""
    msgs = consumer(service_ms=4, stall=(1000, 1200))
    events = [event(EventKind.LOOP_STALL, "n1", 1000, 1200, **STARVED),
              event(EventKind.WINDOW_FULL, "n1", 1000, 1200, queue="q", prefetch=1)]
    said, attribution = judged(msgs, events)
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.CPU_STARVED), attribution.shares
    assert attribution.share_of(Cause.BROKER_SIDE) < 0.05
    assert "waited for a CPU" in said.prose


def test_a_node_starved_while_messages_waited_in_the_broker_is_not_charged_for_them():
    """80 ms in RabbitMQ for every message while n1's loop waited for a CPU 30% of the time:
    the node was not behind, so its waits delayed nothing."""
    msgs = messages(mq=80)
    attribution = attribute(msgs, Timeline([], cpu_rows(2000, waiting=0.3)), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE
    assert attribution.share_of(Cause.BROKER_SIDE) > 0.95


def test_the_culprit_is_the_one_whose_causes_explain_the_most():
    """The seed's cliff as it was misread: RabbitMQ's largest single cause, the server's
    three causes larger together."""
    from mqprobe.figures import Attribution
    from mqprobe.verdict.analysis import top_culprit

    attribution = Attribution({}, "over-budget", 10, 10, 100.0, [
        Share(Cause.BROKER_SIDE, 0.37, 37), Share(Cause.SERVER_STALL, 0.32, 32),
        Share(Cause.CONSUMER_SATURATED, 0.20, 20), Share(Cause.GC_PAUSE, 0.11, 11)])
    assert top_culprit(attribution) == (Culprit.SERVER, pytest.approx(0.63))
    facts = RunFacts.of(record(**run_of(messages())), [], T0)
    said = verdict(facts, attribution, BUDGET)
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.SERVER_STALL)
    assert "server causes 63% in all" in said.prose and "mq: broker-side (37%)" in said.prose


def test_a_message_still_in_rabbitmq_when_a_stall_ended_is_not_the_stalls():
    """Every message 80 ms in RabbitMQ and a 50 ms stall on n1: those published before
    the stall ended and read just after it were still in RabbitMQ when it ended (the first
    message published after it took 80 ms too), so the stall is charged only the time it
    overlapped their wait, never their whole wait from its start."""
    msgs = messages(mq=80)
    said, attribution = judged(msgs, [event(EventKind.LOOP_STALL, "n1", 500, 550, cpu_share=0.1)])
    shares = {s.cause: s.share for s in attribution.shares}
    assert said.cause == Cause.BROKER_SIDE and Cause.CONSUMER_SATURATED not in shares, shares
    assert shares.get(Cause.SERVER_STALL, 0) < 0.01, shares


def test_ready_messages_in_a_nodes_queue_are_that_nodes_backlog():
    """Prefetch 1 on a slow host: the full windows are parted by ack round trips, but the
    broker held ready messages in n1's queue throughout: the wait is the consumer's."""
    msgs = consumer(count=100, service_ms=12)
    for m in msgs:  # the backlog waited at the broker, not in the node (prefetch 1)
        m.t_deq, m.wait_ns = m.t_emit - int(0.05 * MS), 0
    windows = [event(EventKind.WINDOW_FULL, "n1", i * 12 + 2, i * 12 + 6, queue="q", prefetch=1)
               for i in range(100)]
    backlog = event(EventKind.QUEUE_BACKLOG, "broker", 50, 1300, queue="q", node="n1", ready_max=9)
    without, _ = judged(msgs, windows)
    said, attribution = judged(msgs, [*windows, backlog])
    assert without.cause == Cause.BROKER_SIDE  # the windows alone, parted by 8 ms gaps
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.CONSUMER_SATURATED)
    other = event(EventKind.QUEUE_BACKLOG, "broker", 50, 1300, queue="q2", node="n2", ready_max=9)
    assert judged(msgs, [*windows, other])[0].cause == Cause.BROKER_SIDE  # another node's


def test_a_throttled_node_is_named_throttled():
    """n1's cgroup quota held its loop back through the stalls: cpu-throttled, not blocked."""
    throttled = {"on_cpu_ms": 20.0, "waiting_ms": 5.0, "throttled_ms": 75.0, "off_cpu_ms": 0.0}
    msgs = consumer(service_ms=4, stall=(1000, 1100))
    said, _ = judged(msgs, [event(EventKind.LOOP_STALL, "n1", 1000, 1100, **throttled)])
    assert (said.culprit, said.cause) == (Culprit.SERVER, Cause.CPU_THROTTLED)
    assert "CPU quota" in said.prose and "75 ms throttled" in said.prose


@pytest.mark.parametrize(("parts", "cause"), [
    ({}, Cause.GC_PAUSE),  # no counters: the collector's
    ({"on_cpu_ms": 145.0, "waiting_ms": 5.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0},
     Cause.GC_PAUSE),
    ({"on_cpu_ms": 8.0, "waiting_ms": 142.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0},
     Cause.CPU_STARVED)])
def test_a_collection_stretched_by_a_wait_for_a_cpu_is_the_wait(parts, cause):
    msgs = consumer(service_ms=4, stall=(1000, 1150))
    said, _ = judged(msgs, [event(EventKind.GC, "n1", 1000, 1150, generation=2, **parts)])
    assert said.cause == cause, said


def test_a_busy_loop_is_not_called_an_idle_consumer():
    """The seed's cliff as it was misread: callbacks idle, the loop computing flat out."""
    run = run_of(messages(mq=80))
    run["nodes"][0]["loop_cpu"] = {"source": "schedstat", "on_cpu": 0.93, "waiting": 0.05,
                                   "throttled": 0.0}
    said = verdict(RunFacts.of(record(**run), [], T0), attribute(messages(mq=80), [], BUDGET), BUDGET)
    line = next(line for line in said.evidence if "busy ratio max" in line)
    assert "n1's loop was busy 98% of the run" in line and "consumers mostly idle" not in line
    assert "n1 loop computed 93% of the run and waited for a CPU 5%" in said.evidence


def test_a_slow_handler_on_a_starved_host_is_still_the_handler():
    """Every message's handler awaits 60 ms while the node's loop waits for a CPU 40% of
    the time (for other work): the handler's own span is not charged to the starvation."""
    msgs = messages(server=60)
    attribution = attribute(msgs, Timeline([], cpu_rows(2000, waiting=0.4, on=0.1)), BUDGET)
    assert attribution.shares[0].cause == Cause.SLOW_HANDLER, attribution.shares
    assert attribution.share_of(Cause.CPU_STARVED) < 0.05


def test_the_waits_of_a_mostly_idle_loop_cost_little_of_a_backlog():
    """The same backlog, the same 10% of waiting: a loop busy 20% of each window (awaiting
    its handlers) lost less service to it than one busy all the time (computing)."""
    msgs = consumer(service_ms=12)
    idle = attribute(msgs, Timeline([], cpu_rows(3000, waiting=0.1, on=0.1)), BUDGET)
    busy = attribute(msgs, Timeline([], cpu_rows(3000, waiting=0.1, on=0.9)), BUDGET)
    assert idle.share_of(Cause.CPU_STARVED) < busy.share_of(Cause.CPU_STARVED) / 3
    assert idle.shares[0].cause == Cause.CONSUMER_SATURATED


def test_a_loop_computing_through_a_backlog_is_the_consumer_working_not_a_stall():
    """Every 20 ms a stall of 8, three quarters of it the loop computing (serving the
    backlog through many callbacks, none of which held it) and a quarter waiting for a CPU.
    The consumer needs 12 ms a message, one arrives every 10: saturated; the waits (10% of
    the time) stretch its service to 13.3 ms. Without them its wait would grow 0.2 ms a ms,
    with them 0.33: the starvation's share of the wait is 40%, the rest the consumer's, and
    the computing is the consumer's work, not a stall."""
    msgs = consumer(service_ms=12 / 0.9)
    parts = {"on_cpu_ms": 6.0, "waiting_ms": 2.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0}
    ticks = [event(EventKind.LOOP_STALL, "n1", t, t + 8, **parts) for t in range(0, 3600, 20)]
    attribution = attribute(msgs, ticks, BUDGET)
    assert attribution.share_of(Cause.SERVER_STALL) == 0
    assert attribution.shares[0].cause == Cause.CONSUMER_SATURATED, attribution.shares
    assert attribution.share_of(Cause.CPU_STARVED) == pytest.approx(0.4, abs=0.08)
    held = {**parts, "held_by": "mqprobe/pieces/node.py:192 in _stall: pass"}  # one callback held it
    ticks = [event(EventKind.LOOP_STALL, "n1", t, t + 8, **held) for t in range(0, 3600, 20)]
    assert attribute(msgs, ticks, BUDGET).share_of(Cause.SERVER_STALL) > 0.3


def test_what_began_a_backlog_is_charged_before_what_slowed_its_drain():
    """A 200 ms stall, then a drain on a loop that waits for a CPU 30% of the time: each
    message's wait goes first to the stall that built the backlog it waited in."""
    msgs = consumer(service_ms=9, stall=(1000, 1200))
    events = [event(EventKind.LOOP_STALL, "n1", 1000, 1200, **BLOCKED)]
    attribution = attribute(msgs, Timeline(events, cpu_rows(4000, waiting=0.3, on=0.6)), BUDGET)
    assert attribution.shares[0].cause == Cause.SERVER_STALL, attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) > 2 * attribution.share_of(Cause.CPU_STARVED)


def test_a_stall_on_a_crowded_host_is_charged_before_the_waits_that_slowed_its_drain():
    """Beside a CPU hog: a 200 ms stall, then a drain on a loop that waits for a CPU 35%
    of the time (9 ms of work a message takes 13.8), seen as short stalls spent mostly
    waiting (14 ms in every 40). The waits came because the loop had a backlog to work
    on: they slowed the drain the stall began, so the stall is charged first, and the
    waits only for what a wait took beyond it (this read cpu-starved 3 times in 5)."""
    msgs = consumer(every_ms=20, service_ms=9 / 0.65, stall=(1000, 1200))
    waiting = {"on_cpu_ms": 2.0, "waiting_ms": 12.0, "throttled_ms": 0.0, "off_cpu_ms": 0.0}
    events = [event(EventKind.LOOP_STALL, "n1", 1000, 1200, **BLOCKED)]
    events += [event(EventKind.LOOP_STALL, "n1", t, t + 14, **waiting)
               for t in range(0, 6000, 40) if not 990 <= t < 1200]
    attribution = attribute(msgs, Timeline(events, cpu_rows(6000, waiting=0.35, on=0.5)), BUDGET)
    assert attribution.shares[0].cause == Cause.SERVER_STALL, attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) > 1.5 * attribution.share_of(Cause.CPU_STARVED)


# One core 0.9+ full (the matrix's one-core condition): the node waits for a CPU most of
# the run, so its backlog lasts seconds and holds every collection and stall of the run.
ONE_CORE_MS = 5000
COLLECTING = {"on_cpu_ms": 3.5, "waiting_ms": 0.5, "throttled_ms": 0.0, "off_cpu_ms": 0.0}


def _one_core(stalls: list[tuple[float, float]] = ()) -> tuple[list, list, dict]:
    """500 messages, one every 10 ms, to a consumer whose work the waits for a CPU (60% of
    each window) stretch to 11 ms a message: behind from the start, never caught up. A
    4 ms collection every 40 ms, the way a node collects 117 times in 5 s."""
    msgs = consumer(count=500, service_ms=11, stall=list(stalls))
    events = [event(EventKind.GC, "n1", t, t + 4, generation=0, **COLLECTING)
              for t in range(20, ONE_CORE_MS, 40)
              if not any(a - 5 <= t < b for a, b in stalls)]
    events += [event(EventKind.LOOP_STALL, "n1", a, b, **BLOCKED) for a, b in stalls]
    return msgs, events, cpu_rows(ONE_CORE_MS + 2000, waiting=0.6, on=0.3)


def test_a_starved_backlog_that_lasts_seconds_is_the_starvation_not_its_collections():
    """Each message of a backlog seconds long is not charged every collection since it
    began: they are a tenth of the time the loop lost, the waits for a CPU six tenths
    (two clean socketio-manager runs on one core said gc-pause 64% and 79%)."""
    msgs, events, rows = _one_core()
    assert min(m.wait_ns for m in msgs[100:]) > 50 * MS  # behind all along
    attribution = attribute(msgs, Timeline(events, rows), BUDGET)
    assert attribution.shares[0].cause == Cause.CPU_STARVED, attribution.shares
    assert attribution.share_of(Cause.GC_PAUSE) < 0.3, attribution.shares


def test_a_stall_every_second_inside_a_starved_backlog_is_still_the_stall():
    """The same starved node, blocked 200 ms every second (stall=200ms/1s on one core): the
    stalls are no opening of the backlog, yet each alone held the node longer than the
    budget, so they are charged before the starvation they fell in."""
    stalls = [(t, t + 200) for t in range(1000, ONE_CORE_MS, 1000)]
    msgs, events, rows = _one_core(stalls)
    attribution = attribute(msgs, Timeline(events, rows), BUDGET)
    assert attribution.shares[0].cause == Cause.SERVER_STALL, attribution.shares


def broker_cpu(waited_ms: float = 60, most_ms: float = 50, throttled_ms: float = 0,
               on_ms: float = 20, quota: float | None = None, between: tuple = (800, 1400),
               quiet_waited_ms: float = 0.5, quiet_on_ms: float = 1.0,
               busiest_ms: float | None = None) -> BrokerCpu:
    """compare's samples of a local broker, 100 ms windows over 2.1 s: in the windows
    `between` (ms) its schedulers ran `on_ms` (the busiest one `busiest_ms`, by default
    all of it), waited `waited_ms` for a CPU (the longest one `most_ms`) and its cgroup
    throttled it `throttled_ms`; elsewhere they ran `quiet_on_ms` and waited
    `quiet_waited_ms` (the longest one all of it)."""
    rows = []
    for t in range(0, 2100, 100):
        inside = between[0] <= t < between[1]
        on, waited, most, held, busiest = (
            (on_ms, waited_ms, most_ms, throttled_ms, on_ms if busiest_ms is None else busiest_ms)
            if inside else (quiet_on_ms, quiet_waited_ms, quiet_waited_ms, 0, quiet_on_ms))
        rows.append((T0 + t * MS, 100 * MS, int(on * MS), int(waited * MS), int(most * MS),
                     int(held * MS), int(busiest * MS)))
    return BrokerCpu(tuple(rows), quota, True)


def _footprint(n1_ms_a_window: float = 80, host_ms_a_window: float = 0) -> object:
    """compare's samples of who had the CPU: the broker 20 ms a window, n1 `n1_ms_a_window`,
    and with `host_ms_a_window` the host's busy CPU (all cores) beside them."""
    from mqprobe.watch.footprint import CpuSampler

    footprint = CpuSampler({"broker": [], "n1": []})
    footprint.times = [T0 + t * 100 * MS for t in range(21)]
    footprint.used["broker"] = [t * 20 * MS for t in range(21)]
    footprint.used["n1"] = [int(t * n1_ms_a_window * MS) for t in range(21)]
    busy = host_ms_a_window or 20 + n1_ms_a_window
    footprint.host = [((t + 1) * 200 * MS, int(t * busy * MS), 0) for t in range(21)]
    return footprint


# messages that spent 60 ms in RabbitMQ from 1.0 s to 1.2 s, 1 ms elsewhere
BROKER_TAIL = {i: {"mq": 60} for i in range(50, 60)}


@pytest.mark.parametrize(("waited_ms", "most_ms", "cause"), [
    (60, 50, Cause.BROKER_STARVED),  # its schedulers waited 60 ms a window beside 20 run
    (2, 1, Cause.BROKER_SIDE)])  # a broker that ran when it was ready keeps broker-side
def test_a_broker_that_waited_for_a_cpu_is_charged_what_its_schedulers_waited(
        waited_ms, most_ms, cause):
    """A message's time in RabbitMQ is charged by the share of their ready time its
    schedulers waited for a CPU (75% here), and never more of a window than the longest any
    one of them waited in it."""
    attribution = attribute(messages(slow=BROKER_TAIL),
                            Timeline([], broker=broker_cpu(waited_ms, most_ms)), BUDGET)
    assert attribution.shares[0].cause == cause, attribution.shares
    if cause == Cause.BROKER_STARVED:  # 59 ms over the floor, 45 of it waiting
        assert attribution.share_of(cause) == pytest.approx(0.76, abs=0.04)
    else:  # at most 1 ms of each window
        assert attribution.share_of(Cause.BROKER_STARVED) < 0.08


def test_a_message_on_the_wire_is_not_charged_as_a_broker_that_waited_for_a_cpu():
    """The issue's quiet host: every message 40 ms in the mq hop (a slow link), RabbitMQ's
    schedulers ran 1 ms a window and waited 2 ms for a CPU, the wake-up latency of a
    mostly idle broker: 67% of their ready time, 2% of the wall. Taken as a share of the
    message's whole span, that read as broker-starved 67%; charged as what was measured,
    at most 1.5 ms of each window, it is a few per cent."""
    quiet = broker_cpu(between=(0, 0), quiet_on_ms=1, quiet_waited_ms=2)
    attribution = attribute(messages(mq=40), Timeline([], broker=quiet), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE, attribution.shares
    assert attribution.share_of(Cause.BROKER_STARVED) < 0.1, attribution.shares


def test_a_broker_held_back_by_its_own_quota_is_throttled_not_starved():
    """RabbitMQ under a CPU quota of its own (a pod's CPU limit): its cgroup throttled it
    60 ms of each window, and its schedulers' waits were the throttling (the sampler
    takes that off each thread's wait). The verdict names the quota to raise, not who had
    the CPU: nobody took it."""
    msgs = messages(slow=BROKER_TAIL)
    held_back = broker_cpu(waited_ms=0, most_ms=0, throttled_ms=60, quota=0.05)
    attribution = attribute(msgs, Timeline([], broker=held_back), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_THROTTLED, attribution.shares
    assert attribution.share_of(Cause.BROKER_THROTTLED) == pytest.approx(0.6, abs=0.05)
    assert attribution.share_of(Cause.BROKER_STARVED) == 0
    facts = RunFacts.of(record(**run_of(msgs)), [], T0, broker_cpu=held_back,
                        used=_footprint().used_rows())
    said = verdict(facts, attribution, BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_THROTTLED)
    assert "CPU quota (5% of a CPU) 360 ms in the run" in said.prose, said.prose
    assert "raise the broker's CPU limit" in said.prose
    assert "put the swarms" not in said.prose and "meanwhile the CPU went" not in said.prose
    assert "its cgroup's CPU quota is 5% of a CPU, and held it back 360 ms in the run" in (
        said.evidence)


@pytest.mark.parametrize(("counters", "cause"), [
    # its schedulers waited for a CPU 90 ms of each 100 (one core 97% busy): starved
    ({"waited_ms": 90, "most_ms": 90, "on_ms": 5}, Cause.BROKER_STARVED),
    # its quota held it back as long: throttled
    ({"waited_ms": 0, "most_ms": 0, "throttled_ms": 90, "on_ms": 5}, Cause.BROKER_THROTTLED),
    # it was ready to run little and waited little: nothing of its own explains the
    # silence (an Erlang pause, a wedged process), so it stays unavailable
    ({"waited_ms": 1, "most_ms": 1, "on_ms": 1}, Cause.BROKER_UNAVAILABLE)])
def test_a_span_rabbitmq_did_not_answer_in_is_what_its_own_counters_measured(counters, cause):
    """A depth sample unanswered for 600 ms while the messages waited: a symptom. On one
    core 97% busy, a clean run read 'broker-unavailable' 40% though RabbitMQ had waited for
    a CPU 94% of its ready time; the span is charged to what its counters say held it."""
    msgs = messages(slow={i: {"mq": 600 - (i - 40) * 10} for i in range(40, 60)})
    silent = [event(EventKind.BROKER_UNAVAILABLE, "broker", 800, 1400, unresponsive=True)]
    attribution = attribute(msgs, Timeline(silent, broker=broker_cpu(**counters)), BUDGET)
    assert attribution.shares[0].cause == cause, attribution.shares
    assert attribution.shares[0].share > 0.8, attribution.shares


def test_a_broker_seen_stopped_is_unavailable_whatever_its_counters_say():
    msgs = messages(slow={i: {"mq": 600 - (i - 40) * 10} for i in range(40, 60)})
    stopped = [event(EventKind.BROKER_UNAVAILABLE, "broker", 800, 1400, unresponsive=True,
                     stopped=True)]
    starved = broker_cpu(waited_ms=90, most_ms=90, on_ms=5)
    attribution = attribute(msgs, Timeline(stopped, broker=starved), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_UNAVAILABLE, attribution.shares


@pytest.mark.parametrize(("host_ms", "says"), [
    (0, "meanwhile the CPU went to n1 80% (of one core)"),  # n1 had the CPU
    (220, "meanwhile the CPU went to other processes 120%, n1 80% (of one core)")])  # a hog
def test_a_starved_broker_names_who_had_the_cpu_and_what_it_waited(host_ms, says):
    """broker-starved says how long RabbitMQ's schedulers waited and who had the CPU in
    the windows they waited most, the host's busy CPU beyond the run's pieces counted as
    other processes (a hog pinned beside the broker is no piece of the run)."""
    msgs = messages(slow=BROKER_TAIL)
    starved = broker_cpu()
    attribution = attribute(msgs, Timeline([], broker=starved), BUDGET)
    facts = RunFacts.of(record(**run_of(msgs)), [], T0, broker_cpu=starved,
                        used=_footprint(host_ms_a_window=host_ms).used_rows())
    said = verdict(facts, attribution, BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_STARVED)
    assert ("waited for a CPU that other processes had: RabbitMQ's schedulers waited for a "
            "CPU 368 ms in the run (73% of the time they were ready to run); meanwhile") in said.prose
    assert says in said.prose, said.prose
    assert "broker 20%" not in said.prose  # not itself
    assert ("RabbitMQ's schedulers waited for a CPU 368 ms in the run (73% of the time they "
            "were ready to run), one of them at most 50.0 ms of any 100 ms (no message in "
            "RabbitMQ is charged more of a window than that)") in said.evidence


def test_a_broker_whose_scheduler_computed_through_the_window_was_busy_with_its_own_work():
    """One of RabbitMQ's schedulers computed 95 ms of each 100 ms window (a hot queue is one
    process, on one scheduler), and waited little: what its waits leave of a message's
    time in RabbitMQ went to its own work, and the verdict names the queue it held."""
    msgs = messages(slow=BROKER_TAIL)
    busy = broker_cpu(waited_ms=2, most_ms=2, on_ms=120, busiest_ms=95)
    attribution = attribute(msgs, Timeline([], broker=busy), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_BUSY, attribution.shares
    assert attribution.share_of(Cause.BROKER_BUSY) > 0.9
    run = run_of(msgs)
    run["evidence"]["broker"] |= {"max_ready": 900, "max_ready_queue": "groups.hot"}
    said = verdict(RunFacts.of(record(**run), [], T0, broker_cpu=busy), attribution, BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_BUSY)
    assert said.prose.startswith(
        "RabbitMQ's own work held the messages: one of its schedulers computed through 6 of "
        "the run's 21 windows of 100 ms; its deepest queue, groups.hot, held 900 ready"), said.prose
    assert "spread a hot queue's load over more queues" in said.prose


def test_a_broker_side_wait_says_which_of_rabbitmqs_signals_were_quiet():
    """A wait nothing measured explains stays broker-side, and the evidence says what was
    ruled out: no quota, no wait for a CPU worth the name, no scheduler computing through,
    steady links."""
    msgs = messages(mq=80)
    quiet = broker_cpu(between=(0, 0))
    links = {"publisher": [[T0 + t * MS, int(0.5 * MS), 9000] for t in range(0, 2100, 500)]}
    said = verdict(RunFacts.of(record(**run_of(msgs)), [], T0, broker_cpu=quiet, links=links),
                   attribute(msgs, Timeline([], broker=quiet, links=links), BUDGET), BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_SIDE)
    assert ("quiet in RabbitMQ meanwhile: its quota never held it back; no scheduler waited "
            "more than 0.5 ms of any window; none computed through a window; the links' round "
            "trips stayed near their quietest (p99 at most 0.5 ms); no alarm, no flow control"
            ) in said.evidence, said.evidence


def test_a_broker_elsewhere_says_its_counters_cannot_be_seen():
    """A broker on another host: no quota, no waits to read; the evidence says so instead
    of reading their absence as a broker that ran when it was ready."""
    msgs = messages(mq=80)
    said = verdict(RunFacts.of(record(**run_of(msgs)), [], T0), attribute(msgs, [], BUDGET),
                   BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.BROKER_SIDE)
    assert any(line.startswith("RabbitMQ is not a process on this host: its CPU quota and its "
                               "waits for a CPU cannot be seen from here") for line in said.evidence)


def test_a_delay_queue_on_a_starved_broker_is_still_the_brokers_hold():
    """broker-delay=80ms beside a hog: the TTL queue held every message 80 ms by design,
    starved or not; only what came after it may be the starvation's."""
    held = [event(EventKind.QUEUE_BACKLOG, "broker", -100, 2100, queue="groups.delay", node="",
                  ready_max=5)]
    attribution = attribute(messages(mq=80), Timeline(held, broker=broker_cpu()), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE, attribution.shares
    assert attribution.share_of(Cause.BROKER_STARVED) < 0.02


@pytest.mark.parametrize(("on", "waiting", "cause"), [
    (0.3, 0.7, Cause.CPU_STARVED),  # ready to run all along, mostly waiting for a CPU
    (0.9, 0.05, Cause.CONSUMER_SATURATED),  # ready all along, computing: its own work
    (0.2, 0.3, Cause.BROKER_SIDE)])  # half asleep in its poll: it would have read a message
def test_a_message_waiting_to_be_read_by_a_loop_that_never_slept_is_the_nodes(on, waiting, cause):
    """On one core, fanout per group: 40 ms before every dequeue, no ready messages in the
    queues, no full window. A loop ready to run through whole windows was behind: the
    message sat unread in its socket, not in RabbitMQ, and the loop's waits for a CPU take
    their share of that wait, never more (a loop that computed 90% of each window and
    waited 5% is its own work, not a starved one)."""
    attribution = attribute(messages(mq=40), Timeline([], cpu_rows(2000, waiting=waiting, on=on)),
                            BUDGET)
    assert attribution.shares[0].cause == cause, attribution.shares
    if cause == Cause.CONSUMER_SATURATED:
        assert attribution.share_of(Cause.CPU_STARVED) < 0.1, attribution.shares


def test_a_stall_long_past_is_not_charged_to_a_busy_loops_later_waits():
    """A 200 ms stall at 100 ms, then a loop that computed through every window: messages a
    second later waited behind its work, not behind a stall it drained long before."""
    late = {i: {"mq": 40} for i in range(60, 100)}
    msgs = messages(slow=late)
    events = [event(EventKind.LOOP_STALL, "n1", 100, 300, **BLOCKED)]
    attribution = attribute(msgs, Timeline(events, cpu_rows(2000, waiting=0.05, on=0.9)), BUDGET)
    assert attribution.shares[0].cause == Cause.CONSUMER_SATURATED, attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) < 0.05


PAUSED = {"on_cpu_ms": 4.0, "waiting_ms": 45.0, "throttled_ms": 0.0, "off_cpu_ms": 46.0}


def _paused_machine(n1: dict, n2: dict) -> list:
    """As the machine was in one clean run in 35: the publisher, the swarm and both nodes
    stopped within 7 ms of each other for 73-95 ms."""
    return paused_together([
        event(EventKind.LOOP_STALL, "publisher", 995, 1068, cpu_share=0.01),
        event(EventKind.LOOP_STALL, "swarm1", 998, 1086, cpu_share=0.02),
        event(EventKind.LOOP_STALL, "n1", 1000, 1095, **n1),
        event(EventKind.LOOP_STALL, "n2", 1002, 1091, **n2)])


def test_every_process_stalled_at_once_is_the_machine_not_a_blocking_call():
    """No code, lock or quota is shared by the swarm, the publisher and the nodes: stopped
    together, mostly off the CPU, the machine paused them. The verdict must not send the
    user hunting for a synchronous call (it said server-stall, "blocked")."""
    msgs = messages(slow={i: {"mq": 1095 - 20 * i} for i in range(50, 55)})
    events = _paused_machine(PAUSED, {**PAUSED, "waiting_ms": 20.0, "off_cpu_ms": 66.0})
    assert [e.detail.get(PAUSED_WITH) for e in events] == [
        ["n1", "n2", "swarm1"], ["n1", "n2", "publisher"], ["n2", "publisher", "swarm1"],
        ["n1", "publisher", "swarm1"]]
    said, attribution = judged(msgs, events)
    assert (said.culprit, said.cause) == (Culprit.CLIENT, Cause.HOST_PAUSE), attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) == 0
    assert ("stopped at once: n1, n2, publisher, swarm1 together 1.0 s into the run for "
            "73-95 ms (n1: 4 ms computing, 45 ms waiting for a CPU, 46 ms off the CPU)") in said.prose


@pytest.mark.parametrize(("n1", "cause"), [
    (STARVED, Cause.CPU_STARVED),  # every loop waited for a CPU: a crowded host, not a pause
    ({**BLOCKED, "held_by": "mqprobe/pieces/inject.py:41 in _stall: time.sleep"}, Cause.SERVER_STALL)])
def test_stalls_together_that_waited_for_a_cpu_or_ran_code_are_not_a_pause(n1, cause):
    msgs = messages(slow={i: {"mq": 1095 - 20 * i} for i in range(50, 55)})
    said, attribution = judged(msgs, _paused_machine(n1, STARVED))
    assert said.cause == cause, attribution.shares


def test_a_long_stall_beside_short_ones_of_others_is_not_shared():
    """An injected 200 ms stall on n1 while the swarm and the publisher each lag 25 ms on
    a crowded host: alike neither in start nor in length, so not one pause."""
    events = paused_together([event(EventKind.LOOP_STALL, "n1", 1000, 1200, **BLOCKED),
                              event(EventKind.LOOP_STALL, "swarm1", 1050, 1075, cpu_share=0.5),
                              event(EventKind.LOOP_STALL, "publisher", 1060, 1085, cpu_share=0.5)])
    assert not any(e.detail.get(PAUSED_WITH) for e in events)


def test_a_busy_loop_was_behind_before_its_stall_began():
    """One core, fanout per group: the loop ready to run through every window and
    stalling 20 ms now and then. A message dequeued in such a stall had waited unread
    since long before it began, behind the same busy loop: all of it the node's."""
    stalls = [event(EventKind.LOOP_STALL, "n1", t, t + 20, **STARVED) for t in range(50, 2000, 100)]
    attribution = attribute(messages(mq=60), Timeline(stalls, cpu_rows(2000, waiting=0.7, on=0.3)),
                            BUDGET)
    assert attribution.shares[0].cause == Cause.CPU_STARVED, attribution.shares
    assert attribution.share_of(Cause.BROKER_SIDE) < 0.05, attribution.shares


def test_a_busy_loop_does_not_take_a_wait_that_rabbitmq_held_in_a_delay_queue():
    """80 ms in a TTL queue for every message (broker-delay) on a crowded host where the
    node's loop was ready to run through every window: RabbitMQ held ready messages in a
    queue no node consumes all along, so the message may have been there; it stays the
    broker's."""
    cpu = cpu_rows(2000, waiting=0.7, on=0.3)
    held = [event(EventKind.QUEUE_BACKLOG, "broker", -100, 2100, queue="groups.delay", node="",
                  ready_max=5)]
    attribution = attribute(messages(mq=80), Timeline(held, cpu), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE, attribution.shares
    assert attribution.share_of(Cause.BROKER_SIDE) > 0.9


def test_a_node_behind_all_along_does_not_take_what_a_message_spent_in_a_delay_queue():
    """One core, broker-delay=80ms, at fcdb98e: the node was behind all along (each
    message waited in its own backlog until the next came), so its backlog began before a
    message could have left the 80 ms TTL queue, and cpu-starved took 45% of the tail to
    broker-side's 42%. No message got through RabbitMQ in less than 85 ms while it held
    messages in a queue no node consumes: that much of each trip is the broker's."""
    cpu = cpu_rows(2000, waiting=0.5, on=0.3)
    held = [event(EventKind.QUEUE_BACKLOG, "broker", -100, 2100, queue="groups.delay", node="",
                  ready_max=5)]
    msgs = messages(wait=25, slow={i: {"mq": 85 + (i % 5) * 10} for i in range(100)})
    attribution = attribute(msgs, Timeline(held, cpu), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE, attribution.shares
    assert attribution.share_of(Cause.BROKER_SIDE) > 0.7, attribution.shares
    assert attribution.share_of(Cause.CPU_STARVED) > 0.05  # the node's part is still its own


# Two nodes on one core (the matrix's one-core stall=200ms/1s): n1 blocks 200 ms every
# second, then catches up on what piled up, computing; n2, beside it, waits for the CPU
# while n1 catches up. One clean-looking run in five read `cpu-starved` for it.
CATCH_UP = [(t + 200, t + 300) for t in (1000, 2000, 3000)]


def _beside_a_stalled_node(n1_share: float, stalls: bool = True, service_ms: float = 5
                           ) -> tuple[list, list, list, dict, dict]:
    """n1's messages (stalled, then drained, or with `stalls` False never stalled) and n2's:
    those published while n1 catches up wait 60 ms in n2's backlog; n1's stall events; n2's
    loop CPU windows; compare's samples: the core full then, n1 with `n1_share` of it and n2
    with 20%, half used otherwise."""
    starts = (1000, 2000, 3000) if stalls else ()
    n1 = consumer(count=400, service_ms=service_ms, stall=[(t, t + 200) for t in starts])
    catching = lambda t: any(a <= t < b for a, b in CATCH_UP)  # noqa: E731
    n2 = [MessageDeliveries("2", i, "n2", "swarm1", T0 + i * 10 * MS, T0 + (i * 10 + 1) * MS,
                            T0 + (i * 10 + 1 + wait + 5) * MS, [(2 * MS, 50)], wait * MS,
                            int(0.3 * MS))
          for i in range(400) for wait in [60 if catching(i * 10) else 0]]
    events = [event(EventKind.LOOP_STALL, "n1", t, t + 200, **BLOCKED) for t in starts]
    windows = range(0, 4000, 100)
    cpu = {"n2": [[T0 + t * MS, 100 * MS, 20 * MS, (70 if catching(t) else 5) * MS, 0]
                  for t in windows]}
    used = {"host": [[T0 + t * MS, 100 * MS, (100 if catching(t) else 50) * MS] for t in windows],
            "n1": [[T0 + t * MS, 100 * MS, int((n1_share * 100 if catching(t) else 20) * MS)]
                   for t in windows],
            "n2": [[T0 + t * MS, 100 * MS, 20 * MS] for t in windows]}
    return n1, n2, events, cpu, used


@pytest.mark.parametrize(("n1_share", "cause"), [
    (0.8, Cause.SERVER_STALL),  # n1 had the CPU n2 waited for: its stall began that
    (0.2, Cause.CPU_STARVED)])  # beside a hog: n1 had a quarter of what others used
def test_a_wait_for_the_cpu_a_stalled_node_took_to_catch_up_is_the_stall(n1_share, cause):
    from mqprobe.verdict.attribution import Charger

    n1, n2, events, cpu, used = _beside_a_stalled_node(n1_share)
    charger = Charger(Timeline(events, cpu, used), n1 + n2, BUDGET * MS)
    attribution = attribute(n2, charger, BUDGET)
    assert attribution.shares[0].cause == cause, attribution.shares
    # the evidence says what was measured: n1's catching up, n2's waits meanwhile
    line, = charger.catch_up_lines()
    assert line.startswith("n1 spun or caught up after its stalls, collections, storms of "
                           "connections or waves of pings for ")
    # 63 ms in each window n1 caught up in (70 ms, 90% ready), about 1 in each other
    assert "n2 waited for a CPU 200 ms" in line, line
    if cause == Cause.CPU_STARVED:  # n1's quarter is its stall's
        assert 0.15 < attribution.share_of(Cause.SERVER_STALL) < 0.35, attribution.shares
    # without compare's samples of who had the CPU, the waits are the starvation
    alone = attribute(n2, Charger(Timeline(events, cpu), n1 + n2, BUDGET * MS), BUDGET)
    assert alone.shares[0].cause == Cause.CPU_STARVED, alone.shares
    assert alone.share_of(Cause.SERVER_STALL) == 0


@pytest.mark.parametrize(("n1_share", "cause"), [(0.8, Cause.SERVER_STALL),
                                                 (0.2, Cause.BROKER_STARVED)])
def test_rabbitmqs_wait_for_the_cpu_a_stalled_node_took_is_the_stall_too(n1_share, cause):
    """The one-core matrix's spin=200ms/1s: while n1 caught up after its stall, RabbitMQ's
    schedulers waited for the CPU, and n2's messages waited in RabbitMQ (60 ms). The wait
    began with n1's stall, as a neighbouring node's does (one run in five read
    broker-starved); beside a hog (n1 a fifth of what others used) it stays RabbitMQ's
    starvation."""
    from mqprobe.verdict.attribution import Charger

    n1, _n2, events, cpu, used = _beside_a_stalled_node(n1_share)
    catching = lambda t: any(a <= t < b for a, b in CATCH_UP)  # noqa: E731
    n2 = [MessageDeliveries("2", i, "n2", "swarm1", T0 + i * 10 * MS,
                            T0 + (i * 10 + (60 if catching(i * 10) else 1)) * MS,
                            T0 + (i * 10 + (60 if catching(i * 10) else 1) + 0.05) * MS,
                            [(2 * MS, 50)], 0, int(0.3 * MS)) for i in range(400)]
    broker = BrokerCpu(tuple(
        (T0 + t * MS, 100 * MS, 10 * MS, (60 if catching(t) else 0) * MS,
         (60 if catching(t) else 0) * MS, 0, 10 * MS) for t in range(0, 4000, 100)), None, True)
    used = used | {"broker": [[T0 + t * MS, 100 * MS, 10 * MS] for t in range(0, 4000, 100)]}
    idle_n2 = {"n2": [[T0 + t * MS, 100 * MS, 5 * MS, 0, 0] for t in range(0, 4000, 100)]}
    charger = Charger(Timeline(events, cpu | idle_n2, used, broker), n1 + n2, BUDGET * MS)
    attribution = attribute(n2, charger, BUDGET)
    assert attribution.shares[0].cause == cause, attribution.shares


def test_a_backlog_a_throttled_broker_released_is_the_throttling():
    """RabbitMQ under a 5% quota, throttled 90 ms of each window: it releases what it held
    in a burst, and n1's backlog (its prefetch window full) opens with it. Each wait in
    that backlog is the quota's up to the 90 ms it held RabbitMQ back (as a stall's would
    be), and only what a wait took beyond that the consumer's saturation."""
    burst = [(t, t + 300) for t in (1000, 2000)]
    in_burst = lambda t: any(a <= t < b for a, b in burst)  # noqa: E731
    msgs = messages(slow={i: {"mq": 200 - (i % 50) * 20}
                          for i in range(100) if in_burst(i * 20) and i % 50 < 10})
    events = [event(EventKind.WINDOW_FULL, "n1", t, t + 200, queue="q", prefetch=10)
              for t in (1000, 2000)]
    throttled = BrokerCpu(tuple(
        (T0 + t * MS, 100 * MS, 5 * MS, 0, 0, (90 if t in (900, 1900) else 0) * MS, 5 * MS)
        for t in range(0, 2100, 100)), 0.05, True)
    attribution = attribute(msgs, Timeline(events, broker=throttled), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_THROTTLED, attribution.shares
    assert attribution.share_of(Cause.BROKER_THROTTLED) > 0.6, attribution.shares
    unthrottled = BrokerCpu(tuple((*row[:5], 0, row[6]) for row in throttled.rows), None, True)
    alone = attribute(msgs, Timeline(events, broker=unthrottled), BUDGET)
    assert alone.shares[0].cause == Cause.CONSUMER_SATURATED, alone.shares


def test_a_node_busy_without_a_stall_takes_no_one_elses_waits():
    """n1 computing through the same windows with no stall behind it: n2's waits stay
    cpu-starved (a busy neighbour is no cause of its own)."""
    from mqprobe.verdict.attribution import Charger

    n1, n2, events, cpu, used = _beside_a_stalled_node(0.8, stalls=False)
    attribution = attribute(n2, Charger(Timeline(events, cpu, used), n1 + n2, BUDGET * MS), BUDGET)
    assert attribution.shares[0].cause == Cause.CPU_STARVED, attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) == 0


def test_a_stall_inside_a_backlog_it_did_not_begin_lends_no_catching_up():
    """n1 starved and behind all along (11 ms of work a message, one every 10 ms), blocked
    200 ms a second inside that backlog: it never caught up on those stalls, so n2's
    waits afterwards stay cpu-starved; only what n1 used during a stall itself could be."""
    from mqprobe.verdict.attribution import Charger

    n1, n2, events, cpu, used = _beside_a_stalled_node(0.8, service_ms=11)
    assert min(m.wait_ns for m in n1[100:]) > 0  # behind all along
    attribution = attribute(n2, Charger(Timeline(events, cpu, used), n1 + n2, BUDGET * MS), BUDGET)
    assert attribution.shares[0].cause == Cause.CPU_STARVED, attribution.shares
    assert attribution.share_of(Cause.SERVER_STALL) < 0.1, attribution.shares


def test_a_collection_inside_a_stall_is_caught_up_on_once():
    """A 130 ms collection inside a 200 ms stall: n1's catching up is counted once, so its
    CPU then is not charged twice against n2's waits."""
    from mqprobe.verdict.attribution import Charger

    n1, n2, events, cpu, used = _beside_a_stalled_node(0.8)
    events.append(event(EventKind.GC, "n1", 1050, 1180, generation=2))
    periods = Charger(Timeline(events, cpu, used), n1 + n2, BUDGET * MS).catching_up["n1"]
    assert all(a[1] <= b[0] for a, b in zip(periods, periods[1:], strict=False)), periods
    assert len(periods) == 3, periods  # inside the first stall's, the collection adds none


def pings(rtt_ms: float, tcp_ms: float = 0.1, until_ms: int = 2100, every_ms: int = 500,
          spoiled: dict | None = None) -> list[list[int]]:
    """A link's LinkWatch rows on our clock: a ping every `every_ms`, each `rtt_ms` round
    trip (`spoiled` maps a ping's time in ms to another), the kernel's `tcp_ms`."""
    return [[T0 + t * MS, int((spoiled or {}).get(t, rtt_ms) * MS), int(tcp_ms * MS)]
            for t in range(0, until_ms, every_ms)]


def test_a_link_that_holds_every_message_is_the_network():
    """link-delay=20ms: every piece's connection through a proxy holding each chunk 20 ms
    each way, compare's own straight to the broker. Each message's 52 ms in the mq hop is
    its publish leg and its deliver leg, 26 ms each: the links' own round trips, less what
    RabbitMQ took to answer compare (0.4 ms beyond the kernel's)."""
    links = {"publisher": pings(52), "n1": pings(52), "compare": pings(0.5)}
    attribution = attribute(messages(mq=52), Timeline([], links=links), BUDGET)
    assert attribution.shares[0].cause == Cause.NETWORK, attribution.shares
    assert attribution.share_of(Cause.NETWORK) > 0.95, attribution.shares


def test_one_slow_link_is_charged_to_the_messages_that_took_it():
    """link-delay=n1:30ms: only n1's deliver leg is slow; n2's messages are not charged."""
    msgs = messages(mq=31, node="n1") + messages(mq=1, node="n2")
    links = {"publisher": pings(0.5), "n1": pings(60.5), "n2": pings(0.5), "compare": pings(0.5)}
    charger = Charger(Timeline([], links=links), msgs, BUDGET * MS)
    floor = {"mq": 0.0, "server": 0.0, "delivery": 0.0}
    to_n1 = charger.head(msgs[10], floor)[0]
    to_n2 = charger.head(msgs[110], floor)[0]
    assert to_n1[Cause.NETWORK] == pytest.approx(30.25 * MS, rel=0.02), to_n1
    assert to_n2.get(Cause.NETWORK, 0) < 0.6 * MS, to_n2


def test_a_remote_broker_is_the_network_where_the_kernel_sees_the_round_trip():
    """A broker in another zone, compare beside the pieces: its link is as slow as theirs,
    but the kernel's round trip says where the time went (on the wire), so RabbitMQ's own
    answer is what is left beyond it: 0.5 ms."""
    links = {"publisher": pings(52, tcp_ms=51.5), "n1": pings(52, tcp_ms=51.5),
             "compare": pings(52, tcp_ms=51.5)}
    attribution = attribute(messages(mq=52), Timeline([], links=links), BUDGET)
    assert attribution.shares[0].cause == Cause.NETWORK, attribution.shares


def test_a_proxy_in_front_of_every_link_compares_own_too_stays_broker_side():
    """Every link, compare's too, 52 ms beyond its kernel's round trip (a proxy in front
    of the broker, or a broker slow to answer): nothing measured tells the two apart, so
    nothing is charged to the network; the verdict's evidence lists each link's figures."""
    links = {"publisher": pings(52), "n1": pings(52), "compare": pings(52)}
    msgs = messages(mq=52)
    attribution = attribute(msgs, Timeline([], links=links), BUDGET)
    assert attribution.shares[0].cause == Cause.BROKER_SIDE, attribution.shares
    assert attribution.share_of(Cause.NETWORK) < 0.02
    said = verdict(RunFacts.of(record(**run_of(msgs)), [], T0, links=links), attribution,
                   BUDGET)
    assert "compare -> RabbitMQ (a control): round trip p50 52 ms, p99 52 ms, quietest 52 ms; " \
           "the kernel's 0.1 ms" in said.evidence, said.evidence


@pytest.mark.parametrize(("spoiler", "leg_ms"), [
    # n1 read its pings' answers late: its stall's time, once the answer could have come
    # (the link's least round trip after it was sent), comes off it
    (event(EventKind.LOOP_STALL, "n1", 900, 1400, **BLOCKED), 0.05),
    # the broker did not answer: the ping measured the outage, and is left out
    (event(EventKind.BROKER_UNAVAILABLE, "broker", 900, 1400, unresponsive=True), 0.05)])
def test_a_ping_that_measured_something_else_is_not_the_link(spoiler, leg_ms):
    """n1's ping at 1.0 s took 400 ms: its own loop was stalled through it (it read the
    answer late), or the broker did not answer. Neither is the link: a stall's time comes
    off the ping (a slow link's pings on a node collecting several times a second were
    mostly left out), a ping across an outage is left out (the leg near it is its
    neighbours')."""
    links = {"publisher": pings(0.5), "n1": pings(0.5, spoiled={1000: 400}),
             "compare": pings(0.5, spoiled={1000: 400} if spoiler.piece == "broker" else {})}
    timeline = Timeline([spoiler], links=links)
    assert timeline.legs.one_way("n1", T0 + 1000 * MS) == pytest.approx(leg_ms * MS)
    assert timeline.legs.spread("n1", T0 + 1000 * MS)[1] == pytest.approx(0.05 * MS)


def test_a_wait_while_the_answer_was_still_on_its_way_delayed_nothing():
    """A 40 ms link; n1 stalled 15 ms just after sending each ping, long before any answer
    could come back. The answer was read on time: the leg is the link's 20 ms, not 12.5
    (one core, link-delay=20ms: n1's waits for the CPU over a whole flight were taken off,
    its deliver leg read 6-9 ms, and the rest went to RabbitMQ and to the node's
    starvation: network named 2 times of 5)."""
    links = {"publisher": pings(40), "n1": pings(40), "compare": pings(0.5)}
    stalls = [event(EventKind.LOOP_STALL, "n1", t + 5, t + 20, **BLOCKED)
              for t in range(0, 2100, 500)]
    leg = Timeline(stalls, links=links).legs.one_way("n1", T0 + 1000 * MS)
    assert leg == pytest.approx((40 - 0.4) / 2 * MS), leg / MS


def test_a_network_verdict_names_each_link_and_where_the_kernel_puts_the_time():
    links = {"publisher": pings(52), "n1": pings(52), "compare": pings(0.5)}
    msgs = messages(mq=52)
    said = verdict(RunFacts.of(record(**run_of(msgs)), [], T0, links=links),
                   attribute(msgs, Timeline([], links=links), BUDGET), BUDGET)
    assert (said.culprit, said.cause) == (Culprit.MQ, Cause.NETWORK)
    assert said.prose.startswith(
        "the time was on the way to or from RabbitMQ: round trips (p50) publisher -> RabbitMQ "
        "52 ms, RabbitMQ -> n1 52 ms, while RabbitMQ answered compare's own link in 0.4 ms; "
        "the kernel's round trip is 0.1 ms, so the time is beyond the first hop (a proxy or "
        "load balancer that holds the data)"), said.prose
    assert "RabbitMQ -> n1: round trip p50 52 ms, p99 52 ms, quietest 52 ms; the kernel's 0.1 ms" \
        in said.evidence


def test_a_jittered_link_is_charged_its_jitter_where_rabbitmq_measured_nothing():
    """link-delay=n1:30ms+20ms: n1's round trips near each message ran 60 to 100 ms, so a
    deliver leg lay between 30 and 50 ms, and the tail is the messages whose leg was
    longest. The least leg is charged first; what RabbitMQ's counters (quiet here) leave,
    up to the 20 ms the legs spread, is the network's too, not broker-side."""
    spoiled = {t: 100 for t in range(0, 2100, 1000)}  # every other ping at the top
    links = {"publisher": pings(0.5), "n1": pings(60, spoiled=spoiled, every_ms=500),
             "compare": pings(0.5)}
    msgs = messages(mq=52)  # the tail: a leg near the top of the range
    attribution = attribute(msgs, Timeline([], broker=broker_cpu(between=(0, 0)), links=links),
                            BUDGET)
    assert attribution.shares[0].cause == Cause.NETWORK, attribution.shares
    assert attribution.share_of(Cause.BROKER_SIDE) < 0.05, attribution.shares


# -- connections coming and going (issue 37: the reconnect storm) ---------------------------
def _storm(node_work: list[tuple[float, float]]) -> list:
    """A node's loop serving handshakes in the spans given (its profiler's samples)."""
    return [event(EventKind.CONNECTION_WORK, "n1", a, b) for a, b in node_work]


def test_messages_read_late_behind_a_storm_of_handshakes_are_the_churn():
    """Messages reach n1 during 300 ms its loop spends on handshakes: they are read as the
    storm ends, and that wait (in the mq hop: unread in the node's socket) is churn's, as
    measured by the loop's samples, not the broker's."""
    msgs = messages(slow={i: {"mq": 300 - (i - 10) * 20} for i in range(10, 25)})
    said, attribution = judged(msgs, _storm([(200, 300), (301, 400), (410, 500)]))
    assert (said.culprit, Cause.of(said.cause)) == (Culprit.SERVER, Cause.CONNECTION_CHURN)
    assert attribution.share_of(Cause.CONNECTION_CHURN) > 0.8
    assert attribution.share_of(Cause.BROKER_SIDE) < 0.2


def test_a_storm_that_ended_long_before_the_read_is_not_charged():
    """The same late messages, but n1's handshakes ended 100 ms before it read them: what
    held them is not the loop's connection work, and the broker keeps its wait."""
    msgs = messages(slow={i: {"mq": 300 - (i - 10) * 20} for i in range(10, 25)})
    said, attribution = judged(msgs, _storm([(200, 390)]))
    assert attribution.share_of(Cause.CONNECTION_CHURN) < 0.05
    assert Cause.of(said.cause) == Cause.BROKER_SIDE


def test_deliveries_written_late_behind_handshakes_are_the_churn():
    """n1 emits, and its writes to the members wait while its loop serves connections."""
    msgs = messages(slow={i: {"delivery": 150} for i in range(10, 20)})
    said, attribution = judged(msgs, _storm([(205, 400)]))
    assert Cause.of(said.cause) == Cause.CONNECTION_CHURN
    assert attribution.share_of(Cause.CONNECTION_CHURN) > 0.6


def test_a_storm_of_clients_that_stopped_answering_is_the_clients():
    """The same storm, on a node whose connections ended mostly with their clients silent:
    its time is charged to those clients (a client culprit), never to churn."""
    msgs = messages(slow={i: {"mq": 300 - (i - 10) * 20} for i in range(10, 25)})
    events = _storm([(200, 300), (301, 400), (410, 500)])
    charger = Charger(Timeline(events), msgs, BUDGET * MS,
                      {"n1": Cause.CLIENTS_UNRESPONSIVE})
    attribution = attribute(msgs, charger, BUDGET)
    assert attribution.share_of(Cause.CLIENTS_UNRESPONSIVE) > 0.8
    assert attribution.share_of(Cause.CONNECTION_CHURN) == 0
    facts = RunFacts.of(record(**run_of(msgs)), events, T0)
    said = verdict(facts, attribution, BUDGET)
    assert (said.culprit, Cause.of(said.cause)) == (Culprit.CLIENT, Cause.CLIENTS_UNRESPONSIVE)


def _wave(node_work: list[tuple[float, float]]) -> list:
    """A node's loop writing pings and reading pongs in the spans given (its profiler's
    samples of engine.io's heartbeats)."""
    return [event(EventKind.HEARTBEAT_WORK, "n1", a, b) for a, b in node_work]


def test_messages_read_late_behind_a_wave_of_pings_are_the_heartbeats():
    """The seed's 27,000 connections: n1's loop writes a ping to each of its clients at
    once, and RabbitMQ's deliveries wait unread in its socket meanwhile (the mq hop). That
    wait is the heartbeats', as the loop's samples measured, not the broker's nor churn's."""
    msgs = messages(slow={i: {"mq": 300 - (i - 10) * 20} for i in range(10, 25)})
    said, attribution = judged(msgs, _wave([(200, 300), (301, 400), (410, 500)]))
    assert (said.culprit, Cause.of(said.cause)) == (Culprit.SERVER, Cause.HEARTBEATS)
    assert attribution.share_of(Cause.HEARTBEATS) > 0.8
    assert attribution.share_of(Cause.CONNECTION_CHURN) == 0
    assert attribution.share_of(Cause.BROKER_SIDE) < 0.2


def test_deliveries_written_late_behind_a_wave_of_pings_are_the_heartbeats():
    msgs = messages(slow={i: {"delivery": 150} for i in range(10, 20)})
    said, attribution = judged(msgs, _wave([(205, 400)]))
    assert Cause.of(said.cause) == Cause.HEARTBEATS
    assert attribution.share_of(Cause.HEARTBEATS) > 0.6


def test_a_wave_of_pings_and_a_storm_of_handshakes_each_keep_their_own_time():
    """Both in one run of the loop's work: each cause is charged the samples of its own
    (the wave covers 300 ms of the 2,400 the messages waited, the storm the rest)."""
    msgs = messages(slow={i: {"mq": 300 - (i - 10) * 20} for i in range(10, 25)})
    _said, attribution = judged(msgs, _wave([(200, 300)]) + _storm([(301, 500)]))
    heartbeats, churn = (attribution.share_of(Cause.HEARTBEATS),
                         attribution.share_of(Cause.CONNECTION_CHURN))
    assert 0.08 < heartbeats < 0.2 and heartbeats + churn > 0.9, attribution.shares


def test_rabbitmqs_wait_for_the_cpu_the_load_process_took_is_the_nodes_connection_cause():
    """RabbitMQ waited for a CPU while the load process (its members only come and go)
    used it: that wait is charged as the nodes' own connection work is, here to the silent
    clients, never to churn by default."""
    msgs = messages(slow={i: {"mq": 120} for i in range(10, 20)})
    window = [T0 + 150 * MS, 500 * MS]
    broker = BrokerCpu(rows=((window[0], window[1], 100 * MS, 400 * MS, 400 * MS, 0, 0),))
    used = {"host": [[window[0], window[1], 450 * MS]], "broker": [[window[0], window[1], 50 * MS]],
            "swarm-load": [[window[0], window[1], 400 * MS]]}
    timeline = Timeline([], used=used, broker=broker)
    charger = Charger(timeline, msgs, BUDGET * MS, {"n1": Cause.CLIENTS_UNRESPONSIVE})
    attribution = attribute(msgs, charger, BUDGET)
    assert attribution.share_of(Cause.CLIENTS_UNRESPONSIVE) > 0.3, attribution.shares
    assert attribution.share_of(Cause.CONNECTION_CHURN) == 0


def test_a_gc_pause_verdict_says_what_began_its_collections_and_charges_them_still_to_gc():
    """Collections a wave of pings began (the node's collector callback read its loop's
    work as each began): said beside the verdict, and the time still the collector's."""
    msgs = messages(slow={i: {"mq": 332 - 20 * i} for i in range(10, 16)})
    events = [event(EventKind.GC, "n1", 200, 330, generation=2, began_in="heartbeats"),
              event(EventKind.GC, "n1", 600, 605, generation=0, began_in="websocket write"),
              event(EventKind.LOOP_STALL, "n1", 198, 332, cpu_share=1.0)]
    said, attribution = judged(msgs, events)
    assert Cause.of(said.cause) == Cause.GC_PAUSE
    assert attribution.share_of(Cause.HEARTBEATS) == 0
    (line,) = [e for e in said.evidence if "collections over 1 ms began in" in e]
    assert line.startswith("n1's 2 collections over 1 ms began in") and \
        line.endswith(": heartbeats 1 (130 ms), websocket write 1 (5 ms)"), line


def test_a_gc_pause_verdict_says_what_the_oldest_generation_held_and_whose_waits_they_were():
    msgs = messages(slow={i: {"mq": 332 - 20 * i} for i in range(10, 16)})
    events = [event(EventKind.GC, "n1", 200, 330, generation=2),
              event(EventKind.LOOP_STALL, "n1", 198, 332, cpu_share=1.0)]
    run = run_of(msgs)
    run["nodes"][0]["gc"] = {
        "frozen": 1_212_689, "oldest": 736_576,
        "oldest_types": [["Context", 132_190], ["coroutine", 126_913], ["TimerHandle", 68_952],
                         ["tuple", 63_226]],
        "oldest_coroutines": [["engineio/async_socket.py in AsyncSocket._send_ping", 13_500]]}
    said = verdict(RunFacts.of(record(**run), events, T0), attribute(msgs, events, BUDGET),
                   BUDGET)
    assert Cause.of(said.cause) == Cause.GC_PAUSE
    assert ("n1's collector's oldest generation held 736,576 objects as the run ended, beyond "
            "the 1,212,689 set-up froze (what each full collection walks): Context 132,190, "
            "coroutine 126,913, TimerHandle 68,952; its coroutines, by code: "
            "engineio/async_socket.py in AsyncSocket._send_ping 13,500") in said.evidence, \
        said.evidence

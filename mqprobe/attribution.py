"""Every delay charged to what caused it: per-delivery attribution over the run's timeline.

Each delivery's hops (mq, server, delivery) are compared with the run's floor: the hop's
typical value at light load (its 10th percentile in that run, never more than a tenth of
the budget, so that a delay every message carries is excess, not floor). What a hop took
beyond its floor is its excess. Within a hop, the excess is charged to the timeline's
intervals that overlap the hop (a GC pause, a stall, a full prefetch window, a blocked
publisher, the broker unreachable), in order of precedence, and what no interval explains
is charged to the hop itself. The tail is the deliveries over budget, or the p99 tail when
the budget is met (p99 e2e within it); a cause's share is the part of the tail's excess
charged to it.

Everything here is a pure function of recorded data (times in ns on one clock): fast to
test without a broker, table-driven.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from mqprobe.errors import ResultFormatError
from mqprobe.model import PATH_HOPS, Cause, Culprit, ShareJson, VerdictJson
from mqprobe.timeline import EventKind, TimedEvent

FLOOR_PERCENTILE = 10.0
FLOOR_BUDGET_SHARE = 0.1  # a hop's floor is never above this share of the budget
TAIL_PERCENTILE = 99.0


CULPRIT_OF = {
    Cause.BROKER_SIDE: Culprit.MQ, Cause.BROKER_BLOCKED: Culprit.MQ,
    Cause.BROKER_ALARM: Culprit.MQ, Cause.BROKER_UNAVAILABLE: Culprit.MQ,
    Cause.PUBLISH_REJECTED: Culprit.MQ,
    Cause.CONSUMER_SATURATED: Culprit.SERVER, Cause.GC_PAUSE: Culprit.SERVER,
    Cause.SERVER_STALL: Culprit.SERVER, Cause.SLOW_HANDLER: Culprit.SERVER,
    Cause.FANOUT_BOUND: Culprit.SERVER, Cause.NODE_DIED: Culprit.SERVER,
    Cause.LOST_BEFORE_NODE: Culprit.MQ,
    Cause.DELIVERY: Culprit.DELIVERY, Cause.LOST: Culprit.DELIVERY,
    Cause.SWARM_SATURATED: Culprit.CLIENT, Cause.INSTRUMENT_FAILED: Culprit.CLIENT,
    Cause.PUBLISHER_STALL: Culprit.CLIENT, Cause.INTERRUPTED: Culprit.CLIENT,
    Cause.WITHIN_BUDGET: Culprit.NONE, Cause.NOTHING_MEASURED: Culprit.NONE,
}

# What each cause means, for the verdict's sentence.
PROSE = {
    Cause.BROKER_SIDE: "the wait happened in RabbitMQ, not in a busy consumer",
    Cause.BROKER_BLOCKED: "the broker blocked the publisher's connection (flow control)",
    Cause.BROKER_ALARM: "a broker memory or disk alarm held messages back",
    Cause.BROKER_UNAVAILABLE: "the broker could not be reached",
    Cause.PUBLISH_REJECTED: "the broker refused or failed messages at publish",
    Cause.CONSUMER_SATURATED: "messages waited because a node's consumer could not keep up "
                              "(its prefetch window full, or its own backlog)",
    Cause.GC_PAUSE: "a node's garbage collector stopped its event loop",
    Cause.SERVER_STALL: "a node's event loop could not run",
    Cause.SLOW_HANDLER: "the node's handler takes long per message",
    Cause.FANOUT_BOUND: "the node's emit loop to the room took the time",
    Cause.NODE_DIED: "a node process ended during the run",
    Cause.DELIVERY: "socket writes, network or client reads",
    Cause.LOST_BEFORE_NODE: "messages never reached a node's handler",
    Cause.LOST: "a node emitted them, yet they never reached their members",
    Cause.SWARM_SATURATED: "the measuring swarm itself was the bottleneck, these figures "
                           "are not to be trusted",
    Cause.INSTRUMENT_FAILED: "a piece of mqprobe's own instrument failed: these figures are "
                             "not to be trusted",
    Cause.PUBLISHER_STALL: "mqprobe's publisher stalled after stamping",
    Cause.INTERRUPTED: "the run was stopped before it finished",
    Cause.WITHIN_BUDGET: "every hop within budget",
    Cause.NOTHING_MEASURED: "no delivery was measured",
}

# Per hop: which timeline intervals may explain its excess, highest precedence first, as
# (whose: "broker" | "publisher" | "node" | "swarm", kind, cause). What none of them
# explains is the hop's own cause (REMAINDER); the server hop's own backlog wait, which
# the node reports per message, is charged before it.
CHARGES = {
    "mq": (("broker", EventKind.BROKER_UNAVAILABLE, Cause.BROKER_UNAVAILABLE),
           ("publisher", EventKind.PUBLISHER_BLOCKED, Cause.BROKER_BLOCKED),
           ("broker", EventKind.BROKER_ALARM, Cause.BROKER_ALARM),
           ("node", EventKind.GC, Cause.GC_PAUSE),
           ("node", EventKind.LOOP_STALL, Cause.SERVER_STALL),
           ("node", EventKind.WINDOW_FULL, Cause.CONSUMER_SATURATED),
           ("publisher", EventKind.GC, Cause.PUBLISHER_STALL),
           ("publisher", EventKind.LOOP_STALL, Cause.PUBLISHER_STALL)),
    "server": (("node", EventKind.GC, Cause.GC_PAUSE),
               ("node", EventKind.LOOP_STALL, Cause.SERVER_STALL)),
    "delivery": (("node", EventKind.GC, Cause.GC_PAUSE),
                 ("node", EventKind.LOOP_STALL, Cause.SERVER_STALL),
                 ("node", None, Cause.FANOUT_BOUND),  # the message's own emit loop
                 ("swarm", EventKind.GC, Cause.SWARM_SATURATED),
                 ("swarm", EventKind.LOOP_STALL, Cause.SWARM_SATURATED)),
}
REMAINDER = {"mq": Cause.BROKER_SIDE, "server": Cause.SLOW_HANDLER, "delivery": Cause.DELIVERY}


@dataclass(slots=True)
class MessageDeliveries:
    """One message as one node emitted it, received by members of one swarm process.

    receipts: (t_recv - t_emit, how many members) pairs. wait_ns: how long it waited in
    the node's own backlog before its handling began; fanout_ns: the node's emit loop."""

    group: str
    seq: int
    node: str
    swarm: str
    t_pub: int
    t_deq: int
    t_emit: int
    receipts: list[tuple[int, int]]
    wait_ns: int = 0
    fanout_ns: int = 0

    @property
    def count(self) -> int:
        return sum(n for _, n in self.receipts)


@dataclass
class Share:
    cause: Cause
    share: float  # of the tail's excess
    mean_ms: float  # per tail delivery

    @property
    def culprit(self) -> Culprit:
        return CULPRIT_OF[self.cause]

    def label(self) -> str:
        return f"{self.culprit.value}: {self.cause.value} ({self.share:.0%})"

    def to_json(self) -> ShareJson:
        return {"culprit": self.culprit.value, "cause": self.cause.value,
                "share": round(self.share, 4), "mean_ms": round(self.mean_ms, 3)}

    @classmethod
    def from_json(cls, doc: ShareJson) -> Share:
        return cls(Cause(doc["cause"]), float(doc["share"]), float(doc.get("mean_ms", 0.0)))


@dataclass
class Attribution:
    """What the tail's excess was charged to, largest first."""

    floors_ms: dict[str, float]
    tail: str  # "over-budget" | "p99"
    tail_deliveries: int
    deliveries: int
    excess_ms: float  # mean excess per tail delivery
    shares: list[Share] = field(default_factory=list)
    hop_shares: dict[str, float] = field(default_factory=dict)

    def share_of(self, cause: Cause) -> float:
        return next((s.share for s in self.shares if s.cause == cause), 0.0)

    def to_json(self) -> dict:
        return {"floor_ms": self.floors_ms, "tail": self.tail,
                "tail_deliveries": self.tail_deliveries, "deliveries": self.deliveries,
                "excess_ms_mean": round(self.excess_ms, 3),
                "by_hop": {hop: round(v, 4) for hop, v in self.hop_shares.items()},
                "shares": [s.to_json() for s in self.shares]}


class Intervals:
    """Sorted, merged intervals of one piece and kind: overlap queries by bisection."""

    __slots__ = ("starts", "ends")

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if end <= start:
                continue
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def within(self, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of these intervals inside [a, b]."""
        out = []
        i = bisect.bisect_right(self.ends, a)
        while i < len(self.starts) and self.starts[i] < b:
            out.append((max(a, self.starts[i]), min(b, self.ends[i])))
            i += 1
        return out


class Timeline:
    """The run's intervals by (piece, kind), on one clock."""

    def __init__(self, events: Iterable[TimedEvent]) -> None:
        spans: dict[tuple[str, EventKind], list[tuple[int, int]]] = defaultdict(list)
        for event in events:
            spans[(event.piece, event.kind)].append((event.start_ns, event.end_ns))
        self._by: dict[tuple[str, EventKind], Intervals] = {
            key: Intervals(value) for key, value in spans.items()}
        self._empty = Intervals(())

    def get(self, piece: str, kind: EventKind) -> Intervals:
        return self._by.get((piece, kind), self._empty)


def claimed(a: int, b: int, candidates: list[tuple[Cause, list[tuple[int, int]]]]) -> dict:
    """ns of [a, b] each cause claims, a higher-precedence cause (earlier) winning overlaps."""
    out: dict[Cause, int] = {}
    taken: list[tuple[int, int]] = []  # disjoint, what earlier causes claimed
    for cause, spans in candidates:
        got = 0
        for start, end in spans:
            free = [(start, end)]
            for t0, t1 in taken:
                free = [piece for s, e in free for piece in _minus(s, e, t0, t1)]
            got += sum(e - s for s, e in free)
            taken += free
        if got > 0:
            out[cause] = out.get(cause, 0) + got
    return out


def _minus(s: int, e: int, t0: int, t1: int) -> list[tuple[int, int]]:
    if t1 <= s or t0 >= e:
        return [(s, e)]
    return [p for p in ((s, t0), (t1, e)) if p[1] > p[0]]


def charge_hop(hop: str, a: int, b: int, floor_ns: float, timeline: Timeline,
               message: MessageDeliveries) -> dict[Cause, float]:
    """The hop [a, b]'s excess over its floor, charged to causes (ns)."""
    excess = (b - a) - floor_ns
    if excess <= 0:
        return {}
    candidates = []
    if hop == "server" and message.wait_ns > 0:  # waited behind other messages in the node
        candidates.append((Cause.CONSUMER_SATURATED, [(a, min(b, a + message.wait_ns))]))
    for whose, kind, cause in CHARGES[hop]:
        piece = {"broker": "broker", "publisher": "publisher", "node": message.node,
                 "swarm": message.swarm}[whose]
        if kind is None:  # the message's own fan-out: [t_emit, t_emit + fanout]
            spans = [(a, min(b, a + message.fanout_ns))] if message.fanout_ns > 0 else []
        else:
            spans = timeline.get(piece, kind).within(a, b)
        if spans:
            candidates.append((cause, spans))
    charges: dict[Cause, float] = {}
    if candidates:
        got = claimed(a, b, candidates)
        total = sum(got.values())
        scale = min(1.0, excess / total) if total else 0.0
        charges = {cause: ns * scale for cause, ns in got.items()}
    rest = excess - sum(charges.values())
    if rest > 0:
        charges[REMAINDER[hop]] = charges.get(REMAINDER[hop], 0.0) + rest
    return charges


def weighted_percentile(pairs: list[tuple[float, int]], pct: float) -> float:
    """The value at `pct` of (value, weight) pairs."""
    if not pairs:
        return 0.0
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    target, seen = total * pct / 100.0, 0
    for value, weight in pairs:
        seen += weight
        if seen >= target:
            return value
    return pairs[-1][0]


def floors(messages: list[MessageDeliveries], budget_ns: float) -> dict[str, float]:
    """Each hop's floor (ns): its typical value at light load, capped by the budget."""
    mq = [(m.t_deq - m.t_pub, m.count) for m in messages]
    server = [(m.t_emit - m.t_deq, m.count) for m in messages]
    delivery = [(d, n) for m in messages for d, n in m.receipts]
    cap = budget_ns * FLOOR_BUDGET_SHARE
    return {hop: max(0.0, min(cap, weighted_percentile(pairs, FLOOR_PERCENTILE)))
            for hop, pairs in (("mq", mq), ("server", server), ("delivery", delivery))}


def attribute(messages: list[MessageDeliveries], events: Iterable[TimedEvent] | Timeline,
              budget_ms: float) -> Attribution | None:
    """Charge the tail's excess to causes; None when nothing was delivered. `events` may be
    a Timeline already built from them (one per run serves every group)."""
    if not messages or not any(m.receipts for m in messages):
        return None
    budget_ns = budget_ms * 1e6
    floor = floors(messages, budget_ns)
    e2e = [(m.t_emit - m.t_pub + d, n) for m in messages for d, n in m.receipts]
    over = sum(n for value, n in e2e if value > budget_ns)
    # the budget is missed when p99 e2e is over it (a handful of late deliveries is the
    # p99 tail's story, not a missed budget)
    if over > sum(n for _, n in e2e) * (100.0 - TAIL_PERCENTILE) / 100.0:
        tail, threshold = "over-budget", budget_ns
    else:
        tail, threshold = "p99", weighted_percentile(e2e, TAIL_PERCENTILE)
    timeline = events if isinstance(events, Timeline) else Timeline(events)
    totals: dict[Cause, float] = defaultdict(float)
    by_hop: dict[str, float] = defaultdict(float)
    tail_count = 0
    for m in messages:
        head = m.t_emit - m.t_pub
        in_tail = [(d, n) for d, n in m.receipts
                   if (head + d > threshold if tail == "over-budget" else head + d >= threshold)]
        if not in_tail:
            continue
        weight = sum(n for _, n in in_tail)
        tail_count += weight
        for hop, a, b in (("mq", m.t_pub, m.t_deq), ("server", m.t_deq, m.t_emit)):
            for cause, ns in charge_hop(hop, a, b, floor[hop], timeline, m).items():
                totals[cause] += ns * weight
                by_hop[hop] += ns * weight
        for d, n in in_tail:
            for cause, ns in charge_hop("delivery", m.t_emit, m.t_emit + d, floor["delivery"],
                                        timeline, m).items():
                totals[cause] += ns * n
                by_hop["delivery"] += ns * n
    excess = sum(totals.values())
    shares = sorted((Share(cause, ns / excess, ns / tail_count / 1e6)
                     for cause, ns in totals.items()), key=lambda s: -s.share) if excess else []
    return Attribution(
        floors_ms={hop: round(v / 1e6, 3) for hop, v in floor.items()}, tail=tail,
        tail_deliveries=tail_count, deliveries=sum(n for _, n in e2e),
        excess_ms=excess / tail_count / 1e6 if tail_count else 0.0, shares=shares,
        hop_shares={hop: by_hop[hop] / excess for hop in PATH_HOPS} if excess else {})


@dataclass
class Verdict:
    """Which part of the path the tail belongs to, why, and the evidence measured."""

    culprit: Culprit
    cause: Cause
    prose: str
    evidence: list[str] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)

    @property
    def cause_text(self) -> str:
        """design.md's `cause`: the code first, then the sentence."""
        return f"{self.cause.value}: {self.prose}"

    def to_json(self) -> VerdictJson:
        return {"culprit": self.culprit.value, "cause": self.cause_text,
                "evidence": self.evidence, "shares": [s.to_json() for s in self.shares]}

    @classmethod
    def from_json(cls, doc: VerdictJson) -> Verdict:
        """A verdict from a result's JSON (report, sweep and the tests read it this way)."""
        cause = Cause.of(doc.get("cause", ""))
        if cause is None:
            raise ResultFormatError(f"a verdict's cause opens with no cause mqprobe knows: "
                                    f"{str(doc.get('cause', ''))[:60]!r}")
        return cls(Culprit(doc.get("culprit", CULPRIT_OF[cause])), cause,
                   str(doc["cause"]).partition(":")[2].strip(), list(doc.get("evidence", [])),
                   [Share.from_json(s) for s in doc.get("shares", [])])

    @classmethod
    def of(cls, cause: Cause, prose: str = "", evidence: list[str] | None = None,
           shares: list[Share] | None = None) -> Verdict:
        return cls(CULPRIT_OF[cause], cause, prose or PROSE[cause], evidence or [],
                   shares or [])

"""Every delay charged to what caused it: per-delivery attribution over the run's timeline.

Each delivery's hops (mq, server, delivery) are compared with the run's floor: the hop's
typical value at light load (its 10th percentile in that run, never more than a tenth of
the budget, so that a delay every message carries is excess, not floor). What a hop took
beyond its floor is its excess, charged by where the message waited:

- a loop stall or a collection is split by what its time was spent on (stall_parts,
  gc_parts): the node's own code, a wait for a CPU (cpu-starved) or a CPU quota
  (cpu-throttled), from Linux's counters and the watchdog's samples;
- an mq wait is the node's only while the node was behind (its backlog periods, or its
  loop ready to run through whole CPU windows: Charger); before that it waited on the
  broker's side;
- inside a backlog, what impeded the node then comes first, then what began the backlog
  (a stall, a collection, a wait for a CPU, a broker fault), and only the rest is
  consumer-saturated: a backlog is a symptom, charged to what built it;
- what nothing explains is the hop's own (REMAINDER).

The tail is the deliveries over budget, or the p99 tail when the budget is met (p99 e2e
within it); a cause's share is the part of the tail's excess charged to it.

Everything here is a pure function of recorded data (times in ns on one clock): fast to
test without a broker, table-driven.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mqprobe.figures import Attribution, BrokerCpu, MqLegs, Share
from mqprobe.model import HOST_CPU, LOAD_PIECE, PATH_HOPS, Cause, HopName, PieceRole, Tail
from mqprobe.timeline import STALL_MIN_NS, EventKind, TimedEvent
from mqprobe.windows import Windows

FLOOR_PERCENTILE = 10.0
FLOOR_BUDGET_SHARE = 0.1  # a hop's floor is never above this share of the budget
TAIL_PERCENTILE = 99.0


# Where a message waited decides what may explain the wait:
# - on the broker's side of the mq hop (before its node was behind): the broker and the
#   publisher (BROKER_SIDE), and what they leave is the broker's own (broker-side);
# - while its node was behind (a backlog period, Charger) and in the node: first what
#   builds a backlog, the node's stalls and collections while it waited (NODE_SIDE, highest
#   precedence first), then those and broker faults that began the backlog before the
#   message came; then what slows a drain, the loop's waits for a CPU (or its quota) while
#   it waited, then before; and only what all of them leave to `consumer-saturated`:
#   arrival outpacing a consumer that ran unimpeded. (A loop waits for a CPU during a drain
#   because it has a backlog to work on: the waits slow a drain that a stall began);
# - after the emit: the node's impediments, its emit loop, the swarm's (SWARM_SIDE).
BROKER = PieceRole.BROKER  # the broker's piece name on the timeline and in the CPU samples
# a span RabbitMQ did not answer in (neither refused nor seen stopped) that its own
# counters explain, filed under the cause they measured: on one core 97% busy, RabbitMQ
# waited for a CPU 94% of the time it was ready, missed a depth sample for a second, and
# a clean run read 'broker-unavailable' (a symptom; its starvation began it)
UNANSWERED_STARVED, UNANSWERED_THROTTLED = "broker starved", "broker throttled"
UNANSWERED_EXPLAINED = 0.5  # of an unanswered span its counters must cover to explain it
BROKER_SIDE = ((BROKER, EventKind.BROKER_UNAVAILABLE, Cause.BROKER_UNAVAILABLE),
               (UNANSWERED_THROTTLED, EventKind.BROKER_UNAVAILABLE, Cause.BROKER_THROTTLED),
               (UNANSWERED_STARVED, EventKind.BROKER_UNAVAILABLE, Cause.BROKER_STARVED),
               ("publisher", EventKind.PUBLISHER_BLOCKED, Cause.BROKER_BLOCKED),
               (BROKER, EventKind.BROKER_ALARM, Cause.BROKER_ALARM),
               ("publisher", EventKind.GC, Cause.PUBLISHER_STALL),
               ("publisher", EventKind.LOOP_STALL, Cause.PUBLISHER_STALL))
BACKLOG_BUILDERS = BROKER_SIDE[:5]  # broker faults whose aftermath is a backlog at the node
OUTAGES = BROKER_SIDE[:3]  # RabbitMQ not answering, whatever explains it
NODE_SIDE = (EventKind.GC, EventKind.LOOP_STALL)  # each split by its parts (CLASSIFIED)
SWARM_SIDE = ((EventKind.GC, Cause.SWARM_SATURATED),
              (EventKind.LOOP_STALL, Cause.SWARM_SATURATED))
REMAINDER = {HopName.MQ: Cause.BROKER_SIDE, HopName.SERVER: Cause.SLOW_HANDLER,
             HopName.DELIVERY: Cause.DELIVERY}
DRAIN_SLOWERS = frozenset((Cause.CPU_STARVED, Cause.CPU_THROTTLED))  # never a backlog's builder


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


class Intervals:
    """Sorted, merged intervals of one piece and kind: overlap queries by bisection."""

    __slots__ = ("starts", "ends")

    def __init__(self, spans: Iterable[tuple[int, int]], gap: int = 0) -> None:
        """Spans closer than `gap` ns to each other are merged into one."""
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if end <= start:
                continue
            if merged and start <= merged[-1][1] + gap:
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

    def overlapping(self, a: int, b: int) -> list[tuple[int, int]]:
        """These intervals that overlap [a, b], whole."""
        i = bisect.bisect_right(self.ends, a)
        out = []
        while i < len(self.starts) and self.starts[i] < b:
            out.append((self.starts[i], self.ends[i]))
            i += 1
        return out


# An interval's time, as shares (summing to 1) of the causes it goes to; WORK is the part
# in which the loop did its own work (computing callbacks): no impediment, it is left to
# what the waiting message's hop is made of (the consumer serving a backlog, its handler).
Parts = dict["Cause | None", float]
WORK = None


def _split(detail: dict[str, Any], own_cause: Cause, computing: Cause | None,
           waiting_cause: Cause = Cause.CPU_STARVED) -> Parts:
    """An interval's time by what it was spent on (cpu.Anatomy's parts, in its detail):
    computing, off the CPU, waiting for a CPU, held back by a quota."""
    on, off = float(detail.get("on_cpu_ms", 0)), float(detail.get("off_cpu_ms", 0))
    waiting, throttled = float(detail.get("waiting_ms", 0)), float(detail.get("throttled_ms", 0))
    total = on + off + waiting + throttled
    if "on_cpu_ms" not in detail or total <= 0:
        return {own_cause: 1.0}
    parts: Parts = {}
    for cause, ms in ((computing, on), (own_cause, off), (waiting_cause, waiting),
                      (Cause.CPU_THROTTLED, throttled)):
        if ms > 0:
            parts[cause] = parts.get(cause, 0.0) + ms / total
    return parts


def gc_parts(detail: dict[str, Any]) -> Parts:
    """A collection: the collector's own time (all of it stops the loop), and the waits
    for a CPU or a quota that stretched it."""
    return _split(detail, Cause.GC_PAUSE, Cause.GC_PAUSE)


PAUSED_WITH = "paused_with"  # a loop stall's detail: the other pieces stalled at once
HOST_PAUSE_PIECES = 3  # processes whose loops stalled at once: the machine paused them


def paused_together(events: list[TimedEvent]) -> list[TimedEvent]:
    """The events, each loop stall that HOST_PAUSE_PIECES or more processes' loops shared
    (two stalls overlapping by half the longer: alike in start and length) marked with
    the others in its detail (PAUSED_WITH). Processes that share no code, no lock and no CPU quota
    stalling together were stopped by what they share: the machine. Stalls of one piece
    never overlap, so the sweep keeps only a handful of open stalls at a time."""
    stalls = sorted((e for e in events if e.kind == EventKind.LOOP_STALL),
                    key=lambda e: e.start_ns)
    others: dict[int, set[str]] = defaultdict(set)
    open_stalls: list[TimedEvent] = []
    for stall in stalls:
        open_stalls = [e for e in open_stalls if e.end_ns > stall.start_ns]
        for other in open_stalls:
            overlap = min(other.end_ns, stall.end_ns) - stall.start_ns
            if other.piece != stall.piece and overlap * 2 >= max(other.duration_ns,
                                                                 stall.duration_ns):
                others[id(stall)].add(other.piece)
                others[id(other)].add(stall.piece)
        open_stalls.append(stall)
    out = []
    for event in events:
        with_ = others.get(id(event), set())
        if len(with_) + 1 >= HOST_PAUSE_PIECES:
            event = TimedEvent(event.kind, event.piece, event.start_ns, event.end_ns,
                               {**event.detail, PAUSED_WITH: sorted(with_)})
        out.append(event)
    return out


def stall_parts(detail: dict[str, Any]) -> Parts:
    """A loop stall, from what was measured through it (loop.LoopLagMonitor).

    All of it is the code's when the watchdog saw the loop thread blocked in, or running
    in, one function of one callback through the stall (`held_by`: a thread that only
    waits for a CPU makes no progress between samples, and is not evidence) and that
    code's own time (on and off the CPU) was a stall by itself: a spin on a crowded core
    waits only because it runs, and the loop could run nothing else meanwhile. Otherwise
    it is split by its parts: off the CPU (server-stall: blocked), waiting for a CPU
    (cpu-starved), held back by a quota (cpu-throttled), and computing: the loop's own
    work through many callbacks (WORK), which no one callback held. Without the counters:
    server-stall.

    A stall other processes shared (PAUSED_WITH) is the machine's (host-pause) where it was
    not computing: its time off the CPU, and its wait for a CPU too when that was the
    smaller part (a vCPU the hypervisor took leaves sleepers asleep and the runnable
    waiting; a crowded host leaves every loop mostly waiting: cpu-starved)."""
    own = float(detail.get("on_cpu_ms", 0)) + float(detail.get("off_cpu_ms", 0))
    if detail.get("held_by") and own * 1e6 >= STALL_MIN_NS:
        return {Cause.SERVER_STALL: 1.0}
    if not detail.get(PAUSED_WITH):
        return _split(detail, Cause.SERVER_STALL, WORK)
    paused = float(detail.get("off_cpu_ms", 0)) >= float(detail.get("waiting_ms", 0))
    return _split(detail, Cause.HOST_PAUSE, WORK,
                  Cause.HOST_PAUSE if paused else Cause.CPU_STARVED)


def stall_cause(detail: dict[str, Any]) -> Cause:
    """What took most of a stall, for its name: computing names it server-stall (a loop
    saturated by its own work)."""
    parts = stall_parts(detail)
    largest = max(parts, key=parts.__getitem__)
    return Cause.SERVER_STALL if largest is WORK else largest


# kinds whose events are split one by one by what their time was spent on
CLASSIFIED = {EventKind.LOOP_STALL: stall_parts, EventKind.GC: gc_parts}

BUSY_BACKLOG = 0.9  # of a CPU window its loop was ready to run: it had work queued


class CpuSeries(Windows):
    """One loop thread's CPU in windows (loop.CpuWindows rows, on our clock): how much of a
    span it spent waiting for a CPU, or throttled, pro rata of the windows it overlaps."""

    def busy_spans(self) -> list[tuple[int, int]]:
        """The windows the loop was ready to run nearly throughout (computing, waiting for a
        CPU or throttled): a loop with nothing queued sleeps in its poll, so this one had
        work queued, and a message that reached it meanwhile waited to be read, unseen by
        the broker's queue and the prefetch window."""
        return [(start, start + wall) for start, wall, on, wait, thr, *_ in self.rows
                if on + wait + thr >= BUSY_BACKLOG * wall]

    def waits_in(self, spans: Iterable[tuple[int, int]]) -> tuple[float, float]:
        """ns of the spans lost to waiting for a CPU, and to throttling: each window's waits
        pro rata of the overlap, and in proportion to how busy the loop was in it. A loop
        busy all the window (computing or waiting) loses service to every wait; one that
        mostly slept (handlers awaiting timers or I/O) loses only its wake-ups."""
        waiting = throttled = 0.0
        for (_start, wall, on, wait, thr, *_), overlap in self.overlaps(spans):
            lost = overlap / wall * min(1.0, (on + wait + thr) / wall)
            waiting += wait * lost
            throttled += thr * lost
        return waiting, throttled


class BrokerSeries(Windows):
    """A local broker's windows as compare sampled them (figures.BrokerCpu rows: start,
    wall, its on-path threads' time on a CPU, their waits for one summed and the longest
    one thread's, its cgroup's throttled time).

    Only what its counters measured is charged. Throttling stops every thread of the
    cgroup at once: a message in RabbitMQ meanwhile waited through it, pro rata of the
    window's wall time. A wait for a CPU is charged to a message's time in RabbitMQ by the
    share of their ready time its schedulers spent waiting (they are runnable when they
    have work: a message's), and never more in a window than the longest any one of them
    waited in it. (On a quiet host, a few milliseconds of wake-up latency a window were
    once charged as 69% of every message's time, 40 ms of it on the wire.) Where one of
    them computed through the window (a hot queue is one process, on one scheduler), what
    the quota and the waits leave of a message's time there went to RabbitMQ's own work."""

    def throttled_spans(self, a: int, b: int, least: float = 0.5) -> list[Span]:
        """The windows within [a, b] its quota held it back `least` of or more, each
        claiming its throttled share for broker-throttled (what began a node's backlog)."""
        return [(max(a, row[0]), min(b, row[0] + row[1]),
                 {Cause.BROKER_THROTTLED: min(1.0, row[5] / row[1])})
                for row, _overlap in self.overlaps([(a, b)]) if row[5] >= least * row[1]]

    def charges(self, spans: Iterable[tuple[int, int]]) -> tuple[float, float, float]:
        """ns of the spans (a message's time in RabbitMQ) lost to its quota, to waiting for
        a CPU, and to its own work (the rest of a window one of its on-path threads
        computed through: BROKER_BUSY of it), window by window."""
        throttled = starved = busy = 0.0
        for row, overlap in self.overlaps(spans):
            _start, wall, on, waited, most, held_back, busiest = row[:7]
            stopped = min(1.0, held_back / wall) * overlap
            throttled += stopped
            waiting = (min(overlap * waited / (on + waited), most, overlap - stopped)
                       if waited > 0 else 0.0)
            starved += waiting
            if busiest >= BROKER_BUSY * wall:
                busy += overlap - stopped - waiting
        return throttled, starved, busy


BROKER_BUSY = 0.9  # of a window one of RabbitMQ's schedulers computed: its own work held it


LINK_NEAR_NS = 1_000_000_000  # a link's pings this close to a leg tell its round trip then
PUBLISHER = "publisher"  # the publisher's link (a node's is its id)
CONTROL_LINK = "compare"  # compare's own link to the broker: how long RabbitMQ took to answer


class LinkLegs:
    """Each AMQP link's one-way time to or from RabbitMQ near a moment, from its pings
    (broker.link.LinkWatch rows, on our clock): a ping's round trip less RabbitMQ's own
    answer time then, halved. The answer time is what compare's control link took beyond
    its kernel's round trip (compare reaches the broker directly, or through the same path
    as the pieces: then a proxy's delay reads as RabbitMQ's, and stays broker-side). A
    ping that crossed a broker outage measured it, and is left out; one whose piece
    stalled, collected or waited for a CPU after its answer could have come (past the
    link's least round trip of the run: before that the answer was still on its way, and
    a wait then delayed nothing) read it that much later, and that is taken off. The least
    of a link's legs within LINK_NEAR_NS of the moment (RabbitMQ's answer time there is the
    median of compare's); 0 where it has none."""

    def __init__(self, links: dict[str, list[list[int]]],
                 measured_else: Callable[[str, int, int, int], float | None]) -> None:
        # (one core at ba33810, every link 20 ms each way: a node's waits for the CPU over
        # a ping's whole flight were taken off it, its deliver leg read 6-9 ms, not 20, and
        # the rest charged to RabbitMQ and the node's starvation: network 2 of 5)
        least = {link: min((rtt for _t, rtt, _tcp in rows), default=0)
                 for link, rows in links.items()}
        control = []
        for t, rtt, tcp in links.get(CONTROL_LINK, []):
            if (own := measured_else(CONTROL_LINK, t, t + least[CONTROL_LINK],
                                     t + rtt)) is not None:
                control.append((t, rtt - own - (tcp if tcp >= 0 else 0)))
        control.sort()
        self._control_t = [t for t, _ in control]
        self._control = [answer for _, answer in control]
        self._legs: dict[str, tuple[list[int], list[float]]] = {}
        for link, rows in links.items():
            if link == CONTROL_LINK:
                continue
            kept = sorted((t, max(0.0, rtt - own - self.answer_ns(t)) / 2)
                          for t, rtt, _tcp in rows
                          if (own := measured_else(link, t, t + least[link], t + rtt))
                          is not None)
            self._legs[link] = ([t for t, _ in kept], [leg for _, leg in kept])

    def answer_ns(self, t: int) -> float:
        """How long RabbitMQ took to answer compare near t (0 without the control)."""
        return _median_near(self._control_t, self._control, t)

    def one_way(self, link: str, t: int) -> float:
        """The least of the link's legs near t: what the path itself added for sure, not
        the delays a ping meets on its piece's own crowded core (a node waiting for a CPU
        reads its answer late, and that is its starvation, not the link's)."""
        return self.spread(link, t)[0]

    def spread(self, link: str, t: int) -> tuple[float, float]:
        """The least and the longest of the link's legs near t (0, 0 without pings): a
        message's own leg lay between them as far as the pings can tell."""
        times, legs = self._legs.get(link, ([], []))
        near = legs[bisect.bisect_left(times, t - LINK_NEAR_NS):
                    bisect.bisect_right(times, t + LINK_NEAR_NS)]
        return (min(near), max(near)) if near else (0.0, 0.0)

    def jitter(self, spread: tuple[float, float], t: int) -> float:
        """How much more a link's legs spread near t (its `spread` there) than the
        control's answers did: a crowded host spreads every ping (its pinger reads the
        answer late), the control's too, and only the spread beyond that is the link's own."""
        low, high = spread
        near = self._control[bisect.bisect_left(self._control_t, t - LINK_NEAR_NS):
                             bisect.bisect_right(self._control_t, t + LINK_NEAR_NS)]
        noise = (max(near) - min(near)) / 2 if near else 0.0
        return max(0.0, high - low - noise)

    @property
    def measured(self) -> bool:
        return any(times for times, _legs in self._legs.values())


def _median_near(times: list[int], values: list[float], t: int) -> float:
    near = sorted(values[bisect.bisect_left(times, t - LINK_NEAR_NS):
                         bisect.bisect_right(times, t + LINK_NEAR_NS)])
    return near[len(near) // 2] if near else 0.0


class Timeline:
    """The run's intervals by (piece, kind), on one clock: merged, for overlap queries;
    loop stalls and collections also one by one with their parts (CLASSIFIED); a queue's
    backlog also under the node consuming it; each piece's loop CPU series; what CPU
    each piece and the host used (`used`: compare's samples, HOST_CPU the host's); a local
    broker's own counters (`broker`); and each AMQP link's legs (`legs`, from `links`)."""

    def __init__(self, events: Iterable[TimedEvent],
                 cpu: dict[str, list[list[int]]] | None = None,
                 used: dict[str, list[list[int]]] | None = None,
                 broker: BrokerCpu | None = None,
                 links: dict[str, list[list[int]]] | None = None) -> None:
        spans: dict[tuple[str, EventKind], list[tuple[int, int]]] = defaultdict(list)
        split: dict[tuple[str, EventKind], list[tuple[int, int, Parts]]] = defaultdict(list)
        self.broker = BrokerSeries([list(row) for row in broker.rows] if broker else ())
        for event in events:
            span = (event.start_ns, event.end_ns)
            if event.kind == EventKind.BROKER_UNAVAILABLE and event.detail.get("unresponsive") \
                    and not event.detail.get("stopped"):
                spans[(self._unanswered(span), event.kind)].append(span)
                continue
            if event.kind == EventKind.QUEUE_BACKLOG and event.detail.get("node"):
                # ready messages in a node's own queue: RabbitMQ held them for that node
                spans[(event.detail["node"], event.kind)].append(span)
                continue
            # (the broker's backlogs are those of queues no node consumes: a delay queue)
            spans[(event.piece, event.kind)].append(span)
            if event.kind in CLASSIFIED:
                split[(event.piece, event.kind)].append(
                    (*span, CLASSIFIED[event.kind](event.detail)))
        self._by = {key: Intervals(value) for key, value in spans.items()}
        self._split = {key: sorted(value, key=lambda item: item[0]) for key, value in split.items()}
        self._split_ends = {key: _running_max(value) for key, value in self._split.items()}
        self._empty = Intervals(())
        self._cpu = {piece: CpuSeries(rows) for piece, rows in (cpu or {}).items()}
        self._no_cpu = CpuSeries()
        self._used = {piece: Windows(rows) for piece, rows in (used or {}).items()}
        self.legs = LinkLegs(links or {}, self._measured_else)

    def _unanswered(self, span: tuple[int, int]) -> str:
        """Whose a span RabbitMQ did not answer in is, by its own counters (a local
        broker's): its quota's or its starvation's where they held it back through most of
        the span, else its own (BROKER: unavailable, not slow)."""
        throttled, starved, _busy = self.broker.charges([span])
        length = span[1] - span[0]
        if length > 0 and throttled >= UNANSWERED_EXPLAINED * length:
            return UNANSWERED_THROTTLED
        if length > 0 and starved >= UNANSWERED_EXPLAINED * length:
            return UNANSWERED_STARVED
        return BROKER

    def _measured_else(self, link: str, a: int, answerable: int, b: int) -> float | None:
        """What a ping sent at a and read at b measured beyond the link: None when it
        crossed a broker outage (it measured that), else the ns of the stalls and
        collections of the piece that sent it from when its answer could have come
        (`answerable`) to b, and its loop's waits for a CPU between them (it read its answer
        that much later)."""
        if any(self.get(whose, kind).within(a, b) for whose, kind, _cause in OUTAGES):
            return None
        a = max(a, min(answerable, b))
        held = Intervals(span for kind in (EventKind.LOOP_STALL, EventKind.GC)
                         for span in self.get(link, kind).within(a, b))
        waiting, throttled = self.cpu(link).waits_in(_outside(a, b, held))  # for a CPU
        return float(sum(e - s for s, e in zip(held.starts, held.ends, strict=True))
                     + waiting + throttled)

    def get(self, piece: str, kind: EventKind) -> Intervals:
        """The piece's intervals of a kind, merged."""
        return self._by.get((piece, kind), self._empty)

    def parts_within(self, piece: str, kind: EventKind, a: int, b: int
                     ) -> list[tuple[int, int, Parts]]:
        """The piece's stalls or collections inside [a, b], clipped, each with its parts."""
        events = self._split.get((piece, kind))
        if not events:
            return []
        ends = self._split_ends[(piece, kind)]
        i = bisect.bisect_right(ends, a)  # the first whose end (or an earlier one's) is past a
        out = []
        while i < len(events) and events[i][0] < b:
            start, end, parts = events[i]
            if end > a:
                out.append((max(a, start), min(b, end), parts))
            i += 1
        return out

    def cpu(self, piece: str) -> CpuSeries:
        return self._cpu.get(piece, self._no_cpu)

    def used(self, piece: str, spans: Iterable[tuple[int, int]]) -> float:
        """CPU ns the piece (or HOST_CPU: the host) used within the spans; 0 when unknown."""
        series = self._used.get(piece)
        return series.within(spans) if series else 0.0


def _outside(a: int, b: int, intervals: Intervals) -> list[tuple[int, int]]:
    """The parts of [a, b] outside the intervals."""
    out, at = [], a
    for s, e in intervals.within(a, b):
        if s > at:
            out.append((at, s))
        at = max(at, e)
    return out + ([(at, b)] if b > at else [])


def _running_max(events: list[tuple[int, int, Parts]]) -> list[int]:
    """The largest end so far, event by event (sorted by start): bisectable."""
    out, most = [], 0
    for _start, end, _parts in events:
        most = max(most, end)
        out.append(most)
    return out


def _minus(s: int, e: int, t0: int, t1: int) -> list[tuple[int, int]]:
    if t1 <= s or t0 >= e:
        return [(s, e)]
    return [p for p in ((s, t0), (t1, e)) if p[1] > p[0]]


GAP_NS = STALL_MIN_NS  # backlog periods of a node this close together are one
# a broker fault that ended this close before a node's backlog began it: the queue sampler
# sees the broker every 0.5 s, so the fault's end is known that coarsely
LEAD_NS = 1_000_000_000
# a node's samples of connection work this close are one run of it: its loop profiler
# samples every 20 ms, and a storm that takes a fifth of the loop's time is sampled every
# 100 ms or so (a reconnect storm here: samples 40-60 ms apart for 0.8 s)
CHAIN_NS = 100_000_000


Span = tuple[int, int, Parts]  # an interval that claims time for its causes, in shares


def claim_each(segments: list[tuple[int, int]], candidates: Iterable[Span]
               ) -> tuple[list[tuple[Span, Parts]], list[tuple[int, int]]]:
    """What each candidate claims of the segments (disjoint), earlier candidates winning
    overlaps (an interval's claim is shared by its parts), and the parts no candidate
    claimed. Each candidate visits only the free parts it overlaps (bisect): a message
    that waited seconds through hundreds of stalls once cost minutes of assembly."""
    each: list[tuple[Span, Parts]] = []
    free = sorted(segments)
    ends = [e for _s, e in free]
    for span in candidates:
        start, end, parts = span
        first = last = bisect.bisect_right(ends, start)  # the first free part ending past it
        got: Parts = {}
        left: list[tuple[int, int]] = []
        while last < len(free) and free[last][0] < end:
            s, e = free[last]
            overlap = min(e, end) - max(s, start)
            if overlap > 0:
                for cause, share in parts.items():
                    got[cause] = got.get(cause, 0.0) + overlap * share
            left += _minus(s, e, start, end)
            last += 1
        if last > first:
            free[first:last] = left
            ends[first:last] = [e for _s, e in left]
        if got:
            each.append((span, got))
    return each, free


def claim(segments: list[tuple[int, int]], candidates: Iterable[Span]
          ) -> tuple[Parts, list[tuple[int, int]]]:
    """claim_each, summed by cause."""
    each, free = claim_each(segments, candidates)
    got: Parts = {}
    for _span, claimed in each:
        for cause, ns in claimed.items():
            got[cause] = got.get(cause, 0.0) + ns
    return got, free


def whole(cause: Cause, spans: Iterable[tuple[int, int]]) -> list[Span]:
    """Spans that claim all their time for one cause."""
    parts: Parts = {cause: 1.0}
    return [(s, e, parts) for s, e in spans]


def _add(into: dict[Cause, float], more: dict[Cause, float] | Parts) -> None:
    """Add what causes claimed (the loop's own WORK, taken out before, never counts)."""
    for cause, ns in more.items():
        if cause is not None and ns > 0:
            into[cause] = into.get(cause, 0.0) + ns


def _overlap(spans: list[tuple[int, int]], within: list[tuple[int, int]]
             ) -> list[tuple[int, int]]:
    """The parts of `spans` inside any of `within`."""
    return [(max(s, a), min(e, b)) for s, e in spans for a, b in within if min(e, b) > max(s, a)]


def _length(spans: list[tuple[int, int]]) -> int:
    return sum(e - s for s, e in spans)


def excess_of(charged: dict[Cause, float], length: int, floor_ns: float,
              remainder: Cause) -> dict[Cause, float]:
    """A hop's excess over its floor, charged: the floor comes off what nothing explained
    first (the hop's own), then off every charge alike."""
    excess = length - floor_ns
    if excess <= 0:
        return {}
    out = {cause: ns for cause, ns in _fit(charged, excess).items() if ns > 0}
    rest = excess - sum(out.values())
    if rest > 0:
        out[remainder] = out.get(remainder, 0.0) + rest
    return out


class Charger:
    """Charges each wait of a message to what caused it. Built once per run: the timeline,
    and each node's backlog periods, when messages waited for it: its loop stalled or
    collected, its prefetch window was full, RabbitMQ held ready messages in its queue (it
    holds them only for a consumer whose window is full, or that is gone), or messages
    waited in its own backlog. Apart from them, the windows its loop was ready to run
    throughout (busy): a message that reached it then waited its turn to be read. What was
    busy began nothing measured (no stall, no full window): its waits are the loop's waits
    for a CPU meanwhile, and the rest its own work (consumer-saturated).

    Inside a backlog, what began it is charged first: the impediments at its opening, and
    any that alone held the node longer than the budget wherever it fell (a stall inside a
    starved backlog seconds long). What happened inside it otherwise (collections, waits
    for a CPU) shares the rest in proportion to its size: on a core this full, a backlog
    holds every collection of the run, and each message paying them all first made the
    starvation that kept the backlog read as gc-pause."""

    def __init__(self, timeline: Timeline, messages: Iterable[MessageDeliveries],
                 budget_ns: float, connection_causes: dict[str, Cause] | None = None) -> None:
        self.timeline = timeline
        # what a node's loop time on connections coming and going is charged to: churn, or
        # clients that stopped answering pings (connection_cause)
        self.connection_causes = connection_causes or {}
        causes = list(self.connection_causes.values())
        self.load_cause = max(set(causes), key=causes.count) if causes else Cause.CONNECTION_CHURN
        self.builder_ns = budget_ns  # an impediment this long began a backlog of its own
        messages = list(messages)
        spans: dict[str, list[tuple[int, int]]] = {}
        read_by: dict[str, list[MessageDeliveries]] = defaultdict(list)
        for m in messages:
            node_spans = spans.setdefault(m.node, [])
            read_by[m.node].append(m)
            if m.wait_ns > 0:
                node_spans.append((m.t_deq, m.t_deq + m.wait_ns))
        for node, node_spans in spans.items():
            for kind in (EventKind.GC, EventKind.LOOP_STALL, EventKind.WINDOW_FULL,
                         EventKind.QUEUE_BACKLOG):
                found = timeline.get(node, kind)
                node_spans += zip(found.starts, found.ends, strict=True)
        self.backlogs = {node: Intervals(s, gap=GAP_NS) for node, s in spans.items()}
        for node, node_spans in spans.items():
            after = self._read_after(node, read_by[node])
            if after:
                self.backlogs[node] = Intervals(node_spans + after, gap=GAP_NS)
        self.busy = {node: Intervals(timeline.cpu(node).busy_spans(), gap=GAP_NS) for node in spans}
        self.held_apart_ns = held_apart(timeline, messages)
        self.catching_up = {node: self._catching_up(node) for node in spans}

    def _read_after(self, node: str, messages: list[MessageDeliveries]) -> list[tuple[int, int]]:
        """The node's first reads after each of its loop's stalls and collections, as spans
        from its end: the messages that reached it before it ended and were read after it,
        while the node read nothing published later. They piled up in its socket
        meanwhile, and the node read them as soon as its loop got round to it: on a crowded
        host that can be ten milliseconds after a 500 ms stall ended (its lag monitor's
        first tick), and their wait was the node's all along (a live node blocked 500 ms a
        second, on one core beside a CPU hog, read broker-side 42% when only reads within
        GAP_NS of the stall's end counted).

        A message reached the node before the stall ended if its publish plus the mq wait
        of the first message published after the stall (the way to the node as it was
        then, measured on that message's path) came before the end: with every message
        80 ms in RabbitMQ, one published 70 ms before a stall's end was still there when
        it ended, and its wait is not the stall's. Not after a full prefetch window:
        RabbitMQ held those messages, and sent them only when the window opened; nor a
        message that something on the broker's side may have held until the stall ended;
        nor a first read more than a budget after the stall."""
        periods = Intervals(span for kind in NODE_SIDE
                            for span in self.timeline.get(node, kind).within(0, 2 ** 63))
        if not periods.ends:
            return []
        by_publish = sorted(messages, key=lambda m: m.t_pub)
        published = [m.t_pub for m in by_publish]
        spans, fresh_from = [], 0  # a read of a message published after its period ended
        for m in sorted(messages, key=lambda m: m.t_deq):
            i = bisect.bisect_right(periods.ends, m.t_deq) - 1
            if i < 0 or self.backlog_at(node, m.t_deq):  # none before, or read in one
                continue
            end = periods.ends[i]
            if m.t_pub >= end:
                fresh_from = max(fresh_from, end)
                continue
            first_after = bisect.bisect_left(published, end)
            if first_after == len(by_publish):  # nothing measured the way to it since
                continue
            way = by_publish[first_after].t_deq - by_publish[first_after].t_pub
            if (fresh_from < end and m.t_pub + way < end and m.t_deq - end <= self.builder_ns
                    and not self._held_on_the_way(m.t_pub, end)):
                spans.append((end, m.t_deq))
        return spans

    def _held_on_the_way(self, a: int, b: int) -> bool:
        """Whether anything on the broker's side (an outage, an alarm, a block, a stalled
        publisher, a delay queue) may have held a message published at a until b: then it
        need not have reached its node by b."""
        return any(self.timeline.get(whose, kind).within(a, b) for whose, kind, _ in BROKER_SIDE) \
            or bool(self.timeline.get(BROKER, EventKind.QUEUE_BACKLOG).within(a, b))

    def backlog_at(self, node: str, t: int, busy: bool = False) -> tuple[int, int] | None:
        """The node's backlog period (or with `busy`, its busy period) that holds time t,
        or that ended within GAP_NS before it: a loop that unblocks runs what was ready in
        no set order, and a message it read just after its lag monitor closed the stall was
        still behind it (a live node blocked 500 ms a second once read broker-side 66%)."""
        periods = (self.busy if busy else self.backlogs).get(node)
        if periods is None:
            return None
        i = bisect.bisect_right(periods.starts, t) - 1
        if i >= 0 and periods.ends[i] + GAP_NS >= t:
            return periods.starts[i], periods.ends[i]
        return None

    def head(self, m: MessageDeliveries, floor: dict[str, float]
             ) -> tuple[dict[Cause, float], dict[Cause, float]]:
        """The mq and server hops' excess, charged (ns by cause). The mq hop waited for its
        node from when the node's backlog began (or the publish, if later) to t_deq; before
        that, on the broker's side."""
        a, b, c = m.t_pub, m.t_deq, m.t_emit
        mq: dict[Cause, float] = {}
        server: dict[Cause, float] = {}
        backlog = self.backlog_at(m.node, b)
        behind_from = backlog[0] if backlog else b
        # unread behind a busy loop's work before that, if it was busy, unless RabbitMQ
        # held messages apart from every consumer meanwhile (a delay or retry queue): then
        # the message may have been there, and a busy loop is no evidence it was not
        busy = self.backlog_at(m.node, behind_from, busy=True)
        apart = self.timeline.get(BROKER, EventKind.QUEUE_BACKLOG)
        if busy and not apart.within(a, behind_from):
            behind_from = min(behind_from, busy[0])
        waited_from = max(a, behind_from)
        held_until = a  # until then a delay or retry queue held it, by design
        if self.held_apart_ns and apart.within(a, b):  # (no message got through quicker)
            held_until = min(b, a + self.held_apart_ns)
            waited_from = max(waited_from, held_until)
        debt = self._began(m.node, backlog[0], waited_from) if backlog else []
        broker_until = waited_from
        if waited_from == b:  # not behind: yet read only as its loop's connection work ended
            broker_until = self._unread_from(m.node, max(a, held_until), b)
            got, _free = claim([(broker_until, b)], self._loop_work(m.node, broker_until, b))
            _add(mq, _causes(got))
        self._broker_side(m, a, broker_until, mq, held_until)
        self._node_side(m.node, waited_from, b, mq, debt, behind=True)
        handled_from = min(c, b + m.wait_ns)  # its wait in the node's own backlog, then handling
        self._node_side(m.node, b, handled_from, server, debt, behind=True)
        self._node_side(m.node, handled_from, c, server, [], behind=False)
        return (excess_of(mq, b - a, floor[HopName.MQ], REMAINDER[HopName.MQ]),
                excess_of(server, c - b, floor[HopName.SERVER], REMAINDER[HopName.SERVER]))

    def _kinds_of_work(self, node: str) -> tuple[tuple[EventKind, Cause], ...]:
        """The node's loop work its profiler kept as spans, and the cause each is charged
        to: connections coming and going (churn, or clients that stopped answering pings:
        connection_cause), and socket.io's heartbeats."""
        return ((EventKind.CONNECTION_WORK,
                 self.connection_causes.get(node, Cause.CONNECTION_CHURN)),
                (EventKind.HEARTBEAT_WORK, Cause.HEARTBEATS))

    def _loop_work(self, node: str, a: int, b: int) -> list[Span]:
        """The node's loop time on connections and on heartbeats within [a, b] (its
        profiler's samples), claimed whole for the cause each is charged to."""
        return [span for kind, cause in self._kinds_of_work(node)
                for span in whole(cause, self.timeline.get(node, kind).within(a, b))]

    def _unread_from(self, node: str, a: int, b: int) -> int:
        """Where the node's run of connection work or heartbeats that ended as it read a
        message at b began (b if none did): a loop serving handshakes, or writing a wave of
        pings, leaves RabbitMQ's deliveries unread in its socket, time the mq hop counts.
        Samples of that work no further apart than CHAIN_NS are one run; only the samples
        are charged, not the time between them (the loop did other work then, unmeasured)."""
        start = b
        for s, e, _parts in sorted(self._loop_work(node, a, b), key=lambda span: -span[1]):
            if e < start - CHAIN_NS:
                break
            start = min(start, s)
        return start

    def delivery(self, m: MessageDeliveries, after_emit: int, floor_ns: float
                 ) -> dict[Cause, float]:
        """The delivery hop of a receipt `after_emit` ns after the emit, charged."""
        a, b = m.t_emit, m.t_emit + after_emit
        out: dict[Cause, float] = {}
        free, room = self._impeded(m.node, [(a, b)], out)
        later = whole(Cause.FANOUT_BOUND, [(a, min(b, a + m.fanout_ns))] if m.fanout_ns > 0 else [])
        for kind, cause in SWARM_SIDE:
            later += whole(cause, self.timeline.get(m.swarm, kind).within(a, b))
        # the node's writes to its members waited while its loop served connections or
        # heartbeats
        later += self._loop_work(m.node, a, b)
        got, _ = claim(free, later)
        _add(out, _fit(_causes(got), room))
        return excess_of(out, after_emit, floor_ns, REMAINDER[HopName.DELIVERY])

    def _broker_side(self, m: MessageDeliveries, a: int, b: int, out: dict[Cause, float],
                     held_until: int) -> None:
        """[a, b] of message m on the broker's side: its outages, alarms and blocks; then,
        after `held_until`, the way to RabbitMQ (its publish leg, at the start) and from
        it (its deliver leg, at the end, when [a, b] reaches its node): the least of its
        links' legs then (network); then what RabbitMQ's own counters measured while it
        held the message (its cgroup's quota, its schedulers' waits for a CPU and own work:
        BrokerSeries); then, of what they leave, up to the jitter the links showed nearby
        (network again); the rest is broker-side."""
        if b <= a:
            return
        got, free = claim([(a, b)], [span for whose, kind, cause in BROKER_SIDE
                                     for span in whole(cause, self.timeline.get(whose, kind).within(a, b))])
        _add(out, got)
        free = [(max(s, held_until), e) for s, e in free if e > held_until]
        if not free:
            return
        legs = self.timeline.legs
        head = legs.spread(PUBLISHER, a) if free[0][0] == a else (0.0, 0.0)
        tail = legs.spread(m.node, b) if free[-1][1] == b == m.t_deq else (0.0, 0.0)
        free, on_the_way = _trim(free, head[0], tail[0])
        throttled, starved, busy = self.timeline.broker.charges(free)
        charges = {Cause.BROKER_THROTTLED: throttled, Cause.BROKER_BUSY: busy}
        # its waits for a CPU by who had it: a node spinning, or catching up after a stall
        # of its own, took it as it takes its neighbours' (on one core, n1's 200 ms spin
        # once read as broker-starved); the rest is the broker's starvation
        for cause, ns in self._starved(BROKER, free, starved).items():
            cause = Cause.BROKER_STARVED if cause == Cause.CPU_STARVED else cause
            charges[cause] = charges.get(cause, 0.0) + ns
        charges = _fit(charges, _length(free))
        # what RabbitMQ's counters leave, up to the jitter its links showed nearby beyond
        # the control's, was on the way too: the tail of a jittered link is its longest
        # legs, and its least one left that jitter to broker-side (n1:30ms+20ms read
        # broker-side 44%); a crowded host's spread is in the control's too
        left = _length(free) - sum(charges.values())
        jitter = ((legs.jitter(head, a) if head[1] else 0.0)
                  + (legs.jitter(tail, b) if tail[1] else 0.0))
        charges[Cause.NETWORK] = on_the_way + max(0.0, min(left, jitter))
        _add(out, charges)

    def _impeded(self, node: str, segments: list[tuple[int, int]], out: dict[Cause, float],
                 waits: bool = True) -> tuple[list[tuple[int, int]], float]:
        """Charge what impeded the node within the segments: its collections and stalls by
        their parts, then (with `waits`) its loop's waits for a CPU on what they left.
        Returns the parts no interval claimed, and the ns left to the hop's own cause: what
        no interval claimed, and the loop's own work in its stalls, less the waits charged
        pro rata."""
        timeline = self.timeline
        got, free = claim(segments, [span for kind in NODE_SIDE for a, b in segments
                                     for span in timeline.parts_within(node, kind, a, b)])
        work = got.pop(WORK, 0.0)
        # a stall's wait for a CPU, by who had the CPU, as the loop's waits between stalls
        _add(out, self._starved(node, segments, got.pop(Cause.CPU_STARVED, 0.0)))
        _add(out, got)
        if not waits:
            return free, _length(free) + work
        waiting, throttled = timeline.cpu(node).waits_in(free)
        charged = _fit({**self._starved(node, free, waiting), Cause.CPU_THROTTLED: throttled},
                       _length(free))
        _add(out, charged)
        return free, _length(free) + work - sum(charged.values())

    def _node_side(self, node: str, u: int, v: int, out: dict[Cause, float],
                   debt: list[list[Any]], behind: bool) -> None:
        """[u, v] of a message at its node. While the node was behind: its stalls and
        collections meanwhile, then what began its backlog before (debt, used up as it is
        charged), then its loop's waits for a CPU meanwhile, then those that slowed the
        drain before, and the rest to the consumer's saturation. Once its handling began,
        the handler's own span: the loop's waits then were for other work (the handler may
        be awaiting a timer or I/O), so only stalls and collections count."""
        if v <= u:
            return
        if not behind:
            self._impeded(node, [(u, v)], out, waits=False)
            return
        own: dict[Cause, float] = {}
        self._impeded(node, [(u, v)], own)
        left = float(v - u)
        # what impeded it meanwhile, then what began its backlog, then the waits for a CPU
        # meanwhile (they slow a drain), then the rest of the backlog's builders by size
        builders = _fit({c: ns for c, ns in own.items() if c not in DRAIN_SLOWERS}, left)
        _add(out, builders)
        left = _pay(debt, left - sum(builders.values()), out)
        slowers = _fit({c: ns for c, ns in own.items() if c in DRAIN_SLOWERS}, left)
        _add(out, slowers)
        left = _share(debt, left - sum(slowers.values()), out)
        # then its loop's time on connections coming and going, and on heartbeats,
        # meanwhile, and only what that leaves to the consumer's own saturation
        got, _free = claim([(u, v)], self._loop_work(node, u, v))
        churn = _fit(_causes(got), left)
        _add(out, churn)
        left -= sum(churn.values())
        if left > 0:
            out[Cause.CONSUMER_SATURATED] = out.get(Cause.CONSUMER_SATURATED, 0.0) + left

    def _began(self, node: str, backlog_start: int, until: int) -> list[list[Any]]:
        """What impeded the node from the start of its backlog until `until`, and a broker
        fault that ended up to LEAD_NS before it began: the backlog's builders, as
        [cause, ns, began it] in the order they happened. An impediment began the backlog
        if it came at its opening (within GAP_NS), or held the node longer than the budget
        on its own; _node_side charges those before the waits for a CPU meanwhile."""
        start = backlog_start - LEAD_NS
        if until <= start:
            return []
        timeline = self.timeline
        broker = [span for whose, kind, cause in BACKLOG_BUILDERS
                  for span in whole(cause, [(s, min(e, until)) for s, e in
                                            timeline.get(whose, kind).overlapping(start, until)])]
        # RabbitMQ held back by its quota up to the opening: it released what it held in a
        # burst, and the node's backlog was that burst (a broker under a 5% quota on one core
        # read as the nodes' starvation and saturation)
        broker += timeline.broker.throttled_spans(start, min(until, backlog_start + GAP_NS))
        node_spans = [span for kind in NODE_SIDE
                      for span in timeline.parts_within(node, kind, backlog_start, until)]
        # a storm of connections (or a wave of pings) at its opening began it as a stall
        # would have
        node_spans += self._loop_work(node, backlog_start, until)
        earliest = min([backlog_start] + [s for s, _e, _parts in broker])
        # the same precedence as a message's own span (a collection inside a stall counts
        # once), each interval's claim kept with when it began
        each, free = claim_each([(earliest, until)], broker + node_spans)
        happened = [(span[0], cause, ns, True) for span, got in each for cause, ns in got.items()
                    if cause is not WORK]
        # the loop's waits for a CPU between those intervals (its 100 ms windows), by who
        # had the CPU; a wait never began a backlog by its size
        series = timeline.cpu(node)
        for s, e in free:
            s = max(s, backlog_start)
            if e <= s:
                continue
            waiting, throttled = series.waits_in([(s, e)])
            happened += [(s, cause, ns, False) for cause, ns in (
                *self._starved(node, [(s, e)], waiting).items(),
                (Cause.CPU_THROTTLED, throttled)) if ns > 0]
        opening = backlog_start + GAP_NS
        return [[cause, ns, when <= opening or (sized and ns >= self.builder_ns
                                                and cause not in DRAIN_SLOWERS)]
                for when, cause, ns, sized in sorted(happened, key=lambda item: item[0])]

    def _storms(self, node: str, kind: EventKind) -> list[tuple[int, int, int]]:
        """The node's runs of one kind of loop work (connections, heartbeats; samples no
        further apart than CHAIN_NS): [start, end, ns its samples cover]."""
        runs: list[tuple[int, int, int]] = []
        work = self.timeline.get(node, kind)
        for s, e in zip(work.starts, work.ends, strict=True):
            if runs and s - runs[-1][1] <= CHAIN_NS:
                start, _end, covered = runs[-1]
                runs[-1] = (start, e, covered + e - s)
            else:
                runs.append((s, e, e - s))
        return runs

    def _catching_up(self, node: str) -> list[tuple[int, int, Cause]]:
        """The node's stalls, collections, storms of connections and waves of pings that
        alone held it longer than the budget (a blocking call, a spin, a long collection,
        hundreds of handshakes or thousands of pings at once), each from its start to the
        end of the backlog it began (to its own end, if the node was behind already: a
        starved node that never caught up is not catching up on that stall): meanwhile the
        node spun, or caught up on what had piled up, and the CPU it used then was taken
        from whoever waited beside it on the core."""
        out = []
        # a storm its loop served (a run of that work longer than the budget in all), as a
        # stall: what it used then and while it caught up after
        for kind, cause in self._kinds_of_work(node):
            for s, e, work in self._storms(node, kind):
                if work >= self.builder_ns:
                    backlog = self.backlog_at(node, s)
                    began = backlog is not None and backlog[0] >= s - GAP_NS
                    out.append((s, max(e, backlog[1]) if backlog and began else e, cause))
        for kind in NODE_SIDE:
            for s, e, parts in self.timeline.parts_within(node, kind, 0, 2 ** 63):
                for cause in (Cause.SERVER_STALL, Cause.GC_PAUSE):
                    if parts.get(cause, 0.0) * (e - s) >= self.builder_ns:
                        backlog = self.backlog_at(node, s)
                        began = backlog is not None and backlog[0] >= s - GAP_NS
                        out.append((s, max(e, backlog[1]) if backlog and began else e, cause))
        apart: list[tuple[int, int, Cause]] = []  # overlaps kept by the earlier one
        for s, e, cause in sorted(out):
            s = max(s, apart[-1][1]) if apart else s
            if e > s:
                apart.append((s, e, cause))
        return apart

    def catch_up_lines(self) -> list[str]:
        """For the evidence: each node that caught up after a stall or collection while
        another waited for a CPU, with what compare's samples measured meanwhile."""
        lines = []
        for node, periods in self.catching_up.items():
            spans = [(s, e) for s, e, _cause in periods]
            wall = _length(spans)
            waited = {other: self.timeline.cpu(other).waits_in(spans)[0]
                      for other in self.catching_up if other != node}
            used = self.timeline.used(node, spans)
            if not wall or not used or not any(ns >= STALL_MIN_NS for ns in waited.values()):
                continue
            lines.append(
                f"{node} spun or caught up after its stalls, collections, storms of "
                f"connections or waves of pings for {wall / 1e6:.0f} ms in all, on a CPU "
                f"{used / wall:.0%} of it; meanwhile "
                + ", ".join(f"{other} waited for a CPU {ns / 1e6:.0f} ms"
                            for other, ns in waited.items() if ns >= STALL_MIN_NS)
                + f": the share of those waits that went to {node} is charged to what stopped it")
        return lines

    def _starved(self, node: str, spans: list[tuple[int, int]], waiting: float
                 ) -> dict[Cause, float]:
        """A node's waits for a CPU within the spans, by who had the CPU meanwhile: the
        share of what others used that went to another node spinning, or catching up after
        a stall or collection of its own, is charged to that stall or collection (it began
        this starvation, as it began its own node's backlog); the rest is cpu-starved.
        Without compare's CPU samples (the host's busy CPU), all of it is cpu-starved."""
        if waiting <= 0:
            return {}
        others = self.timeline.used(HOST_CPU, spans) - self.timeline.used(node, spans)
        if others <= 0:  # no samples of who had the CPU
            return {Cause.CPU_STARVED: waiting}
        out: dict[Cause, float] = {}
        first, last = min(a for a, _b in spans), max(b for _a, b in spans)
        for other, periods in self.catching_up.items():
            if other == node:
                continue
            for s, e, cause in periods:
                clipped = [(max(a, s), min(b, e)) for a, b in spans if min(b, e) > max(a, s)]
                if clipped:
                    out[cause] = out.get(cause, 0.0) + self.timeline.used(other, clipped)
            # and, outside those periods (all it used in them is charged above), the share
            # that went to its loop serving connections or heartbeats meanwhile (its
            # profiler's samples there, at most what it used): a storm of handshakes on one
            # node starves its neighbour as a spin would
            apart = Intervals((p, q) for p, q, _c in periods)
            for kind, cause in self._kinds_of_work(other):
                serving = [part for s, e in self.timeline.get(other, kind).within(first, last)
                           if any(min(e, b) > max(s, a) for a, b in spans)
                           for part in _outside(s, e, apart)]
                if serving:
                    out[cause] = out.get(cause, 0.0) + min(
                        float(_length(_overlap(serving, spans))),
                        self.timeline.used(other, serving))
        # and what the load process used (its members only come and go: all its CPU is
        # connection work, the clients' side of the same storm), charged as this node's own
        # connection work is (RabbitMQ's waits: the nodes' cause, as most of them have it)
        load = self.timeline.used(LOAD_PIECE, spans)
        if load > 0:
            cause = self.connection_causes.get(node, self.load_cause)
            out[cause] = out.get(cause, 0.0) + load
        took = sum(out.values())
        if took <= 0:
            return {Cause.CPU_STARVED: waiting}
        scale = waiting * min(1.0, took / others) / took
        out = {cause: ns * scale for cause, ns in out.items()}
        rest = waiting - sum(out.values())
        if rest > 0:
            out[Cause.CPU_STARVED] = rest
        return out


def _trim(spans: list[tuple[int, int]], head: float, tail: float
          ) -> tuple[list[tuple[int, int]], float]:
    """The spans less `head` ns from their beginning and `tail` ns from their end, and the
    ns taken off (at most all of them)."""
    total = _length(spans)
    head, tail = min(head, total), min(tail, max(0.0, total - head))
    out, skip = [], head
    for s, e in spans:
        cut = min(skip, e - s)
        skip -= cut
        if e > s + cut:
            out.append((int(s + cut), e))
    kept, skip = [], tail
    for s, e in reversed(out):
        cut = min(skip, e - s)
        skip -= cut
        if e - cut > s:
            kept.append((s, int(e - cut)))
    return kept[::-1], head + tail


def _pay(debt: list[list[Any]], room: float, out: dict[Cause, float]) -> float:
    """Charge `room` ns to the debt's items that began the backlog, in order, using them
    up; returns the ns left."""
    for item in debt:
        if room <= 0:
            break
        if not item[2] or item[1] <= 0:
            continue
        take = min(room, item[1])
        out[item[0]] = out.get(item[0], 0.0) + take
        item[1] -= take
        room -= take
    return max(0.0, room)


def _share(debt: list[list[Any]], room: float, out: dict[Cause, float]) -> float:
    """Charge `room` ns to what is left of the debt, each item in proportion to its size,
    using them up; returns the ns left."""
    total: float = sum(item[1] for item in debt if item[1] > 0)
    if room <= 0 or total <= 0:
        return max(0.0, room)
    scale = min(1.0, room / total)
    for item in debt:
        if item[1] > 0:
            out[item[0]] = out.get(item[0], 0.0) + item[1] * scale
            item[1] -= item[1] * scale
    return max(0.0, room - total * scale)


def _causes(parts: Parts) -> dict[Cause, float]:
    """What causes claimed, the loop's own WORK left out."""
    return {cause: ns for cause, ns in parts.items() if cause is not None}


def _fit(charges: dict[Cause, float], room: float) -> dict[Cause, float]:
    """Charges scaled down to fit in `room` ns, if they do not."""
    total = sum(charges.values())
    if total <= room or total <= 0:
        return charges
    scale = max(0.0, room) / total
    return {cause: ns * scale for cause, ns in charges.items()}


def weighted_percentile(pairs: Sequence[tuple[float, int]], pct: float) -> float:
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


def held_apart(timeline: Timeline, messages: Iterable[MessageDeliveries]) -> int:
    """The least mq hop (ns) of the messages on their way while RabbitMQ held ready
    messages in a queue no node consumes (a delay or retry queue; 0 when it held none):
    each such message may have been there, and none got through quicker, so that much of
    its trip was the broker's whatever its node was doing. On a crowded core the node's
    backlog began before a message could have left an 80 ms TTL queue, and took half of it."""
    apart = timeline.get(BROKER, EventKind.QUEUE_BACKLOG)
    if not apart.starts:
        return 0
    return min((m.t_deq - m.t_pub for m in messages if apart.within(m.t_pub, m.t_deq)),
               default=0)


MQ_LEGS_HOW = ("each message's publish leg and deliver leg are half the least AMQP round "
               "trip of its link within 1 s of it, each round trip less what RabbitMQ took to "
               "answer compare's own link then (beyond the kernel's least round trip): lower "
               "bounds; what is left of its mq hop is RabbitMQ's, an upper bound (a jittered "
               "link's jitter is in it)")


def mq_legs(messages: Iterable[MessageDeliveries], legs: LinkLegs) -> MqLegs | None:
    """The mq hop of each message (once per node it reached) split by its links' round
    trips; None where no link was measured."""
    parts: list[tuple[float, float, float]] = []
    for m in {(m.group, m.seq, m.node): m for m in messages}.values():
        publish, deliver = legs.one_way(PUBLISHER, m.t_pub), legs.one_way(m.node, m.t_deq)
        mq = m.t_deq - m.t_pub
        publish = min(publish, mq)
        deliver = min(deliver, mq - publish)
        parts.append((publish, mq - publish - deliver, deliver))
    if not parts or not legs.measured:
        return None

    def summary(i: int) -> tuple[float, float, float]:
        values = sorted(part[i] for part in parts)
        return (round(values[len(values) // 2] / 1e6, 3),
                round(values[min(len(values) - 1, int(len(values) * 0.99))] / 1e6, 3),
                round(values[-1] / 1e6, 3))
    return MqLegs(summary(0), summary(1), summary(2), MQ_LEGS_HOW)


def floors(messages: list[MessageDeliveries], budget_ns: float) -> dict[str, float]:
    """Each hop's floor (ns): its typical value at light load, capped by the budget."""
    mq = [(m.t_deq - m.t_pub, m.count) for m in messages]
    server = [(m.t_emit - m.t_deq, m.count) for m in messages]
    delivery = [(d, n) for m in messages for d, n in m.receipts]
    cap = budget_ns * FLOOR_BUDGET_SHARE
    return {hop: max(0.0, min(cap, weighted_percentile(pairs, FLOOR_PERCENTILE)))
            for hop, pairs in ((HopName.MQ, mq), (HopName.SERVER, server), (HopName.DELIVERY, delivery))}


def attribute(messages: list[MessageDeliveries],
              events: Iterable[TimedEvent] | Timeline | Charger, budget_ms: float,
              ) -> Attribution | None:
    """Charge the tail's excess to causes; None when nothing was delivered. `events` may be
    a Timeline or a Charger already built (one per run serves every group: a node's
    backlog is the same whichever group's message waited in it)."""
    if not messages or not any(m.receipts for m in messages):
        return None
    budget_ns = budget_ms * 1e6
    floor = floors(messages, budget_ns)
    e2e = [(m.t_emit - m.t_pub + d, n) for m in messages for d, n in m.receipts]
    over = sum(n for value, n in e2e if value > budget_ns)
    # the budget is missed when p99 e2e is over it (a handful of late deliveries is the
    # p99 tail's story, not a missed budget)
    if over > sum(n for _, n in e2e) * (100.0 - TAIL_PERCENTILE) / 100.0:
        tail, threshold = Tail.OVER_BUDGET, float(budget_ns)
    else:
        tail, threshold = Tail.P99, weighted_percentile(e2e, TAIL_PERCENTILE)
    if isinstance(events, Charger):
        charger = events
    else:
        charger = Charger(events if isinstance(events, Timeline) else Timeline(events), messages,
                          budget_ns)
    totals: dict[Cause, float] = defaultdict(float)
    by_hop: dict[str, float] = defaultdict(float)
    tail_count = 0
    for m in messages:
        head = m.t_emit - m.t_pub
        in_tail = [(d, n) for d, n in m.receipts
                   if (head + d > threshold if tail == Tail.OVER_BUDGET else head + d >= threshold)]
        if not in_tail:
            continue
        weight = sum(n for _, n in in_tail)
        tail_count += weight
        for hop, charges in zip((HopName.MQ, HopName.SERVER), charger.head(m, floor), strict=True):
            for cause, ns in charges.items():
                totals[cause] += ns * weight
                by_hop[hop] += ns * weight
        for d, n in in_tail:
            for cause, ns in charger.delivery(m, d, floor[HopName.DELIVERY]).items():
                totals[cause] += ns * n
                by_hop[HopName.DELIVERY] += ns * n
    excess = sum(totals.values())
    shares = sorted((Share(cause, ns / excess, ns / tail_count / 1e6)
                     for cause, ns in totals.items()), key=lambda s: -s.share) if excess else []
    return Attribution(
        floors_ms={hop: round(v / 1e6, 3) for hop, v in floor.items()}, tail=tail,
        tail_deliveries=tail_count, deliveries=sum(n for _, n in e2e),
        excess_ms=excess / tail_count / 1e6 if tail_count else 0.0, shares=shares,
        hop_shares={hop: by_hop[hop] / excess for hop in PATH_HOPS} if excess else {})



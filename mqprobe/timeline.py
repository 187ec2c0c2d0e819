"""One timeline per run: what each piece went through, as timed intervals.

A hop says how long a message took; the timeline says what was happening meanwhile. Each
piece records intervals on its own clock (CLOCK_REALTIME, like the stamps): garbage
collections over 1 ms, event-loop stalls, the intervals when a consumer's prefetch window
was full or it was busy, when the broker blocked the publisher's connection. compare adds
what it sees of the broker (queue backlogs, alarms, the broker unreachable), moves every
interval onto its own clock with the piece's clock offset, and the attribution
(mqprobe.verdict.attribution) charges each delivery's excess to the intervals that overlap it.

Recording is cheap and bounded: a piece keeps at most `limit` events and counts the rest.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import FrameType
from typing import Any

from mqprobe.cpu import Anatomy, CpuReading, ThreadCounters
from mqprobe.stamps import now_ns

GC_MIN_NS = 1_000_000  # a collection shorter than this is not worth an event
STALL_MIN_NS = 5_000_000  # a loop that woke this late stalled (a healthy loop: well under 1 ms)
BUSY_MIN_NS = 5_000_000  # a consumer busy this long without a break


class EventKind(StrEnum):
    """What an interval on the timeline was."""

    GC = "gc"  # a garbage collection (generation, collected)
    LOOP_STALL = "loop-stall"  # the event loop could not run (cpu_share through it)
    WINDOW_FULL = "window-full"  # a consumer's unacked deliveries filled its prefetch window
    CONSUMER_BUSY = "consumer-busy"  # a consumer handled messages without a break
    PUBLISHER_BLOCKED = "publisher-blocked"  # the broker blocked the publisher (connection.blocked)
    QUEUE_BACKLOG = "queue-backlog"  # a queue held ready messages (depth samples)
    BROKER_ALARM = "broker-alarm"  # a memory or disk alarm (management API)
    BROKER_UNAVAILABLE = "broker-unavailable"  # the broker could not be reached
    CLIENT_DOWN = "client-down"  # a swarm member lost its connection until it joined again
    CONNECTION_WORK = "connection-work"  # a node's loop on connections coming and going
    # (its profiler's samples: handshakes, joins, disconnects)
    HEARTBEAT_WORK = "heartbeat-work"  # a node's loop on engine.io's pings, pongs and
    # liveness checks (its profiler's samples)


@dataclass(slots=True)
class TimedEvent:
    """One interval [start_ns, end_ns] of one piece, on the clock it is stated on."""

    kind: EventKind
    piece: str
    start_ns: int
    end_ns: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def shifted(self, by_ns: int) -> TimedEvent:
        return TimedEvent(self.kind, self.piece, self.start_ns + by_ns, self.end_ns + by_ns,
                          self.detail)

    def to_wire(self) -> list[Any]:
        """Compact form for a piece's result: [kind, start_ns, end_ns, detail]."""
        return [self.kind.value, self.start_ns, self.end_ns, self.detail]

    @classmethod
    def from_wire(cls, piece: str, raw: list[Any]) -> TimedEvent:
        kind, start, end, detail = raw
        return cls(EventKind(kind), piece, int(start), int(end), dict(detail or {}))

    def to_json(self, t0_ns: int) -> dict[str, Any]:
        """For the result JSON: times in ms since the run's first publish."""
        return {"kind": self.kind.value, "piece": self.piece,
                "start_ms": round((self.start_ns - t0_ns) / 1e6, 3),
                "end_ms": round((self.end_ns - t0_ns) / 1e6, 3), **self.detail}


class Recorder:
    """A piece's own timeline: bounded, and cleared when measuring starts. With `ring` (a
    server that embeds mqprobe for hours) it keeps the latest `limit` events, not the first."""

    def __init__(self, piece: str = "", limit: int = 20_000, ring: bool = False) -> None:
        self.piece, self.limit, self.ring = piece, limit, ring
        self.events: list[TimedEvent] | deque[TimedEvent] = deque(maxlen=limit) if ring else []
        self.dropped = 0
        # per kind, unbounded by `limit`: count, time in all and the longest (ns)
        self.totals: dict[EventKind, list[int]] = {}
        self._gc_started = 0
        self._gc_watching = False
        self._gc_counters: ThreadCounters | None = None  # watch_gc(anatomy=True)
        # what a collection's thread was doing as its allocation began the collection (the
        # node's: watch.profile.work_here): said beside each collection, never charged
        self.gc_began_in: Callable[[FrameType], str] | None = None
        self._gc_reading: CpuReading | None = None

    def add(self, kind: EventKind, start_ns: int, end_ns: int, **detail: object) -> None:
        total = self.totals.setdefault(kind, [0, 0, 0])  # count, ns in all, longest ns
        total[0] += 1
        total[1] += end_ns - start_ns
        total[2] = max(total[2], end_ns - start_ns)
        if len(self.events) >= self.limit:
            self.dropped += 1
            if not self.ring:
                return
        self.events.append(TimedEvent(kind, self.piece, start_ns, end_ns, detail))

    def reset(self) -> None:
        """Measure from now on: what set-up went through is not part of the run."""
        self.events.clear()
        self.dropped = 0
        self.totals.clear()

    def to_wire(self) -> dict[str, Any]:
        return {"events": [e.to_wire() for e in self.events], "dropped": self.dropped}

    # -- garbage collections -------------------------------------------------------------
    def watch_gc(self, anatomy: bool = False) -> None:
        """Record every collection over GC_MIN_NS (gc.callbacks: two calls per collection).
        With `anatomy` (from the thread that runs the loop), each is also split like a
        loop stall (cpu.Anatomy): a collection stretched by waiting for a CPU is not the
        collector's doing. It costs two reads of the thread's counters per collection."""
        if anatomy and self._gc_counters is None:
            counters = ThreadCounters()
            self._gc_counters = counters if counters.available else None
        if not self._gc_watching:
            gc.callbacks.append(self._on_gc)
            self._gc_watching = True

    def unwatch_gc(self) -> None:
        if self._gc_watching:
            gc.callbacks.remove(self._on_gc)
            self._gc_watching = False
        if self._gc_counters:
            self._gc_counters.close()
            self._gc_counters = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = now_ns()
            if self._gc_counters:
                self._gc_reading = self._gc_counters.read()
            return
        if not self._gc_started:
            return
        end = now_ns()
        if end - self._gc_started >= GC_MIN_NS:
            detail = {"generation": info.get("generation", -1),
                      "collected": info.get("collected", 0)}
            if self._gc_counters and self._gc_reading:
                detail.update(Anatomy.between(self._gc_reading, self._gc_counters.read(),
                                              end - self._gc_started).to_detail())
            if self.gc_began_in is not None:  # the work whose allocation began it
                with contextlib.suppress(Exception):
                    detail["began_in"] = self.gc_began_in(sys._getframe(1))
            self.add(EventKind.GC, self._gc_started, end, **detail)
        self._gc_started = 0

    # -- the broker blocking a connection -------------------------------------------------
    def watch_connection_blocked(self) -> None:
        """Record connection.blocked/unblocked from the broker; aiormq handles both itself
        and only logs them (logger `aiormq.connection`), so the log is what we observe."""
        logger = logging.getLogger("aiormq.connection")
        logger.addHandler(_BlockedHandler(self))
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)


class _BlockedHandler(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.WARNING)
        self.recorder = recorder
        self.blocked_at = 0
        self.reason = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = str(record.msg)
        if "was blocked by" in text:
            self.blocked_at = now_ns()
            self.reason = str(record.args[-1]) if isinstance(record.args, tuple) and \
                record.args else ""
        elif "was unblocked" in text and self.blocked_at:
            self.recorder.add(EventKind.PUBLISHER_BLOCKED, self.blocked_at, now_ns(),
                              reason=self.reason)
            self.blocked_at = 0

    def close_open(self) -> None:
        if self.blocked_at:  # still blocked when the piece stopped
            self.recorder.add(EventKind.PUBLISHER_BLOCKED, self.blocked_at, now_ns(),
                              reason=self.reason, open=True)
            self.blocked_at = 0


def close_open_intervals(recorder: Recorder) -> None:
    """Intervals still open when a piece stops end now (a block that never lifted)."""
    for handler in logging.getLogger("aiormq.connection").handlers:
        if isinstance(handler, _BlockedHandler) and handler.recorder is recorder:
            handler.close_open()


class IntervalTracker:
    """Turns a condition that comes and goes (window full, consumer busy) into intervals."""

    __slots__ = ("recorder", "kind", "min_ns", "since", "detail")

    def __init__(self, recorder: Recorder, kind: EventKind, min_ns: int = 0,
                 **detail: object) -> None:
        self.recorder, self.kind, self.min_ns, self.detail = recorder, kind, min_ns, detail
        self.since = 0

    def begin(self, at: int = 0) -> None:
        """The condition holds from now (or from `at`, when it was seen to start earlier)."""
        if not self.since:
            self.since = at or now_ns()

    def end(self) -> None:
        if self.since:
            end = now_ns()
            if end - self.since >= self.min_ns:
                self.recorder.add(self.kind, self.since, end, **self.detail)
            self.since = 0


def freeze_setup() -> bool:
    """Before measuring: collect once, then move everything set-up allocated (thousands of
    joined clients) out of the collector's reach (gc.freeze). Otherwise the full
    collection that set-up's allocations have made due falls in the measurement, and
    scanning them all stops the loop for tens of ms. MQPROBE_GC_FREEZE=0 does neither
    (the behaviour before), to measure what this saves."""
    if os.environ.get("MQPROBE_GC_FREEZE", "1") == "0":
        return False
    gc.collect()
    gc.freeze()
    return True

"""Latency records: HDR histograms built on the fly, shipped between processes, merged.

Values are recorded in microseconds (HDR, 3 significant digits, 1 us .. 1 h) and reported
in milliseconds. A negative value (clock skew between hosts) is never dropped or made
positive: it is counted, with the most negative value kept, and reported beside the hop.
"""

from __future__ import annotations

import time
from typing import Any

from hdrh.histogram import HdrHistogram

from mqprobe.model import HopSummary, LagSummary
from mqprobe.timeline import BUSY_MIN_NS, EventKind, IntervalTracker, Recorder

_HIGHEST_US = 3600 * 1_000_000
_EXACT_BITS = 11  # 3 significant digits: HDR counts each value below 2**11 us exactly
_EXACT_US = 1 << _EXACT_BITS


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST_US, 3)


class Latency:
    """One hop's distribution: an HDR histogram plus what it cannot hold.

    Values are counted in a dict by the HDR bucket they fall in (each microsecond below
    2,048 us, above it the bucket's lowest value: 3 significant digits) and go into the
    histogram when it is read, each bucket once with its count. The histogram is the same as
    recording each value one by one; recording costs a dict increment, not hdrh's 2.5 us,
    and never a pause to catch up (the swarm records five hops per delivery)."""

    __slots__ = ("_hist", "negative", "min_ns", "max_ns", "_counts")

    def __init__(self, hist: HdrHistogram | None = None, negative: int = 0, min_ns: int = 0,
                 max_ns: int = 0) -> None:
        self._hist = hist if hist is not None else new_histogram()
        self.negative, self.min_ns, self.max_ns = negative, min_ns, max_ns
        self._counts: dict[int, int] = {}

    def record(self, value_ns: int) -> None:
        if value_ns < 0:  # clock skew: counted and its extreme kept, never in the histogram
            self.negative += 1
            if value_ns < self.min_ns:
                self.min_ns = value_ns
            return
        if value_ns > self.max_ns:
            self.max_ns = value_ns
        micros = value_ns // 1000
        if micros >= _EXACT_US:  # the lowest value of its HDR bucket: the same counter
            if micros > _HIGHEST_US:
                micros = _HIGHEST_US
            shift = micros.bit_length() - _EXACT_BITS
            micros = micros >> shift << shift
        counts = self._counts
        counts[micros] = counts.get(micros, 0) + 1

    def _flush(self) -> None:
        if self._counts:
            record = self._hist.record_value
            for micros, count in self._counts.items():
                record(micros, count)
            self._counts.clear()

    @property
    def hist(self) -> HdrHistogram:
        self._flush()
        return self._hist

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count()) + self.negative

    def merge(self, other: Latency) -> None:
        self.hist.add(other.hist)
        self.negative += other.negative
        self.min_ns = min(self.min_ns, other.min_ns)
        self.max_ns = max(self.max_ns, other.max_ns)

    def to_json(self) -> dict[str, Any]:
        return {"hdr": self.hist.encode().decode(), "negative": self.negative,
                "min_ns": self.min_ns, "max_ns": self.max_ns}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Latency:
        hist = HdrHistogram.decode(data["hdr"]) if data.get("hdr") else new_histogram()
        return cls(hist, data.get("negative", 0), data.get("min_ns", 0), data.get("max_ns", 0))

    def lag_summary(self) -> LagSummary:
        """The short form the contract uses for loop lag: p50, p99, max in ms."""
        full = self.summary()
        return {"p50": full["p50_ms"], "p99": full["p99_ms"], "max": full["max_ms"]}

    def summary(self) -> HopSummary:
        """The contract's hop shape (count, p50..p999, max in ms) plus negative-skew counts."""
        recorded = self.hist.get_total_count()

        def ms_at(pct: float) -> float:
            return round(self.hist.get_value_at_percentile(pct) / 1000, 3) if recorded else 0.0

        out: HopSummary = {"count": self.count, "p50_ms": ms_at(50.0), "p90_ms": ms_at(90.0),
                           "p99_ms": ms_at(99.0), "p999_ms": ms_at(99.9),
                           "max_ms": round(self.max_ns / 1e6, 3)}
        if self.negative:
            out["negative"] = self.negative
            out["min_ms"] = round(self.min_ns / 1e6, 3)
        return out


class Reasons(dict[str, Any]):
    """Why events went untraced, each with how often: at most `limit` reasons of `chars`
    characters (a foreign server must not grow it without end); further reasons are
    counted together under "(other reasons)"."""

    def __init__(self, limit: int, chars: int) -> None:
        super().__init__()
        self.limit, self.chars = limit, chars

    def add(self, reason: str) -> None:
        reason = reason[:self.chars]
        if reason not in self and len(self) >= self.limit:
            reason = "(other reasons)"
        self[reason] = self.get(reason, 0) + 1


class HopSet(dict[str, Any]):
    """Latency per hop name, created on first use."""

    def __missing__(self, hop: str) -> Latency:
        latency = self[hop] = Latency()
        return latency

    def merge(self, other: HopSet) -> None:
        for hop, latency in other.items():
            self[hop].merge(latency)

    def to_json(self) -> dict[str, Any]:
        return {hop: latency.to_json() for hop, latency in self.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HopSet:
        hops = cls()
        for hop, raw in data.items():
            hops[hop] = Latency.from_json(raw)
        return hops


class BusyMeter:
    """Share of wall time a consumer spends handling messages (1.0 = never idle); with a
    tracker, each busy period (handling without a break) is also an interval."""

    def __init__(self, periods: IntervalTracker | None = None) -> None:
        self._in_flight = 0
        self._since = 0
        self.periods = periods
        self.reset()

    def reset(self) -> None:
        self.busy_ns = 0
        self.started_ns = time.monotonic_ns()
        if self._in_flight:
            self._since = self.started_ns

    def enter(self) -> None:
        if self._in_flight == 0:
            self._since = time.monotonic_ns()
            if self.periods:
                self.periods.begin()
        self._in_flight += 1

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.busy_ns += time.monotonic_ns() - self._since
            if self.periods:
                self.periods.end()

    def ratio(self) -> float:
        now = time.monotonic_ns()
        busy = self.busy_ns + (now - self._since if self._in_flight else 0)
        return round(busy / max(1, now - self.started_ns), 4)


class Consumer:
    """One consumer's meters: unacked deliveries against its prefetch window, busy time, and
    with a timeline, the intervals the verdict reads (window-full, consumer-busy). A node
    keeps one per queue; a server that embeds mqprobe gets one from Tracer.consumer."""

    __slots__ = ("name", "prefetch", "busy", "window", "unacked", "unacked_max")

    def __init__(self, name: str, prefetch: int, timeline: Recorder, tracks_window: bool) -> None:
        self.name, self.prefetch = name, prefetch
        self.busy = BusyMeter(IntervalTracker(timeline, EventKind.CONSUMER_BUSY, BUSY_MIN_NS,
                                              queue=name))
        # A window is only a window when acks follow the handling (ack=after)
        self.window = IntervalTracker(timeline, EventKind.WINDOW_FULL, 1_000_000, queue=name,
                                      prefetch=prefetch) if tracks_window else None
        self.unacked = self.unacked_max = 0

    def arrived(self) -> None:
        """A delivery reached us: unacked until acked."""
        self.unacked += 1
        self.unacked_max = max(self.unacked_max, self.unacked)
        if self.window and self.unacked >= self.prefetch:
            self.window.begin()

    def acked(self) -> None:
        self.unacked -= 1
        if self.window and self.unacked < self.prefetch:
            self.window.end()

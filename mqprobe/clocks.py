"""Clock offsets between hosts, NTP style, and what they do to each hop's error bar.

A hop whose two stamps come from different hosts (mq: publisher -> node, delivery: node ->
client) is only as good as the agreement of their clocks. mqprobe estimates how far a
remote clock is ahead of ours from request/response exchanges over the broker:

    t0 (ours, request sent)  t1 (theirs, received)  t2 (theirs, replied)  t3 (ours, reply in)
    offset      = ((t1 - t0) + (t2 - t3)) / 2
    uncertainty = ((t3 - t0) - (t2 - t1)) / 2     (half the round trip spent on the wire)

The true offset lies within offset +- uncertainty whatever the asymmetry of the paths; the
exchange with the shortest round trip gives the tightest bound (NTP's clock filter).

A probe that mqprobe publishes and then receives back through a server gives the same kind
of bound without any help from that server: the server's dequeue stamp cannot precede our
publish, and its emit stamp cannot follow our receive (`bound_from_probe`).

Pieces on one host share one clock: their offset is exactly 0 with no uncertainty, so a
single-host run never gets error bars it does not have (`clock_id` tells hosts apart).
Clocks drift (NTP slews them), so compare measures before and after each run and widens
the error bar by the drift in between (`ClockOffset.widened_by`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mqprobe.model import HOP_CLOCKS, is_node_piece
from mqprobe.shapes import Check, clock_ms, count, fields, values
from mqprobe.stamps import CLOCK_SKEW_NS


def clock_id() -> str:
    """One id per clock: the host name and boot id, so two hosts (or two boots) differ."""
    boot = ""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()[:8]
    except OSError:
        pass
    skew = f"~skew{CLOCK_SKEW_NS}" if CLOCK_SKEW_NS else ""  # a pretend host, for trials
    return f"{socket.gethostname()}:{boot}{skew}"


@dataclass(frozen=True)
class ClockOffset:
    """How far a clock is ahead of ours, within +- uncertainty (ns)."""

    offset_ns: int = 0
    uncertainty_ns: int = 0
    exchanges: int = 0  # request/response pairs behind the estimate; 0: the same clock
    drift_ns: int = 0  # how far the offset moved between measurements (before/after a run)

    @property
    def same_clock(self) -> bool:
        return self.exchanges == 0

    def to_json(self) -> dict[str, Any]:
        return {"offset_ms": round(self.offset_ns / 1e6, 3),
                "uncertainty_ms": round(self.uncertainty_ns / 1e6, 3),
                "exchanges": self.exchanges, "drift_ms": round(self.drift_ns / 1e6, 3)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ClockOffset:
        return cls(round(doc["offset_ms"] * 1e6), round(doc["uncertainty_ms"] * 1e6),
                   int(doc["exchanges"]), round(doc.get("drift_ms", 0) * 1e6))

    def widened_by(self, later: ClockOffset) -> ClockOffset:
        """This estimate (the one the hops were corrected with), valid over the time up to a
        later measurement: its error bar grows by how far the clocks drifted meanwhile."""
        if self.same_clock:
            return self
        drift = abs(later.offset_ns - self.offset_ns)
        return ClockOffset(self.offset_ns, max(self.uncertainty_ns, later.uncertainty_ns) + drift,
                           self.exchanges + later.exchanges, drift)

    def relative_to(self, other: ClockOffset) -> ClockOffset:
        """This clock as seen from `other`'s (both measured against ours)."""
        if self == other:
            return ClockOffset()
        return ClockOffset(self.offset_ns - other.offset_ns,
                           self.uncertainty_ns + other.uncertainty_ns,
                           self.exchanges + other.exchanges)


SAME_CLOCK = ClockOffset()


def from_exchanges(stamps: list[tuple[int, int, int, int]]) -> ClockOffset:
    """The estimate from (t0, t1, t2, t3) exchanges: the one with the shortest round trip."""
    if not stamps:
        raise ValueError("no clock exchange completed")
    t0, t1, t2, t3 = min(stamps, key=lambda s: (s[3] - s[0]) - (s[2] - s[1]))
    return ClockOffset(((t1 - t0) + (t2 - t3)) // 2, max(0, ((t3 - t0) - (t2 - t1)) // 2),
                       len(stamps))


def bound_from_probe(t_pub: int, t_deq: int, t_emit: int, t_recv: int) -> tuple[int, int]:
    """Where a server's clock offset must lie, from one probe we published and received.

    t_pub and t_recv are ours, t_deq and t_emit the server's: t_deq - offset >= t_pub and
    t_emit - offset <= t_recv, so offset is within [t_emit - t_recv, t_deq - t_pub].
    """
    return t_emit - t_recv, t_deq - t_pub


@dataclass
class ProbeBounds:
    """The intersection of probe bounds for one server: narrows with every probe."""

    low: int | None = None
    high: int | None = None
    probes: int = 0

    def add(self, bound: tuple[int, int]) -> None:
        low, high = bound
        self.low = low if self.low is None else max(self.low, low)
        self.high = high if self.high is None else min(self.high, high)
        self.probes += 1

    @property
    def consistent(self) -> bool:
        """False when the bounds cross: the server's clock moved (stepped) mid-trace."""
        return self.low is not None and self.high is not None and self.low <= self.high

    @property
    def clocks_differ(self) -> bool:
        """True when the evidence excludes equal clocks, so the hops need correcting."""
        if self.low is None or self.high is None or self.low > self.high:
            return False
        return self.low > 0 or self.high < 0

    def estimate(self) -> ClockOffset:
        if self.low is None or self.high is None or self.low > self.high:
            return SAME_CLOCK
        return ClockOffset((self.low + self.high) // 2, (self.high - self.low) // 2,
                           self.probes)


@dataclass(frozen=True)
class RunClocks:
    """A run's clocks (the result's `clocks`): each piece's offset from compare's clock,
    and each hop's error bar in ms from the clocks its two ends were stamped on."""

    SHAPE: ClassVar[Check] = fields({}, {
        "hop_uncertainty_ms": values(clock_ms),
        "pieces": values(fields({"offset_ms": clock_ms, "uncertainty_ms": clock_ms,
                                 "exchanges": count}, {"drift_ms": clock_ms}))})

    pieces: dict[str, ClockOffset] = field(default_factory=dict)
    hop_uncertainty_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, clocks: dict[str, ClockOffset]) -> RunClocks:
        nodes = [offset for name, offset in clocks.items() if is_node_piece(name)]
        swarms = [offset for name, offset in clocks.items() if name.startswith("swarm")]
        return cls(dict(clocks), hop_uncertainty(clocks["publisher"], nodes, swarms))

    @property
    def apart(self) -> bool:
        """Some hop's two ends were stamped on different hosts."""
        return any(self.hop_uncertainty_ms.values())

    def to_json(self) -> dict[str, Any]:
        return {"pieces": {name: offset.to_json() for name, offset in self.pieces.items()},
                "hop_uncertainty_ms": dict(self.hop_uncertainty_ms)}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> RunClocks:
        """A saved run's clocks (none: one clock, as before clocks were measured)."""
        doc = doc or {}
        return cls({name: ClockOffset.from_json(c) for name, c in doc.get("pieces", {}).items()},
                   dict(doc.get("hop_uncertainty_ms", {})))


def hop_uncertainty(publisher: ClockOffset, nodes: list[ClockOffset],
                    swarms: list[ClockOffset]) -> dict[str, float]:
    """Each hop's error bar in ms from the clocks involved: the worst pair in the run."""
    pieces = {"publisher": [publisher], "node": nodes or [SAME_CLOCK],
              "swarm": swarms or [SAME_CLOCK]}
    out: dict[str, float] = {}
    for hop, (end, start) in HOP_CLOCKS.items():
        if end == start:
            out[hop] = 0.0
            continue
        worst = max(a.relative_to(b).uncertainty_ns for a in pieces[end] for b in pieces[start])
        out[hop] = round(worst / 1e6, 3)
    return out

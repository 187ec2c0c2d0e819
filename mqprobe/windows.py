"""Sample windows: rows of [start_ns, wall_ns, figures...] on one clock, and what a span
overlaps of each. Compare's CPU samples of every piece (watch.footprint) and a loop's own
CPU windows (watch.loop's CpuWindows, read by the attribution) are both read this way: a
figure within spans is each window's, pro rata of the time the spans overlap it."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class Windows:
    """Sample windows, sorted by start (one with no wall time says nothing: left out)."""

    def __init__(self, rows: Iterable[list[int]] = ()) -> None:
        self.rows = sorted((r for r in rows if r[1] > 0), key=lambda r: r[0])
        self.starts = [r[0] for r in self.rows]

    def overlaps(self, spans: Iterable[tuple[int, int]]) -> Iterator[tuple[list[int], int]]:
        """Each window a span overlaps, with the ns it overlaps."""
        rows, starts = self.rows, self.starts
        for a, b in spans:
            i = max(0, bisect.bisect_right(starts, a) - 1)
            while i < len(rows) and rows[i][0] < b:
                start, wall = rows[i][:2]
                overlap = min(b, start + wall) - max(a, start)
                if overlap > 0:
                    yield rows[i], overlap
                i += 1

    def within(self, spans: Iterable[tuple[int, int]], column: int = 2) -> float:
        """A column's figure within the spans (the third: what the piece used), pro rata."""
        return sum(row[column] * overlap / row[1] for row, overlap in self.overlaps(spans))

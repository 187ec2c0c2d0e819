"""An answer to "which topology?", drawn only from a comparison's measured figures.

The table gives a row per topology x layout; this ranks them by e2e p99 and says what each
costs (CPU per 1,000 deliveries, for the broker and for the nodes), and calls a winner only
when its p99 is apart from the next row's: apart means their ranges do not overlap, a
row's range being its repeats' lowest to highest p99, or with one run its p99 give or take
the swarm's own loop lag p99 (the error bar every figure carries). Rows that failed or
lost deliveries are not ranked; rows over budget are said to be.
"""

from __future__ import annotations

from mqprobe.figures import Conclusion, Cost, Counts, CpuUse, PieceCpu, RankedPoint, Sweep
from mqprobe.model import Culprit, PieceRole
from mqprobe.result import RunRecord
from mqprobe.verdict.analysis import by_point, representative

COST_RATIO_WORTH_SAYING = 1.5  # a row that costs this many times the winner's CPU is named


def cost_of(counts: Counts, cpu: CpuUse) -> Cost:
    """What a run's traffic cost, from its counts and the CPU compare sampled."""
    pieces = cpu.pieces
    delivered, published = counts.delivered, counts.published

    def spent(chosen: list[PieceCpu], per: int) -> float | None:
        if not chosen or per <= 0:
            return None
        return round(sum(p.cpu_ms for p in chosen) * 1000 / per, 3)

    broker = [p for p in pieces.values() if p.role == PieceRole.BROKER]
    nodes = [p for p in pieces.values() if p.role == PieceRole.NODE]
    ours = [p for p in pieces.values() if p.instrument]
    return Cost(spent(broker, delivered), spent(nodes, delivered), spent(ours, delivered),
                spent(broker, published), spent(nodes, published))


def _row(point: str, runs: list[RunRecord]) -> RankedPoint:
    median = representative(runs)  # the repeat the table shows
    p99 = median.e2e.p99_ms
    if len(runs) > 1:
        p99s = [r.e2e.p99_ms for r in runs]
        low, high = min(p99s), max(p99s)
    else:
        lag = median.self_lag.p99
        low, high = max(0.0, p99 - lag), p99 + lag
    failed = sum(1 for r in runs if r.error)
    counts = Counts.total(r.counts for r in runs)
    lost = counts.lost
    why = (f"{failed} of {len(runs)} run(s) failed" if failed else
           f"lost {lost} deliveries" if lost else "")
    within = all(r.verdict.culprit == Culprit.NONE for r in runs) and not counts.not_delivered
    cost = median.cost or cost_of(median.counts, median.cpu)  # a result from before costs
    return RankedPoint(point, p99, low, high, len(runs), within, not why, why, cost)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _costs(row: RankedPoint) -> str:
    parts = []
    if row.cost.broker_per_1k_deliveries is not None:
        parts.append(f"{_ms(row.cost.broker_per_1k_deliveries)} ms broker CPU")
    if row.cost.nodes_per_1k_deliveries is not None:
        parts.append(f"{_ms(row.cost.nodes_per_1k_deliveries)} ms node CPU")
    return (", ".join(parts) + " per 1,000 deliveries") if parts else "CPU not measured"


def _spread(row: RankedPoint) -> str:
    if row.repeats > 1:
        return f"{row.repeats} repeats {_ms(row.low_ms)}-{_ms(row.high_ms)}"
    return f"one run, ±{_ms(row.high_ms - row.e2e_p99_ms)} (the swarm's loop lag)"


def _dearer(winner: RankedPoint, others: list[RankedPoint]) -> str:
    """The row that costs the most node (or broker) CPU against the winner, if by enough."""
    said = []
    for label, field in (("node", "nodes_per_1k_deliveries"), ("broker", "broker_per_1k_deliveries")):
        mine = getattr(winner.cost, field)
        if not mine:
            continue
        priced = [(getattr(r.cost, field) / mine, r) for r in others if getattr(r.cost, field)]
        if priced:
            ratio, row = max(priced, key=lambda item: item[0])
            if ratio >= COST_RATIO_WORTH_SAYING:
                said.append(f"{row.point} costs {ratio:.1f}x the {label} CPU of {winner.point} "
                            "for the same traffic")
    return "; ".join(said)


def conclude(runs: list[RunRecord]) -> Conclusion:
    """Rank the comparison's rows and say which is best, only as far as was measured."""
    rows = [_row(f"{point[0]}/{point[1]}", group)
            for point, group in by_point(runs, lambda r: (r.topology, r.layout)).items()]
    ranked = sorted((r for r in rows if r.ranked), key=lambda r: r.e2e_p99_ms)
    unranked = [r for r in rows if not r.ranked]
    ordered = tuple(ranked + unranked)
    left_out = "; ".join(f"{r.point} not ranked ({r.why_not_ranked})" for r in unranked)
    if not ranked:
        return Conclusion(ordered, None, "no row can be ranked: " + left_out)
    best = ranked[0]
    lead = (f"{best.point}: lowest e2e p99 ({_ms(best.e2e_p99_ms)} ms, {_spread(best)}), "
            f"{_costs(best)}")
    if not best.within_budget:
        lead += "; over budget like every row" if not any(r.within_budget for r in ranked) \
            else "; but over budget"
    if len(ranked) == 1:
        return Conclusion(ordered, best.point, lead + (f"; {left_out}" if left_out else ""))
    tied = [r for r in ranked[1:] if r.low_ms <= best.high_ms]
    if tied:
        sentence = (f"no clear winner: {best.point} and {', '.join(r.point for r in tied)} are "
                    f"within each other's spread (e2e p99 {_ms(best.e2e_p99_ms)} vs "
                    + ", ".join(f"{_ms(r.e2e_p99_ms)}" for r in tied)
                    + " ms); " + _costs(best) + f" for {best.point}")
        winner = None
    else:
        runner = ranked[1]
        sentence = (f"{lead}; next {runner.point} at {_ms(runner.e2e_p99_ms)} ms "
                    f"({_spread(runner)})")
        winner = best.point
    dearer = _dearer(best, ranked[1:])
    sentence += (f"; {dearer}" if dearer else "") + (f"; {left_out}" if left_out else "")
    return Conclusion(ordered, winner, sentence)


def conclude_sweep(sweep: Sweep) -> Conclusion:
    """Which topology holds the most load before its knee: one with no knee over the
    whole range, else the highest knee; two that hold equally long are no clear winner."""
    axis, knees = sweep.axis, sweep.knees
    if not knees:
        return Conclusion((), None, "no topology finished its sweep")
    top = max(sweep.values)
    held = {name: (top * 2 if knee is None else knee.load) for name, knee in knees.items()}
    best = max(held.values())
    leaders = [name for name, load in held.items() if load == best]

    def said(name: str) -> str:
        knee = knees[name]
        if knee is None:
            return f"{name} holds to {axis} = {top:g} (no knee)"
        return f"{name} has its knee at {axis} = {knee.load:g} ({knee.culprit}: " \
               f"{knee.cause.partition(':')[0]})"

    others = sorted((n for n in held if n not in leaders), key=lambda n: -held[n])
    if len(leaders) > 1:
        sentence = "no clear winner: " + "; ".join(said(n) for n in leaders)
    else:
        sentence = said(leaders[0]) + ": it holds the most load"
    if others:
        sentence += "; " + "; ".join(said(n) for n in others)
    return Conclusion((), leaders[0] if len(leaders) == 1 else None, sentence)

"""`mqprobe sweep`: grow the load (groups or rate) and find the knee, with its cause.

The knee is the first load at which p99 e2e leaves its baseline (more than 3x the
lightest load's, and above the budget), deliveries are lost, or a queue backlog builds
(more than a second's worth of one group's messages waiting). Its cause is that run's
verdict, with the evidence measured there.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from mqprobe.broker.topology import TopologyError
from mqprobe.errors import InputError
from mqprobe.figures import Knee, Sweep
from mqprobe.model import SweepAxis
from mqprobe.result import Comparison, RunRecord
from mqprobe.run.one_run import Observer
from mqprobe.run.runner import Point, broker_version, new_result, run_points
from mqprobe.run.workload import Workload
from mqprobe.verdict.analysis import by_point, representative
from mqprobe.verdict.conclusion import conclude_sweep

KNEE_FACTOR = 3.0


def parse_range(text: str, axis: SweepAxis, points: int = 7) -> list[float]:
    """'1..24' (about `points` evenly spread values, ends included) or '1,8,16'."""
    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\.\.(\d+(?:\.\d+)?)", text)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if not 0 < low < high:
            raise InputError(f"--{axis} {text!r}: need 0 < low < high")
        if axis == SweepAxis.GROUPS:
            step = max(1, round((high - low) / (points - 1)))
            values: list[float] = [*range(int(low), int(high), step), int(high)]
        else:
            values = [round(low + (high - low) * i / (points - 1), 3) for i in range(points)]
        return sorted(set(values))
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--{axis} takes LOW..HIGH or a list like 1,8,16, got {text!r}") from None
    if not values or min(values) <= 0 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--{axis} values must be finite and above 0, got {text!r}")
    if axis == SweepAxis.GROUPS and any(v != int(v) for v in values):
        raise InputError(f"--groups takes whole numbers, got {text!r}")
    return sorted(set(int(v) if axis == SweepAxis.GROUPS else v for v in values))


def at_load(workload: Workload, axis: SweepAxis, value: float) -> Workload:
    """The workload with one load point applied."""
    if axis == SweepAxis.GROUPS:
        size = workload.group_sizes[0] if workload.group_sizes else 100
        return dataclasses.replace(workload, group_sizes=[size] * int(value))
    return dataclasses.replace(workload, rate=float(value))


def find_knee(runs: list[RunRecord], budget_ms: float) -> Knee | None:
    """The first run (in load order) that left the baseline, with why; None if none did."""
    if not runs:
        return None
    baseline = min(r.e2e.p99_ms for r in runs[:2])
    limit = max(KNEE_FACTOR * baseline, budget_ms)
    for run in runs:
        reasons = []
        p99 = run.e2e.p99_ms
        if p99 > limit:
            reasons.append(f"p99 e2e {p99} ms > {limit:.1f} ms ({KNEE_FACTOR:g}x the baseline "
                           f"{baseline} ms, at least the budget)")
        if lost := run.counts.lost:
            reasons.append(f"{lost} deliveries lost")
        backlog = run.broker.max_ready
        if backlog > max(10, run.rate_per_group or 0):
            reasons.append(f"queue backlog of {backlog} messages")
        if reasons:
            verdict = run.verdict.to_json()
            return Knee(run.load or 0.0, tuple(reasons), verdict["culprit"], verdict["cause"],
                        tuple(verdict["evidence"]))
    return None


async def sweep(workload: Workload, axis: SweepAxis, values: list[float], amqp_url: str,
                json_path: Path | None, run_dir: Path, observe: Observer = lambda phase: None,
                management_url: str | None = None, prometheus_url: str = "") -> Comparison:
    """Every topology (first layout) at every load point; saved after each run."""
    workload.check()
    at_load(workload, axis, max(values)).check()  # the heaviest point must fit too
    topologies = workload.resolved_topologies()
    layout = workload.layouts[0]
    if not any(layout in t.layouts for t in topologies):
        raise TopologyError(f"no chosen topology supports layout {layout}")
    begun = Sweep(axis, tuple(values), layout, {})  # each topology's knee, once swept
    result = dataclasses.replace(new_result(workload, amqp_url, await broker_version(amqp_url)),
                                 sweep=begun)
    points = []
    for topology in topologies:
        run_layout = layout if layout in topology.layouts else topology.layouts[0]
        for value in values:
            point = at_load(workload, axis, value)
            points.append(Point(topology, run_layout, point, f"{topology.name}_{axis}={value:g}",
                                f"{topology.name}@{value:g}",
                                {"load": value, "rate_per_group": point.rate}))

    def knee_once_swept(point: Point, so_far: Comparison) -> Comparison:
        """A topology's knee, on each point's median repeat, once its last point is in."""
        if point.fields["load"] != values[-1]:
            return so_far
        runs = [r for r in so_far.runs if r.topology == point.topology.name]
        medians = [representative(group) for group in by_point(runs, lambda r: r.load).values()]
        knees = (so_far.sweep or begun).knees
        swept = dataclasses.replace(begun, knees={
            **knees, point.topology.name: find_knee(medians, workload.budget_ms)})
        return dataclasses.replace(so_far, sweep=swept, conclusion=conclude_sweep(swept))

    return await run_points(result, points, amqp_url, json_path, run_dir, observe,
                            management_url, prometheus_url, knee_once_swept)

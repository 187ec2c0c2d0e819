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

from mqprobe.analysis import by_point, representative
from mqprobe.compare import (
    Observer,
    keep_if_interrupted,
    new_result,
    placed,
    record_agreement,
    repeats,
    run_one,
    save,
)
from mqprobe.conclusion import conclude_sweep
from mqprobe.errors import InputError
from mqprobe.model import HopName
from mqprobe.topology import TopologyError
from mqprobe.workload import Workload

AXES = ("groups", "rate")
KNEE_FACTOR = 3.0


def parse_range(text: str, axis: str, points: int = 7) -> list[float]:
    """'1..24' (about `points` evenly spread values, ends included) or '1,8,16'."""
    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\.\.(\d+(?:\.\d+)?)", text)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if not 0 < low < high:
            raise InputError(f"--{axis} {text!r}: need 0 < low < high")
        if axis == "groups":
            step = max(1, round((high - low) / (points - 1)))
            values = list(range(int(low), int(high), step)) + [int(high)]
        else:
            values = [round(low + (high - low) * i / (points - 1), 3) for i in range(points)]
        return sorted(set(values))
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--{axis} takes LOW..HIGH or a list like 1,8,16, got {text!r}") from None
    if not values or min(values) <= 0 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--{axis} values must be finite and above 0, got {text!r}")
    if axis == "groups" and any(v != int(v) for v in values):
        raise InputError(f"--groups takes whole numbers, got {text!r}")
    return sorted(set(int(v) if axis == "groups" else v for v in values))


def at_load(workload: Workload, axis: str, value: float) -> Workload:
    """The workload with one load point applied."""
    if axis == "groups":
        size = workload.group_sizes[0] if workload.group_sizes else 100
        return dataclasses.replace(workload, group_sizes=[size] * int(value))
    return dataclasses.replace(workload, rate=float(value))


def find_knee(runs: list[dict], budget_ms: float, rate_of) -> dict | None:
    """The first run (in load order) that left the baseline, with why; None if none did."""
    if not runs:
        return None
    baseline = min(r["hops"][HopName.E2E]["p99_ms"] for r in runs[:2])
    limit = max(KNEE_FACTOR * baseline, budget_ms)
    for run in runs:
        reasons = []
        p99 = run["hops"][HopName.E2E]["p99_ms"]
        if p99 > limit:
            reasons.append(f"p99 e2e {p99} ms > {limit:.1f} ms ({KNEE_FACTOR:g}x the baseline "
                           f"{baseline} ms, at least the budget)")
        if run["lost"]:
            reasons.append(f"{run['lost']} deliveries lost")
        backlog = run.get("evidence", {}).get("broker", {}).get("max_ready", 0)
        if backlog > max(10, rate_of(run)):
            reasons.append(f"queue backlog of {backlog} messages")
        if reasons:
            return {"load": run["load"], "reasons": reasons, "culprit": run["verdict"]["culprit"],
                    "cause": run["verdict"]["cause"], "evidence": run["verdict"]["evidence"]}
    return None


async def sweep(workload: Workload, axis: str, values: list[float], amqp_url: str,
                json_path, run_dir, observe: Observer = lambda phase: None,
                management_url: str | None = None, prometheus_url: str = "") -> dict:
    """Every topology (first layout) at every load point; saved after each run."""
    if axis not in AXES:
        raise InputError(f"sweep axis must be one of {', '.join(AXES)}")
    workload.check()
    at_load(workload, axis, max(values)).check()  # the heaviest point must fit too
    from mqprobe.compare import broker_version

    topologies = workload.resolved_topologies()
    layout = workload.layouts[0]
    if not any(layout in t.layouts for t in topologies):
        raise TopologyError(f"no chosen topology supports layout {layout}")
    result = new_result(workload, amqp_url, await broker_version(amqp_url))
    result["sweep"] = {"axis": axis, "values": values, "layout": layout, "knees": {}}
    async with placed(workload, amqp_url) as placement:
        for topology in topologies:
            run_layout = layout if layout in topology.layouts else topology.layouts[0]
            runs = []
            for value in values:
                point = at_load(workload, axis, value)
                for label, repeat in repeats(f"{topology.name}_{axis}={value:g}",
                                             workload.repeat):
                    run = await keep_if_interrupted(result, json_path, run_one(
                        topology, run_layout, point, amqp_url, run_dir, label, observe,
                        management_url, placement, prometheus_url))
                    run["load"] = value
                    run["rate_per_group"] = point.rate
                    if repeat:
                        run["repeat"] = repeat
                    result["runs"].append(run)
                    runs.append(run)
                    record_agreement(result, f"{topology.name}@{value:g}",
                                     lambda r, t=topology.name, v=value:
                                         (r["topology"], r.get("load")) == (t, v))
                    save(result, json_path)
            # the knee is found on each point's median repeat
            points = [representative(group) for group in by_point(runs, lambda r: r["load"]).values()]
            result["sweep"]["knees"][topology.name] = find_knee(
                points, workload.budget_ms, lambda r: r["rate_per_group"])
            result["conclusion"] = conclude_sweep(result["sweep"]).to_json()
            save(result, json_path)
    return result

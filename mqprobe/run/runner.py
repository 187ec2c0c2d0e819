"""What compare and sweep share: the points of a measurement run one after another (each
repeated as asked), the result saved after each run so a measurement that fails half-way
keeps what it measured, and an interruption that still writes what was measured."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mqprobe import __version__
from mqprobe.broker.connect import connect_problem, redact_url
from mqprobe.broker.topology import Topology
from mqprobe.model import Layout
from mqprobe.pieces.process import RunInterrupted
from mqprobe.result import Comparison, RunRecord
from mqprobe.run.one_run import Observer, run_one
from mqprobe.run.outcome import save
from mqprobe.run.placement import placed
from mqprobe.run.workload import Workload
from mqprobe.verdict.analysis import agreement


def new_result(workload: Workload, amqp_url: str, broker_version: str) -> Comparison:
    """A measurement with no run yet: what it measures and on which broker."""
    return Comparison(
        (), workload.to_json(), {"version": broker_version, "url": redact_url(amqp_url)},
        __version__, time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # filled in by run_points as the repeats come in
        {"count": workload.repeat, "agreement": {}} if workload.repeat > 1 else None)


async def broker_version(amqp_url: str) -> str:
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=10)
    except Exception as exc:  # the first connection says, in one sentence, what is wrong
        raise connect_problem(exc, amqp_url) from None
    try:
        properties = connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = properties.get("version", "unknown")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()


async def keep_if_interrupted(result: Comparison, json_path: Path | None,
                              running: Awaitable[RunRecord]) -> RunRecord:
    """Await one run; when it was interrupted, save its partial figures into the result
    first, then let the interruption through with the whole result attached."""
    try:
        return await running
    except RunInterrupted as exc:
        partial = exc.result.runs if exc.result else ()
        result = replace(result, runs=result.runs + partial, interrupted=True)
        save(result, json_path)
        raise RunInterrupted(result) from None


def repeats(label: str, count: int) -> list[tuple[str, int]]:
    """(log label, repeat number or 0 when not repeating) for each repeat of one point."""
    if count == 1:
        return [(label, 0)]
    return [(f"{label}_r{k}", k) for k in range(1, count + 1)]


@dataclass(frozen=True)
class Point:
    """One point of a measurement: a topology x layout on a workload, named for its logs
    (`label`) and for the agreement of its repeats (`key`); `fields` are added to each of
    its runs (a sweep's load)."""

    topology: Topology
    layout: Layout
    workload: Workload
    label: str
    key: str
    fields: dict = field(default_factory=dict)


async def run_points(result: Comparison, points: list[Point], amqp_url: str,
                     json_path: Path | None, run_dir: Path, observe: Observer,
                     management_url: str | None, prometheus_url: str,
                     after_point: Callable[[Point, Comparison], Comparison] | None = None) -> Comparison:
    """Each point in turn, repeated as its workload asks, every run added to `result` and
    saved as soon as it ends; once a point's runs are in, `after_point` gives the result
    with what they make known (a conclusion, a knee), saved too. The whole result, once every point ran."""
    async with placed(points[0].workload, amqp_url) as placement:
        for point in points:
            runs: list[RunRecord] = []
            for label, repeat in repeats(point.label, point.workload.repeat):
                run = await keep_if_interrupted(result, json_path, run_one(
                    point.topology, point.layout, point.workload, amqp_url, run_dir, label,
                    observe, management_url, placement, prometheus_url))
                run = replace(run, repeat=repeat or None, **point.fields)
                runs.append(run)
                result = replace(result, runs=result.runs + (run,))
                if result.repeats is not None:  # the verdicts the repeats gave so far
                    agreed = {**result.repeats["agreement"], point.key: agreement(runs)}
                    result = replace(result, repeats={**result.repeats, "agreement": agreed})
                save(result, json_path)
            if after_point:
                result = after_point(point, result)
                save(result, json_path)
    return result

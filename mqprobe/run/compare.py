"""`mqprobe compare`: the same workload on each topology x layout, one run after another
(runner.run_points), ending with a conclusion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mqprobe.broker.topology import TopologyError
from mqprobe.result import Comparison
from mqprobe.run.one_run import Observer
from mqprobe.run.runner import Point, broker_version, new_result, run_points
from mqprobe.run.workload import Workload
from mqprobe.verdict.conclusion import conclude


async def compare(workload: Workload, amqp_url: str, json_path: Path | None,
                  run_dir: Path, observe: Observer = lambda phase: None,
                  management_url: str | None = None,
                  prometheus_url: str = "") -> Comparison:
    """Every topology x layout on the workload; the result is saved after each run."""
    workload.check()
    result = new_result(workload, amqp_url, await broker_version(amqp_url))
    points = [Point(topology, layout, workload, f"{topology.name}_{layout}",
                    f"{topology.name}/{layout}")
              for topology in workload.resolved_topologies() for layout in workload.layouts
              if layout in topology.layouts]
    if not points:
        raise TopologyError("no topology supports the chosen layouts")

    def conclude_so_far(_point: Point, so_far: Comparison) -> Comparison:
        return replace(so_far, conclusion=conclude(list(so_far.runs)))

    return await run_points(result, points, amqp_url, json_path, run_dir, observe,
                            management_url, prometheus_url, conclude_so_far)

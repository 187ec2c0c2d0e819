"""What compare and sweep share (runner): points in turn with their repeats, every run saved
as it ends, the repeats' agreement per point. No broker: run_one is
answered here (the real pieces prove the wiring in test_compare)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import mqprobe.run.runner as runner
from mqprobe.broker.topology import resolve
from mqprobe.result import Comparison
from mqprobe.run.runner import Point, new_result, run_points
from mqprobe.run.workload import Workload

from ..made import record

_run = record


def test_points_run_in_turn_with_their_repeats_and_each_run_is_saved(monkeypatch, tmp_path):
    workload = Workload(repeat=2)
    verdicts = iter(["none", "server", "mq", "mq"])
    saved: list[int] = []
    path = tmp_path / "result.json"

    async def fake_run_one(topology, layout, point_workload, *_args):
        if path.exists():  # the run before this one is on disk already
            saved.append(len(json.loads(path.read_text())["runs"]))
        return _run(next(verdicts), topology=topology.name, layout=layout)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    topology = resolve("single-topic")
    points = [Point(topology, "per-node", workload, "single-topic_rate=10", "single-topic@10",
                    {"load": 10}),
              Point(topology, "per-node", workload, "single-topic_rate=20", "single-topic@20",
                    {"load": 20})]
    seen: list[tuple[str, int]] = []

    def after_point(point: Point, so_far: Comparison) -> Comparison:
        seen.append((point.key, len(so_far.runs)))
        return replace(so_far, started_at=f"after {point.key}")  # what it adds is kept

    begun = new_result(workload, "amqp://u:secret@127.0.0.1:5672/", "3.10.8")
    result = asyncio.run(run_points(begun, points, "amqp://127.0.0.1/", path, tmp_path,
                                    lambda p: None, None, "", after_point))

    assert [(r.load, r.repeat) for r in result.runs] == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert result.repeats == {"count": 2, "agreement": {
        "single-topic@10": {"none": 1, "server": 1}, "single-topic@20": {"mq": 2}}}
    assert seen == [("single-topic@10", 2), ("single-topic@20", 4)]  # every run so far
    assert saved == [1, 2, 3]  # each run on disk before the next began
    on_disk = json.loads(path.read_text())
    assert Comparison.from_json(on_disk).to_json() == result.to_json() == on_disk
    assert on_disk["started_at"] == "after single-topic@20"
    assert "secret" not in path.read_text()

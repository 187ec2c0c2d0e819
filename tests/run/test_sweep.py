import json

import pytest

from mqprobe.model import SweepAxis
from mqprobe.run.sweep import find_knee, parse_range

from ..conftest import run_cli
from ..made import record


def test_parse_range():
    assert parse_range("1..24", SweepAxis.GROUPS) == [1, 5, 9, 13, 17, 21, 24]
    assert parse_range("1,8,16", SweepAxis.GROUPS) == [1, 8, 16]
    assert parse_range("10..40", SweepAxis.RATE, points=4) == [10.0, 20.0, 30.0, 40.0]
    for bad in ("24..1", "0..5", "a,b", "1.5,2"):
        with pytest.raises(ValueError):
            parse_range(bad, SweepAxis.GROUPS)


def _run(load, p99, lost=0, backlog=0, culprit="none"):
    return record(culprit, load=load, rate_per_group=10.0, hops={"e2e": {"p99_ms": p99}},
                  lost=lost, evidence={"broker": {"available": True, "max_ready": backlog}})


def test_knee_is_the_first_point_that_leaves_the_baseline():
    runs = [_run(1, 5), _run(4, 6), _run(8, 12), _run(12, 80, culprit="server"), _run(16, 900)]
    knee = find_knee(runs, budget_ms=50)
    assert knee is not None and knee.load == 12 and knee.culprit == "server"
    assert knee.cause.startswith("server-stall: ") and knee.evidence == ()
    assert find_knee(runs[:3], budget_ms=50) is None
    backlog = find_knee([_run(1, 5), _run(2, 6, backlog=40)], 50)
    assert backlog is not None and backlog.load == 2 and "backlog" in backlog.reasons[0]


def test_sweep_on_a_real_broker(broker, tmp_path):
    out = tmp_path / "s.json"
    result = run_cli("sweep", "--groups", "1,3", "--topologies", "single-topic",
                     "--group-size", "10", "--rate", "5", "--duration", "1.5",
                     "--json", str(out), "--run-dir", str(tmp_path / "logs"),
                     amqp_url=broker.amqp_url)
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads(out.read_text())
    assert [r["load"] for r in data["runs"]] == [1, 3]
    assert [len(r["groups"]) for r in data["runs"]] == [1, 3]
    assert all(r["lost"] == 0 and r["delivered"] == r["expected_deliveries"] > 0
               for r in data["runs"])
    assert "single-topic" in data["sweep"]["knees"]
    assert "sweep over groups" in result.stdout
    assert data["conclusion"]["winner"] == "single-topic"  # the only one swept
    assert " ".join(f"conclusion: {data['conclusion']['sentence']}".split()) in " ".join(
        result.stdout.split())
    # the CPU each piece used is counted in 10 ms ticks, and a run this small can keep the
    # broker under one (80 deliveries in 1.7 s, once): measured, then, and the nodes' more
    assert all(r["cost"]["broker_per_1k_deliveries"] is not None
               and r["cost"]["nodes_per_1k_deliveries"] > 0 for r in data["runs"])

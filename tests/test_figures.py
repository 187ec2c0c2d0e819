"""The result's typed parts write the JSON they were read from, key for key."""

import json
from pathlib import Path

import pytest

from mqprobe.figures import (
    BacklogGrowth,
    BrokerEvidence,
    Counts,
    CpuUse,
    GroupFigures,
    HopFigures,
    HostCpu,
    LoopCpu,
    LoopLag,
    NodeFigures,
    PieceCpu,
    SwarmFigures,
)

SAVED = Path(__file__).parent / "data"


def _runs(saved: str) -> list[dict]:
    return json.loads((SAVED / saved).read_text())["runs"]


@pytest.mark.parametrize("saved", ["compare_result.json", "sweep_result.json"])
def test_saved_results_read_back_and_write_the_same_json(saved):
    """Saved results (from before some figures existed) load, and new ones keep the shape."""
    runs = _runs(saved)
    brokers = [run["evidence"]["broker"] for run in runs]
    nodes = [node for run in runs for node in run["nodes"]]
    cpus = [run["cpu"] for run in runs]
    swarms = [run["swarm"] for run in runs]
    hops = [run["hops"] for run in runs] + [g["hops"] for run in runs for g in run["groups"].values()]
    assert brokers and nodes and cpus and swarms and hops
    assert all(BrokerEvidence.from_json(doc).to_json() == doc for doc in brokers)
    assert all(NodeFigures.from_json(doc).to_json() == doc for doc in nodes)
    assert all(CpuUse.from_json(doc).to_json() == doc for doc in cpus)
    assert all(SwarmFigures.from_json(doc).to_json() == doc for doc in swarms)
    assert all({hop: f.to_json() for hop, f in HopFigures.by_hop(doc).items()} == doc for doc in hops)
    groups = [{k: v for k, v in g.items() if k != "verdict"}  # analysis gives it afterwards
              for run in runs for g in run["groups"].values()]
    assert groups and all(GroupFigures.from_json(doc).to_json() == doc for doc in groups)
    for run in runs:  # a run's counts are its groups' summed
        assert Counts.from_json(run) == Counts.total(
            GroupFigures.from_json(g).counts for g in run["groups"].values())


def test_counts_read_what_they_count_and_sum():
    run = {"published": 10, "expected_deliveries": 1000, "delivered": 990, "lost": 4,
           "not_delivered": 6, "duplicated": 2, "hops": {}, "topology": "fanout"}
    counts = Counts.from_json(run)
    assert counts == Counts(10, 1000, 990, 4, 6, 2)
    assert counts.to_json() == {k: v for k, v in run.items() if k not in ("hops", "topology")}
    assert Counts.from_json({"published": 3}) == Counts(published=3)  # absent is 0
    assert Counts.total([counts, Counts(lost=1)]) == Counts(10, 1000, 990, 5, 6, 2)


def test_broker_evidence_round_trips_every_figure():
    evidence = BrokerEvidence(
        available=True, interval_s=0.5, max_ready=40, max_ready_queue="q1",
        backlog_growth=BacklogGrowth(1.0, 2.5, 40, 26.7), management_api=False,
        alarms=("memory",), blocked_connections_max=2, sample_errors=1,
        queues={"q1": [[0.5, 40, 1]]}, management_reason="it did not answer",
        unavailable_reason="refused", depth_not_sampled="streams", sources=("amqp", "prometheus"),
        prometheus=True, erlang_run_queue_max=3.0, prometheus_reason="")
    doc = json.loads(json.dumps(evidence.to_json()))
    assert BrokerEvidence.from_json(doc) == evidence
    assert doc["queues"]["columns"] == ["t_s", "ready", "consumers"]
    assert BrokerEvidence.from_json(None) == BrokerEvidence.not_measured()
    assert BrokerEvidence.not_measured().to_json() == {"available": False,
                                                     "reason": "queue depth not measured"}


def test_node_figures_round_trip_and_read_their_shares():
    node = NodeFigures(
        node="n2", handled=10, untraced=1, filtered=2, unacked_max=50, prefetch=50,
        busy_ratio={"q1": 0.2, "q2": 0.7}, loop_lag_ms=LoopLag(0.1, 4.0, 200.0), stalls=3,
        in_hand_at_end=4, gc={"frozen": 1}, loop_worst={"lag_ms": 200.0},
        loop_cpu=LoopCpu("schedstat", 0.25, 0.5, 0.125, failed_ticks=2), profile={"samples": 9},
        mq_split={"in-broker": {"p99_ms": 1.0}})
    assert NodeFigures.from_json(json.loads(json.dumps(node.to_json()))) == node
    assert node.consumer_busy == 0.7 and node.loop_cpu.busy == 0.875 and node.loop_cpu.read
    assert not LoopCpu("unavailable: no /proc").read
    assert "failed_ticks" not in LoopCpu("schedstat").to_json()
    bare = NodeFigures.from_json({**node.to_json(), "loop_cpu": {}})
    assert bare.loop_cpu is None and bare.to_json()["loop_cpu"] == {}


def test_cpu_use_round_trips_and_says_how_long_each_piece_waited():
    use = CpuUse(True, wall_s=5.0, cores=2, pieces={
        "broker": PieceCpu("broker", 300.0, 0.06, False, waited_ms=100.0),
        "swarm1": PieceCpu("swarm", 100.0, 0.02, True),
        "elsewhere": PieceCpu("broker", 50.0, 0.01, False, source="its endpoint")},
        not_seen={"n3": "not local"}, host=HostCpu(0.5, 12.0, None),
        series={"columns": ["t_ms", "broker"], "rows": [[100.0, 3.0]]})
    assert CpuUse.from_json(json.loads(json.dumps(use.to_json()))) == use
    assert use.pieces["broker"].ready_wait_share == 0.25
    assert use.pieces["swarm1"].ready_wait_share is None  # not read, not "never waited"
    assert "waited_ms" not in use.to_json()["pieces"]["swarm1"]
    gone = CpuUse(False, "too few samples", not_seen={"n1": "gone"})
    assert CpuUse.from_json(gone.to_json()) == gone
    assert CpuUse.from_json(None) == CpuUse(False)


@pytest.mark.parametrize(("source", "kernel"), [
    ({"read": 0, "kernel": 990, "kernel_shared": 10}, True),
    ({"read": 0, "kernel": 989, "kernel_shared": 11}, False),  # over 1% shared one read's stamp
    ({"read": 1, "kernel": 999, "kernel_shared": 0}, False),  # one frame stamped by the reader
    ({}, False),  # nothing received: no stamp to trust
])
def test_receive_stamps_are_the_kernels_only_on_every_delivery(source, kernel):
    assert SwarmFigures(t_recv_source=source).kernel_stamped is kernel


def test_a_hop_keeps_its_out_of_order_stamps_only_when_there_were_some():
    skewed = HopFigures(10, 1.0, 2.0, 3.0, 4.0, 5.0, negative=2, min_ms=-0.5)
    assert HopFigures.from_json(json.loads(json.dumps(skewed.to_json()))) == skewed
    assert "negative" not in HopFigures(10, 1.0).to_json()
    assert HopFigures.from_json({"p99_ms": 7.0}).p99_ms == 7.0  # a test's or an old result's


def test_a_saved_sweep_section_reads_back_and_writes_the_same_json():
    """The sweep's axis, values and knees are typed (figures.Sweep, Knee), parsed once,
    and written key for key as they were saved; a wrong part is one sentence."""
    from mqprobe.errors import ResultFormatError
    from mqprobe.figures import Sweep

    saved = json.loads((Path(__file__).parent / "data" / "sweep_result.json").read_text())
    sweep = Sweep.from_json(saved["sweep"])
    assert sweep.to_json() == saved["sweep"]
    assert any(knee is not None for knee in sweep.knees.values())
    with pytest.raises(ResultFormatError, match="the sweep section"):
        Sweep.from_json({**saved["sweep"], "values": ["ten"]})

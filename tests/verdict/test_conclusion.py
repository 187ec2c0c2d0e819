"""The answer to "which topology?" from synthetic comparisons: no broker."""

import pytest

from mqprobe.result import RunRecord
from mqprobe.verdict.conclusion import conclude, cost_of

from ..made import record


def _run(topology: str, p99: float, lag: float = 1.0, culprit: str = "none", lost: int = 0,
         error: str | None = None, broker_ms: float = 100.0, nodes_ms: float = 1000.0,
         layout: str = "per-node") -> RunRecord:
    return record(culprit, **{
            "topology": topology, "layout": layout, "published": 100, "delivered": 10_000,
            "lost": lost, "error": error, "hops": {"e2e": {"p99_ms": p99}},
            "self_lag_ms": {"p50": 0.0, "p99": lag, "max": lag},
            "cpu": {"available": True, "pieces": {
                "broker": {"role": "broker", "cpu_ms": broker_ms, "instrument": False},
                "n1": {"role": "node", "cpu_ms": nodes_ms / 2, "instrument": False},
                "n2": {"role": "node", "cpu_ms": nodes_ms / 2, "instrument": False},
                "swarm1": {"role": "swarm", "cpu_ms": 400.0, "instrument": True}}}})


def test_cost_is_cpu_per_thousand_deliveries_and_published_messages():
    run = _run("a", 5, broker_ms=100, nodes_ms=1000)
    cost = cost_of(run.counts, run.cpu)
    assert (cost.broker_per_1k_deliveries, cost.nodes_per_1k_deliveries,
            cost.instrument_per_1k_deliveries) == (10.0, 100.0, 40.0)
    assert (cost.broker_per_1k_published, cost.nodes_per_1k_published) == (1000.0, 10000.0)
    unseen = _run("a", 5)
    del unseen.cpu.pieces["broker"]  # a broker on another host: not measured
    assert cost_of(unseen.counts, unseen.cpu).broker_per_1k_deliveries is None


def test_a_clear_winner_is_named_with_its_figures_and_what_the_others_cost():
    said = conclude([_run("per-group", 7.1, nodes_ms=1000), _run("fanout", 20.0, nodes_ms=6000),
                     _run("single-topic", 12.0)])
    assert said.winner == "per-group/per-node"
    assert said.sentence.startswith("per-group/per-node: lowest e2e p99 (7.1 ms")
    assert "next single-topic/per-node at 12 ms" in said.sentence
    assert ("fanout/per-node costs 6.0x the node CPU of per-group/per-node for the same "
            "traffic") in said.sentence
    assert [r.point for r in said.rows] == ["per-group/per-node", "single-topic/per-node",
                                            "fanout/per-node"]


@pytest.mark.parametrize(("second", "lag", "tie"), [
    (7.5, 0.3, True),  # 7.1 +- 0.3 and 7.5 +- 0.3 overlap: inside the instrument's error bar
    (7.5, 0.1, False),  # apart
])
def test_rows_within_each_others_error_bar_are_no_clear_winner(second, lag, tie):
    said = conclude([_run("a", 7.1, lag=lag), _run("b", second, lag=lag)])
    assert (said.winner is None) is tie
    assert said.sentence.startswith("no clear winner") is tie


def test_repeats_give_the_spread_a_winner_must_stand_apart_from():
    apart = conclude([_run("a", p) for p in (6.0, 7.0, 6.5)] + [_run("b", p) for p in (9, 8, 10)])
    assert apart.winner == "a/per-node" and "3 repeats 6-7" in apart.sentence
    overlapping = conclude([_run("a", p) for p in (6.0, 9.0, 6.5)]
                           + [_run("b", p) for p in (8.5, 8, 10)])
    assert overlapping.winner is None


def test_a_row_that_failed_or_lost_deliveries_is_not_ranked_however_fast():
    said = conclude([_run("quick", 1.0, lost=300), _run("broken", 0.5, error="node1 died"),
                     _run("slow", 30.0, culprit="server")])
    assert said.winner == "slow/per-node"
    assert "but over budget" not in said.sentence and "over budget like every row" in said.sentence
    assert "quick/per-node not ranked (lost 300 deliveries)" in said.sentence
    assert "broken/per-node not ranked (1 of 1 run(s) failed)" in said.sentence
    assert conclude([_run("broken", 0.5, error="x")]).winner is None


def test_the_conclusion_is_data_too():
    said = conclude([_run("a", 5.0), _run("b", 9.0)]).to_json()
    assert said["winner"] == "a/per-node"
    assert [r["point"] for r in said["ranking"]] == ["a/per-node", "b/per-node"]
    assert said["ranking"][0]["cost"]["nodes_per_1k_deliveries"] == 100.0


def _knee(load: float, culprit: str = "server", cause: str = "consumer-saturated: x") -> dict:
    return {"load": load, "reasons": [], "culprit": culprit, "cause": cause, "evidence": []}


def test_a_sweep_names_the_topology_that_holds_the_most_load():
    from mqprobe.figures import Sweep
    from mqprobe.verdict.conclusion import conclude_sweep

    said = conclude_sweep(Sweep.from_json({
        "axis": "groups", "values": [2, 10, 22], "layout": "per-node",
        "knees": {"single-topic": _knee(10), "per-group": None,
                  "socketio-manager": _knee(2, "mq", "broker-side: y")}}))
    assert said.winner == "per-group"
    assert said.sentence == ("per-group holds to groups = 22 (no knee): it holds the most load; "
                             "single-topic has its knee at groups = 10 (server: "
                             "consumer-saturated); socketio-manager has its knee at groups = 2 "
                             "(mq: broker-side)")
    tie = conclude_sweep(Sweep.from_json({"axis": "rate", "values": [10, 80],
                                          "knees": {"a": _knee(80), "b": _knee(80)}}))
    assert tie.winner is None and tie.sentence.startswith("no clear winner: a has its knee")

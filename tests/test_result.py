"""A run's result as typed values: saved runs read back and write the same JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mqprobe.figures import Verdict
from mqprobe.model import Cause, HopName
from mqprobe.result import RunRecord

pytestmark = pytest.mark.unit

SAVED = Path(__file__).parent / "data"


@pytest.mark.parametrize("saved", ["compare_result.json", "sweep_result.json"])
def test_every_saved_run_reads_back_and_writes_the_same_json(saved):
    runs = json.loads((SAVED / saved).read_text())["runs"]
    assert runs
    for doc in runs:
        record = RunRecord.from_json(doc)
        assert record.to_json() == doc, record.topology
        # and through a file: the JSON a result file holds, not just equal dicts
        assert json.loads(json.dumps(record.to_json())) == doc


def test_a_changed_part_shows_in_the_json():
    """The record writes what it holds, not the document it was read from."""
    doc = json.loads((SAVED / "compare_result.json").read_text())["runs"][0]
    record = RunRecord.from_json(doc)
    changed = replace(record, verdict=Verdict.of(Cause.GC_PAUSE), repeat=2)
    out = changed.to_json()
    assert out["verdict"]["cause"].startswith("gc-pause: ") and out["verdict"]["culprit"] == "server"
    assert out["repeat"] == 2 and "repeat" not in doc
    assert record.e2e.p99_ms == doc["hops"][HopName.E2E]["p99_ms"]
    assert record.hop("nonesuch").count == 0


def test_a_saved_comparison_reads_back_as_one_typed_object_and_writes_the_same_json():
    """result.Comparison: a compare's and a sweep's whole result, parsed once, key for key."""
    import json
    from pathlib import Path

    from mqprobe.result import Comparison

    for name in ("compare_result.json", "sweep_result.json"):
        saved = json.loads((Path(__file__).parent / "data" / name).read_text())
        comparison = Comparison.from_json(saved)
        assert comparison.to_json() == saved, name
        assert len(comparison.runs) == len(saved["runs"])
        assert (comparison.sweep is not None) == ("sweep" in saved)
        # the conclusion typed too: its ranking's rows and their costs, not a dict
        assert comparison.conclusion is not None
        assert comparison.sentence == saved["conclusion"]["sentence"]
        for row, kept in zip(comparison.conclusion.rows, saved["conclusion"]["ranking"],
                             strict=True):
            assert (row.point, row.e2e_p99_ms) == (kept["point"], kept["e2e_p99_ms"])
            assert row.cost.nodes_per_1k_deliveries == kept["cost"]["nodes_per_1k_deliveries"]


def test_a_conclusion_that_is_not_ours_is_one_sentence():
    from mqprobe.errors import ResultFormatError
    from mqprobe.result import Comparison

    with pytest.raises(ResultFormatError, match="the result's conclusion is not what mqprobe writes"):
        Comparison.from_json({"runs": [], "conclusion": {"ranking": [{"point": "x"}]}})

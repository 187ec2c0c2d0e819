"""The result's published JSON Schema is the one the loader's shapes say, the saved results
pass it, and the schema and the loader refuse the same wrong fields."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from mqprobe.result import result_problem, result_schema

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def saved() -> dict:
    return json.loads((DATA / "compare_result.json").read_text())


def test_the_published_schema_is_the_one_the_shapes_say():
    published = json.loads((ROOT / "docs" / "result.schema.json").read_text())
    assert published == result_schema(), (
        "docs/result.schema.json is stale: .venv/bin/python -m mqprobe.result "
        "> docs/result.schema.json")
    jsonschema.Draft202012Validator.check_schema(published)


@pytest.mark.parametrize("name", ["compare_result.json", "sweep_result.json"])
def test_saved_results_pass_the_schema_and_the_loader(name):
    result = json.loads((DATA / name).read_text())
    assert result_problem(result) == ""
    assert list(jsonschema.Draft202012Validator(result_schema()).iter_errors(result)) == []


def _set(doc: dict, path: tuple, value: object) -> dict:
    changed = copy.deepcopy(doc)
    inner = changed
    for key in path[:-1]:
        inner = inner[key]
    if value is KeyError:
        del inner[path[-1]]
    else:
        inner[path[-1]] = value
    return changed


@pytest.mark.parametrize(("path", "value"), [
    (("runs", 0, "published"), "12"),
    (("runs", 0, "hops", "e2e"), KeyError),
    (("runs", 0, "verdict", "culprit"), "the moon"),
    (("runs", 0, "verdict", "cause"), "cosmic-rays: it was them"),
    (("runs", 0, "topology"), "../etc"),
    (("runs", 0, "repeat"), -1),
    (("runs", 0, "verdict", "evidence"), [1, 2]),
    (("runs", 0, "timeline", "e2e", "rows"), [[1, 2]]),
    (("runs", 0, "cpu", "pieces", "broker", "cpu_ms"), None),
    (("runs",), {}),
    (("conclusion",), {"ranking": []}),
])
def test_the_schema_and_the_loader_refuse_the_same_wrong_field(saved, path, value):
    wrong = _set(saved, path, value)
    by_schema = list(jsonschema.Draft202012Validator(result_schema()).iter_errors(wrong))
    assert result_problem(wrong) and by_schema

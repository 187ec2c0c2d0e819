"""What a measurement leaves (run.outcome): the exit code its runs call for, and a run
directory of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqprobe.run.outcome import FAILED_EXIT, OVER_BUDGET_EXIT, exit_policy, new_run_dir

from ..made import record

_run = record


@pytest.mark.parametrize(("runs", "gate", "code", "said"), [
    ([_run(), _run("server")], False, 0, ""),
    ([_run(), _run("server")], True, OVER_BUDGET_EXIT, "1 run(s) over budget (--gate)"),
    ([_run(not_delivered=40)], True, OVER_BUDGET_EXIT,
     "1 run(s) fell behind (deliveries still queued at the end) (--gate)"),
    ([_run(not_delivered=40)], False, 0, ""),
    ([_run("server", lost=3), _run(error="node n1 died")], True, FAILED_EXIT,
     "1 run(s) failed, 1 run(s) lost deliveries"),
])
def test_the_exit_code_says_failed_or_lost_before_over_budget(runs, gate, code, said):
    assert exit_policy(runs, gate) == (code, said)


def test_a_run_dir_is_never_shared(tmp_path: Path):
    assert new_run_dir(tmp_path) != new_run_dir(tmp_path)

"""What a measurement leaves behind, apart from running it (run.runner): the directory of its
logs, its result file written whole after each run, and the exit code its runs call for.
Light on purpose: the command line reads it for every command, before anything runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mqprobe.errors import InputError
from mqprobe.model import Culprit
from mqprobe.result import Comparison, RunRecord


def new_run_dir(parent: Path) -> Path:
    """runs/<time>, made now and never shared: two commands in the same second get two."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise InputError(f"could not make a new run directory in {parent}")


def check_writable(path: Path) -> None:
    """Fail now, in one sentence, when the result could not be saved at the end (save
    writes PATH.tmp, then renames it over PATH)."""
    if path.is_dir():
        raise InputError(f"cannot write the result to {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_suffix(path.suffix + ".tmp")
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the result to {path}: {exc.strerror or exc}") from None


def save(result: Comparison | dict[str, Any], path: Path | None) -> None:
    """Written whole to PATH.tmp, then renamed over PATH: a reader never sees half of it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    doc = result.to_json() if isinstance(result, Comparison) else result
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


FAILED_EXIT = 1  # a run failed or lost deliveries (docs/failures.md)
OVER_BUDGET_EXIT = 3  # --gate: a run over budget or behind


def exit_policy(runs: list[RunRecord], gate: bool) -> tuple[int, str]:
    """(exit code, why) for a measurement's runs: FAILED_EXIT when a run failed or lost
    deliveries; with --gate, OVER_BUDGET_EXIT when one was over budget or still had
    deliveries on their way at the end; else (0, '')."""
    failed = sum(1 for run in runs if run.error)
    counts = [run.counts for run in runs]
    lost = sum(1 for run in runs if run.counts.lost and not run.lost_at_most)
    perhaps = sum(1 for run in runs if run.counts.lost and run.lost_at_most)
    if failed or lost or perhaps:
        return FAILED_EXIT, ", ".join(part for part in (
            f"{failed} run(s) failed" if failed else "",
            f"{lost} run(s) lost deliveries" if lost else "",
            f"{perhaps} run(s) may have lost deliveries (at most the ones a dead swarm never "
            "reported)" if perhaps else "") if part)
    behind = sum(1 for count in counts if count.not_delivered)
    over = sum(1 for run in runs if run.verdict.culprit != Culprit.NONE)
    if gate and (behind or over):
        return OVER_BUDGET_EXIT, ", ".join(part for part in (
            f"{over} run(s) over budget" if over else "",
            f"{behind} run(s) fell behind (deliveries still queued at the end)" if behind
            else "") if part) + " (--gate)"
    return 0, ""

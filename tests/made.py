"""Run results made for the tests of what reads them (report, conclusion, sweep's knee,
the exit policy), as a saved result would give them: no broker, no process."""

from __future__ import annotations

from mqprobe.result import RunRecord

CAUSE_OF = {"none": "within-budget", "mq": "broker-side", "server": "server-stall",
            "delivery": "delivery", "client": "swarm-saturated"}


def record(culprit: str = "none", **doc) -> RunRecord:
    """A run's result for a test of what reads it: `doc`'s fields over a verdict naming
    `culprit` (by a cause of its own); what it lacks is zero or empty."""
    return RunRecord.from_json({"verdict": {"culprit": culprit, "cause": CAUSE_OF[culprit]}, **doc})

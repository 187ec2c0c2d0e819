"""The failures mqprobe expects, as one family: the CLI prints their one sentence and exits
non-zero; anything else is a bug and keeps its traceback.

    MqprobeError            expected: its message is one sentence, safe to print
      InputError            bad input (a flag, a file, a setting, a header): also ValueError
        TopologyError, TraceFormatError, ResultFormatError
      BrokerError           a broker that cannot be started, reached or used
      RunError              a piece failed or timed out during a run
"""

from __future__ import annotations

import math


class MqprobeError(Exception):
    """An expected failure; the message is one sentence."""


class InputError(MqprobeError, ValueError):
    """Bad input: a flag, a file or a setting that mqprobe cannot use, and why."""


class ResultFormatError(InputError):
    """A result JSON that cannot be read back; the message names the file or the field."""


def within(name: str, value: float, low: float, high: float, above: bool = False) -> str:
    """'' when value is finite and within [low, high] (above low, with above=True); else
    the sentence that names the bound."""
    if not math.isfinite(value) or value > high or value < low or (above and value <= low):
        floor = f"above {low:g}" if above else f"at least {low:g}"
        return f"{name} must be a number {floor} and at most {high:g}, got {value:g}"
    return ""

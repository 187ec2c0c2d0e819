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
        floor = f"above {_plain(low)}" if above else f"at least {_plain(low)}"
        return f"{name} must be a number {floor} and at most {_plain(high)}, got {_plain(value)}"
    return ""


def _plain(value: float) -> str:
    """33554432, not 3.35544e+07: a bound is read, and copied into a command line."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


_ASCII_DIGITS = frozenset("0123456789")


def whole_number(text: str) -> int | None:
    """The non-negative integer `text` spells in ASCII digits, else None: str.isdigit()
    accepts '²', which int() then refuses with a traceback."""
    text = text.strip()
    return int(text) if text and set(text) <= _ASCII_DIGITS else None


def url_problem(option: str, url: str, schemes: tuple[str, ...], example: str) -> str:
    """'' when `url` has one of `schemes`, a host and a port in range; else the sentence
    (the password never in it). urlsplit checks the port only when asked, with a
    ValueError, so a port of 99999 reached the pieces as a traceback."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError as exc:
        return f"{option} is not a usable URL ({exc}); it must look like {example}"
    if parts.scheme not in schemes or not parts.hostname:
        return f"{option} must look like {example}, got a URL with scheme {parts.scheme!r}" + (
            "" if parts.hostname else " and no host")
    return ""

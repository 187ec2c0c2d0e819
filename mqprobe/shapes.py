"""The words a saved result's shape is said in: each part of a result says, beside its type
(its SHAPE), what a file must hold for report, trace and pictures to read it, checked once
when the file is loaded (result.result_problem): a wrong or hostile file (a field of the
wrong type, a number too large for a float, an unknown cause) is one sentence naming the
field, never a traceback in whichever reader touches it first.

A check takes a value and where it is ("run 2: verdict.shares[0].share") and returns ''
or the problem. A shape lists the fields the readers use; others pass as they are. Each
shape also says itself as JSON Schema (`.schema`): the result's, from Comparison.SHAPE, is
published as docs/result.schema.json (`python -m mqprobe.result` writes it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mqprobe.model import Cause


@dataclass(frozen=True)
class Check:
    """A shape: called with (value, where), it gives '' or the problem; `schema` says the
    same shape as JSON Schema."""

    check: Callable[[object, str], str]
    schema: dict[str, Any]

    def __call__(self, value: object, where: str) -> str:
        return self.check(value, where)


def shape(schema: dict[str, Any]) -> Callable[[Callable[[object, str], str]], Check]:
    """A check function, with the JSON Schema it enforces."""
    return lambda check: Check(check, schema)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _say(where: str, what: str) -> str:
    return f"{where} {what}" if where else f"it {what}"


@shape({"type": "number"})
def number(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _say(where, "is not a number")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    return "" if finite else _say(where, "is not a finite number a float can hold")


@shape({"type": "integer", "minimum": 0})
def count(value: object, where: str) -> str:
    if number(value, where) or not isinstance(value, int) or value < 0:
        return _say(where, "is not a whole number of 0 or more")
    return ""


MAX_CLOCK_MS = 1e9  # an offset or error bar beyond 11 days is no clock's (and fits in ns)


@shape({"type": "number", "minimum": -MAX_CLOCK_MS, "maximum": MAX_CLOCK_MS})
def clock_ms(value: object, where: str) -> str:
    if problem := number(value, where):
        return problem
    assert isinstance(value, int | float)  # number() said so
    return "" if abs(value) <= MAX_CLOCK_MS else _say(where, "is beyond any clock's offset")


@shape({"type": "string"})
def text(value: object, where: str) -> str:
    return "" if isinstance(value, str) else _say(where, "is not text")


@shape({"type": "string", "pattern": f"^{_SAFE_NAME.pattern}$"})
def safe_name(value: object, where: str) -> str:
    if isinstance(value, str) and _SAFE_NAME.fullmatch(value):
        return ""
    return _say(where, "is not a name of 1-64 of A-Z a-z 0-9 _ . -")


def one_of(kind: type[StrEnum]) -> Check:
    @shape({"enum": [member.value for member in kind]})
    def check(value: object, where: str) -> str:
        if isinstance(value, str) and value in kind._value2member_map_:
            return ""
        return _say(where, f"is not a {kind.__name__.lower()} mqprobe knows")
    return check


@shape({"type": "string",
        "pattern": "^(" + "|".join(re.escape(c.value) for c in Cause) + ")(:|$)"})
def cause_text(value: object, where: str) -> str:
    """A verdict's cause: the cause's name, then its prose ('broker-side: the wait ...')."""
    if isinstance(value, str) and Cause.of(value) is not None:
        return ""
    return _say(where, "does not open with a cause mqprobe knows")


def or_none(check: Check) -> Check:
    return Check(lambda value, where: "" if value is None else check(value, where),
                 {"anyOf": [check.schema, {"type": "null"}]})


def each(check: Check, at_least: int = 0) -> Check:
    @shape({"type": "array", "items": check.schema, **({"minItems": at_least} if at_least else {})})
    def check_list(value: object, where: str) -> str:
        if not isinstance(value, list):
            return _say(where, "is not a list")
        if len(value) < at_least:
            return _say(where, f"has fewer than {at_least} entries")
        return next((p for i, item in enumerate(value) if (p := check(item, f"{where}[{i}]"))), "")
    return check_list


def values(check: Check) -> Check:
    """An object of any keys, each value passing `check`."""
    @shape({"type": "object", "additionalProperties": check.schema})
    def check_map(value: object, where: str) -> str:
        if not isinstance(value, dict):
            return _say(where, "is not an object")
        return next((p for key, item in value.items() if (p := check(item, f"{where}.{key}"))), "")
    return check_map


def fields(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """An object with every `required` key, and `optional` keys checked where present."""
    @shape({"type": "object",
            "properties": {key: c.schema for key, c in {**required, **(optional or {})}.items()},
            **({"required": list(required)} if required else {})})
    def check_object(value: object, where: str) -> str:
        if not isinstance(value, dict):
            return _say(where, "is not an object")
        for key, check in required.items():
            inner = f"{where}.{key}" if where else key
            if key not in value:
                return _say(inner, "is missing")
            if problem := check(value[key], inner):
                return problem
        for key, check in (optional or {}).items():
            if key in value and (problem := check(value[key], f"{where}.{key}" if where else key)):
                return problem
        return ""
    return check_object


@shape({"type": "string", "contentEncoding": "base64",
        "description": "an HDR histogram in hdrhistogram's compressed encoding"})
def histogram(value: object, where: str) -> str:
    """An HDR histogram as the result keeps it (base64 of hdrhistogram's encoding)."""
    from hdrh.histogram import HdrHistogram

    if not isinstance(value, str):
        return _say(where, "is not an encoded histogram")
    try:
        HdrHistogram.decode(value)
    except Exception:  # hdrh raises its own, and binascii's, and zlib's
        return _say(where, "is not a histogram hdrhistogram can decode")
    return ""


def rows(width: int) -> Check:
    """A series' rows: lists of at least `width` numbers."""
    numbers = each(number)  # made once, not once a row: a result holds thousands

    @shape({"type": "array", "items": number.schema, "minItems": width})
    def row(value: object, where: str) -> str:
        if not isinstance(value, list) or len(value) < width:
            return _say(where, f"is not a row of {width} or more numbers")
        return numbers(value, where)
    return each(row)

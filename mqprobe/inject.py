"""Faults injected on purpose, so a demo or a test knows which culprit the verdict must name.

`--inject server-delay=50ms`  every message takes 50 ms more in the node's handler
`--inject broker-delay=50ms`  a real broker-side wait: messages sit in a TTL queue and are
                              dead-lettered to the topology's exchange 50 ms later
`--inject prefetch=1`         the consumers' prefetch window is 1
`--inject stall=200ms/2s`     node n1 blocks its event loop for 200 ms every 2 s (sleeping)
`--inject spin=200ms/2s`      node n1 saturates its event loop for 200 ms every 2 s (computing)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from mqprobe.errors import InputError

KINDS = ("server-delay", "broker-delay", "prefetch", "stall", "spin")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")


@dataclass(frozen=True)
class Faults:
    server_delay_s: float = 0.0
    broker_delay_ms: int = 0
    prefetch: int | None = None
    stall_s: float = 0.0
    stall_every_s: float = 0.0
    stall_spin: bool = False  # the stall computes (CPU busy) instead of sleeping

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}


def parse_duration(text: str, what: str) -> float:
    """Seconds from '50ms' or '2s' (a unit is required: a bare number is ambiguous)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise InputError(f"{what} needs a duration like 50ms or 2s, got {text!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_injections(items: list[str]) -> Faults:
    """Faults from repeated `--inject KIND=VALUE`; a wrong one is a ValueError sentence."""
    fields: dict = {}
    for item in items:
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise InputError(f"--inject takes KIND=VALUE with KIND one of {', '.join(KINDS)}, "
                             f"got {item!r}")
        if kind == "server-delay":
            fields["server_delay_s"] = parse_duration(value, "--inject server-delay")
        elif kind == "broker-delay":
            delay = parse_duration(value, "--inject broker-delay")
            fields["broker_delay_ms"] = max(1, round(delay * 1000))
        elif kind == "prefetch":
            if not value.strip().isdigit() or not 0 < int(value) <= 65535:
                raise InputError(f"--inject prefetch takes a whole number 1-65535, got {value!r}")
            fields["prefetch"] = int(value)
        else:
            stall, slash, every = value.partition("/")
            if not slash:
                raise InputError(f"--inject {kind} takes STALL/EVERY like 200ms/2s, got {value!r}")
            fields["stall_s"] = parse_duration(stall, f"--inject {kind}")
            fields["stall_every_s"] = parse_duration(every, f"--inject {kind} period")
            fields["stall_spin"] = kind == "spin"
            if fields["stall_every_s"] <= fields["stall_s"]:
                raise InputError(f"--inject {kind}: the period must be longer than the stall")
    return Faults(**fields)

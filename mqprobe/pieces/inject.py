"""Faults injected on purpose, so a demo or a test knows which culprit the verdict must name.

`--inject server-delay=50ms`  every message takes 50 ms more in the node's handler
`--inject broker-delay=50ms`  a real broker-side wait: messages sit in a TTL queue and are
                              dead-lettered to the topology's exchange 50 ms later
`--inject prefetch=1`         the consumers' prefetch window is 1
`--inject stall=200ms/2s`     node n1 blocks its event loop for 200 ms every 2 s (sleeping)
`--inject spin=200ms/2s`      node n1 saturates its event loop for 200 ms every 2 s (computing)
`--inject throttle=10%`       node n1 runs in a cgroup whose CPU quota is 10% of one CPU, the
                              way a container's CPU limit holds a server back (Linux, with a
                              writable cgroup CPU controller; refused in one sentence elsewhere)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import asdict, dataclass

from mqprobe.cpu import pid_alive
from mqprobe.errors import InputError, whole_number

KINDS = ("server-delay", "broker-delay", "prefetch", "stall", "spin", "throttle")
CGROUP_ROOT = "/sys/fs/cgroup"
REMOVE_TRIES = 100  # 10 ms apart: a cgroup the kernel still counts as busy, at most 1 s
QUOTA_PERIOD_US = 100_000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s)", re.ASCII)


@dataclass(frozen=True)
class Faults:
    server_delay_s: float = 0.0
    broker_delay_ms: int = 0
    prefetch: int | None = None
    stall_s: float = 0.0
    stall_every_s: float = 0.0
    stall_spin: bool = False  # the stall computes (CPU busy) instead of sleeping
    throttle_share: float = 0.0  # a CPU quota, as a share of one CPU (0: none)

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
        elif kind == "throttle":
            percent = whole_number(value.strip().removesuffix("%"))
            if not value.strip().endswith("%") or percent is None or not 1 <= percent <= 100:
                raise InputError(f"--inject throttle takes a CPU quota of 1% to 100% of one CPU, "
                                 f"like 10%, got {value!r}")
            if problem := CpuQuota.problem():
                raise InputError(f"--inject throttle cannot be applied on this machine: {problem}")
            fields["throttle_share"] = percent / 100
        elif kind == "prefetch":
            prefetch = whole_number(value)
            if prefetch is None or not 0 < prefetch <= 65535:
                raise InputError(f"--inject prefetch takes a whole number 1-65535, got {value!r}")
            fields["prefetch"] = prefetch
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


class CpuQuota:
    """A cgroup with a CPU quota that this process joins, and leaves before removing it:
    cgroup v1's `cpu` controller (cpu.cfs_quota_us), else v2's cpu.max."""

    def __init__(self, name: str, share: float, root: str = CGROUP_ROOT) -> None:
        base, v1 = _cpu_controller(root) or (root, False)
        self.path, self.base = f"{base}/{name}", base
        _remove_stale(base)
        quota = max(1000, int(share * QUOTA_PERIOD_US))
        os.makedirs(self.path, exist_ok=True)
        if v1:
            _write(f"{self.path}/cpu.cfs_period_us", str(QUOTA_PERIOD_US))
            _write(f"{self.path}/cpu.cfs_quota_us", str(quota))
        else:
            _write(f"{self.path}/cpu.max", f"{quota} {QUOTA_PERIOD_US}")

    @staticmethod
    def problem(root: str = CGROUP_ROOT) -> str:
        """Why a quota cannot be set here, in one sentence; '' when it can."""
        found = _cpu_controller(root)
        if found is None:
            return (f"no cgroup CPU controller under {root} (not Linux, or a container that "
                    "hides it)")
        if not os.access(found[0], os.W_OK):
            return f"{found[0]} is not writable (run as root, or with a delegated cgroup)"
        return ""

    def join(self) -> None:
        _write(f"{self.path}/cgroup.procs", str(os.getpid()))

    def remove(self) -> None:
        """Back to the parent cgroup, then the quota's own is removed (it must be empty).
        The kernel may still count the process in it for a moment after it moved (a fresh
        clone's suite once found the cgroup left behind): busy is tried again, briefly."""
        try:
            _write(f"{self.base}/cgroup.procs", str(os.getpid()))
        except OSError:
            return
        for _ in range(REMOVE_TRIES):
            try:
                os.rmdir(self.path)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
                time.sleep(0.01)


def _remove_stale(base: str) -> None:
    """The quota cgroups of nodes that ended without removing theirs (mqprobe-<node>-<pid>,
    the pid gone): empty, so removable; one of a live node is left alone."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name.rpartition("-")[2]
            if name.startswith("mqprobe-") and pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.rmdir(f"{base}/{name}")


def _cpu_controller(root: str) -> tuple[str, bool] | None:
    """Where CPU quotas are set (and whether it is cgroup v1), or None where nowhere."""
    if os.path.exists(f"{root}/cpu/cpu.cfs_quota_us"):
        return f"{root}/cpu", True
    if "cpu" in _read(f"{root}/cgroup.controllers").split():
        return root, False
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""

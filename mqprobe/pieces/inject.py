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
`--inject link-delay=20ms`    every piece's AMQP connection goes through a proxy on loopback
                              that holds each chunk 20 ms each way, as a broker in another zone
                              or behind a load balancer would; `20ms+10ms` adds up to 10 ms of
                              jitter, `n1:20ms` (or `publisher:`) delays that piece's alone
`--inject broker-throttle=5%` the managed broker runs in a cgroup whose CPU quota is 5% of one
                              CPU while the run measures (a pod's CPU limit on RabbitMQ)
`--inject broker-freeze=3s`   the managed broker is stopped (SIGSTOP) 1 s into publishing, and
                              continued 3 s later: a frozen process, a paused VM
`--inject churn=200/s`        a load process beside the swarm, with as many members, joined to a
                              room nothing is published to (connections, not fan-out), whose
                              members leave and join again, 200 a second in all (the seed's
                              reconnect storm; they are reported apart)
`--inject client-stall=3s/6s` that load process's loop cannot run for 3 s every 6 s, as on an
                              overloaded host: it answers no ping meanwhile, and with pings
                              shorter than the stall (--ping-interval, --ping-timeout) the
                              servers time its members out and they all join again after it
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import signal
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass

from mqprobe.cpu import pid_alive, read_text
from mqprobe.errors import InputError, whole_number
from mqprobe.model import Fault, PieceRole

MAX_CHURN_PER_S = 10_000
BROKER_FAULTS = (Fault.BROKER_THROTTLE, Fault.BROKER_FREEZE)  # on the managed broker's processes
FREEZE_AFTER_S = 1.0  # into publishing, a broker-freeze begins
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
    link_delay_s: float = 0.0  # each way, on the pieces' AMQP connections
    link_jitter_s: float = 0.0  # up to this much more, each chunk its own
    link_pieces: tuple[str, ...] = ()  # whose connections (publisher, n1...); (): all
    broker_throttle_share: float = 0.0  # the managed broker's CPU quota (0: none)
    broker_freeze_s: float = 0.0  # the managed broker stopped this long, mid-run
    churn_per_s: float = 0.0  # a load process's members leave and join again this often
    client_stall_s: float = 0.0  # a load process's loop blocked this long ...
    client_stall_every_s: float = 0.0  # ... this often

    @property
    def load(self) -> bool:
        """Whether a load process (members beside the measured ones) is asked for."""
        return bool(self.churn_per_s or self.client_stall_s)

    @property
    def on_the_broker(self) -> list[Fault]:
        """The faults asked for that act on the broker's own processes."""
        return [kind for kind, on in zip(BROKER_FAULTS, (self.broker_throttle_share,
                                                         self.broker_freeze_s), strict=True) if on]

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
        name, sep, value = item.partition("=")
        kind = Fault._value2member_map_.get(name.strip()) if sep else None
        if not isinstance(kind, Fault):
            raise InputError(f"--inject takes KIND=VALUE with KIND one of "
                             f"{', '.join(Fault)}, got {item!r}")
        fields.update(_fault(kind, value))
    return Faults(**fields)


def _fault(kind: Fault, value: str) -> dict:
    """The Faults fields one `--inject KIND=VALUE` sets."""
    match kind:
        case Fault.SERVER_DELAY:
            return {"server_delay_s": parse_duration(value, "--inject server-delay")}
        case Fault.BROKER_DELAY:
            delay = parse_duration(value, "--inject broker-delay")
            return {"broker_delay_ms": max(1, round(delay * 1000))}
        case Fault.THROTTLE | Fault.BROKER_THROTTLE:
            percent = whole_number(value.strip().removesuffix("%"))
            if not value.strip().endswith("%") or percent is None or not 1 <= percent <= 100:
                raise InputError(f"--inject {kind} takes a CPU quota of 1% to 100% of one CPU, "
                                 f"like 10%, got {value!r}")
            if problem := CpuQuota.problem():
                raise InputError(f"--inject {kind} cannot be applied on this machine: {problem}")
            share = "throttle_share" if kind is Fault.THROTTLE else "broker_throttle_share"
            return {share: percent / 100}
        case Fault.CHURN:
            per_s = whole_number(value.strip().removesuffix("/s"))
            if not value.strip().endswith("/s") or per_s is None \
                    or not 1 <= per_s <= MAX_CHURN_PER_S:
                raise InputError(f"--inject churn takes members a second, 1/s to "
                                 f"{MAX_CHURN_PER_S:,}/s, like 200/s, got {value!r}")
            return {"churn_per_s": float(per_s)}
        case Fault.CLIENT_STALL:
            stall, every = _stall_every(kind, value)
            return {"client_stall_s": stall, "client_stall_every_s": every}
        case Fault.BROKER_FREEZE:
            return {"broker_freeze_s": parse_duration(value, "--inject broker-freeze")}
        case Fault.LINK_DELAY:
            return _link_delay(value)
        case Fault.PREFETCH:
            prefetch = whole_number(value)
            if prefetch is None or not 0 < prefetch <= 65535:
                raise InputError(f"--inject prefetch takes a whole number 1-65535, got {value!r}")
            return {"prefetch": prefetch}
        case Fault.STALL | Fault.SPIN:
            stall, every = _stall_every(kind, value)
            return {"stall_s": stall, "stall_every_s": every, "stall_spin": kind is Fault.SPIN}


def _stall_every(kind: Fault, value: str) -> tuple[float, float]:
    """`200ms/2s`: a stall and its period, the period the longer."""
    stall, slash, every = value.partition("/")
    if not slash:
        raise InputError(f"--inject {kind} takes STALL/EVERY like 200ms/2s, got {value!r}")
    stall_s = parse_duration(stall, f"--inject {kind}")
    every_s = parse_duration(every, f"--inject {kind} period")
    if every_s <= stall_s:
        raise InputError(f"--inject {kind}: the period must be longer than the stall")
    return stall_s, every_s


def _link_delay(value: str) -> dict:
    """`20ms`, `20ms+10ms` (jitter), `n1:20ms` (one piece's connection)."""
    whose, colon, delay = value.strip().rpartition(":")
    pieces = tuple(p.strip() for p in whose.split(",")) if colon else ()
    for piece in pieces:
        if piece != PieceRole.PUBLISHER and not (piece[:1] == "n" and piece[1:].isdigit()):
            raise InputError(f"--inject link-delay names pieces as publisher or n1, n2...; "
                             f"got {piece!r}")
    base, plus, jitter = delay.partition("+")
    delay_s = parse_duration(base, "--inject link-delay")
    jitter_s = parse_duration(jitter, "--inject link-delay jitter") if plus else 0.0
    if delay_s + jitter_s > 10:
        raise InputError("--inject link-delay: at most 10 s each way")
    return {"link_delay_s": delay_s, "link_jitter_s": jitter_s, "link_pieces": pieces}


class DelayingProxy:
    """A TCP proxy on loopback in front of a broker that holds every chunk `delay_s` (plus
    up to `jitter_s`, each chunk its own) each way, in order: the round trip of a broker in
    another zone, or behind a load balancer. It runs its own event loop in a thread of its
    own (one thread for all its connections), so compare's loop never shapes the link."""

    def __init__(self, host: str, port: int, delay_s: float, jitter_s: float = 0.0) -> None:
        self.target = (host, port)
        self.delay_s, self.jitter_s = delay_s, jitter_s
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()

        thread = self._thread = threading.Thread(target=run, name="mqprobe-link-delay",
                                                 daemon=True)
        thread.start()
        if not ready.wait(10):
            raise OSError("the link-delay proxy did not start")
        return self.port

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            if self._server:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)
        self._writers -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk written `delay` after it was read, in the order read: one writer
        takes them from a queue (timers due at the same moment keep no order: a jittered
        link once sent RabbitMQ connection.open before tune-ok)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = loop.create_task(_send_in_order(chunks, writer))
        due = 0.0
        try:
            while chunk := await reader.read(65536):
                due = max(due, loop.time() + self.delay_s + random.uniform(0, self.jitter_s))
                chunks.put_nowait((due, chunk))
            chunks.put_nowait((due, b""))  # the end: close once the rest is written
            await sender
        finally:
            sender.cancel()
            writer.close()


async def _send_in_order(chunks: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due, chunk = await chunks.get()
        await asyncio.sleep(max(0.0, due - loop.time()))
        if not chunk or writer.is_closing():
            return
        writer.write(chunk)


def proxied_url(amqp_url: str, port: int) -> str:
    """The same broker URL, through a proxy on loopback at `port`."""
    parts = urllib.parse.urlsplit(amqp_url)
    auth = parts.netloc.rpartition("@")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}" if auth
                                                  else f"127.0.0.1:{port}"))


async def freeze(pids: list[int], after_s: float, for_s: float) -> None:
    """Stop the processes `after_s` from now and continue them `for_s` later (and always
    continue them, however this is ended)."""
    await asyncio.sleep(after_s)
    stopped = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        await asyncio.sleep(for_s)
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


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

    def join(self, pids: list[int] | None = None) -> None:
        """This process (or `pids`, each with all its threads) into the quota's cgroup."""
        for pid in pids or [os.getpid()]:
            _write(f"{self.path}/cgroup.procs", str(pid))
        self._joined = list(pids or [os.getpid()])

    def remove(self) -> None:
        """Back to the parent cgroup, then the quota's own is removed (it must be empty).
        The kernel may still count the process in it for a moment after it moved (a fresh
        clone's suite once found the cgroup left behind): busy is tried again, briefly."""
        try:
            for pid in getattr(self, "_joined", None) or [os.getpid()]:
                with contextlib.suppress(ProcessLookupError):
                    _write(f"{self.base}/cgroup.procs", str(pid))
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
    if "cpu" in read_text(f"{root}/cgroup.controllers").split():
        return root, False
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)

"""What Linux says about CPU time, read cheaply: per thread (on a CPU, or runnable and
waiting for one), per process, per cgroup (throttled by a CPU quota) and for the host
(pressure).

From process CPU share alone, a loop that was runnable but found no CPU free reads the
same as one blocked in a synchronous call. The scheduler keeps the difference:
`/proc/thread-self/schedstat` gives a thread's time on a CPU and its time waiting on a
run queue, a cgroup's `cpu.stat` the time a quota held it back, and `/proc/pressure/cpu`
how long the host had runnable tasks without a CPU. Each reader says when its counter is
missing (another OS, a sandbox that hides it) instead of reading zeros as "nothing".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 10_000_000


@dataclass(frozen=True, slots=True)
class CpuReading:
    """One reading of a thread's counters (ns since the thread or cgroup began)."""

    on_cpu_ns: int
    wait_ns: int  # on a run queue, throttling included (the kernel counts it as waiting)
    throttled_ns: int  # the cgroup's, shared by its threads


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Where `wall_ns` of one thread went, in four parts that add up to it: computing,
    runnable and waiting for a CPU, held back by its cgroup's quota, and off the CPU (a
    sleep, I/O, a lock)."""

    wall_ns: int
    on_cpu_ns: int
    waiting_ns: int
    throttled_ns: int
    off_cpu_ns: int

    @classmethod
    def between(cls, before: CpuReading, after: CpuReading, wall_ns: int) -> Anatomy:
        """The parts of `wall_ns` from two readings. The cgroup's throttled time is shared
        by its threads, so this thread's share of it is at most its own wait."""
        wall = max(0, wall_ns)
        on = min(wall, max(0, after.on_cpu_ns - before.on_cpu_ns))
        wait = min(wall - on, max(0, after.wait_ns - before.wait_ns))
        throttled = min(wait, max(0, after.throttled_ns - before.throttled_ns))
        return cls(wall, on, wait - throttled, throttled, wall - on - wait)

    def minus_sleep(self, slept_ns: int) -> Anatomy:
        """The same span without the `slept_ns` it meant to sleep (a loop-lag tick: the
        timer's own interval is off-CPU by design, and not part of the lag)."""
        off = max(0, self.off_cpu_ns - slept_ns)
        return Anatomy(self.wall_ns - (self.off_cpu_ns - off), self.on_cpu_ns, self.waiting_ns,
                       self.throttled_ns, off)

    def to_detail(self) -> dict[str, float]:
        """For a timeline event: each part in ms."""
        return {"on_cpu_ms": ms_of(self.on_cpu_ns), "waiting_ms": ms_of(self.waiting_ns),
                "throttled_ms": ms_of(self.throttled_ns), "off_cpu_ms": ms_of(self.off_cpu_ns)}


def ms_of(ns: float) -> float:
    """ns as ms, to the microsecond."""
    return round(ns / 1e6, 3)


class ThreadCounters:
    """The calling thread's scheduler counters, and its cgroup's throttled time: files held
    open and re-read with one pread each, a few microseconds a reading.

    `available` is False, with `reason`, where the kernel does not give them (then every
    reading is zeros and nothing may be concluded from them)."""

    def __init__(self, wanted: bool = True) -> None:
        self.reason = ""
        self._schedstat: int | None = None
        self._throttle: CgroupThrottle | None = None
        if not wanted:  # a piece whose stalls nothing splits: no reads on its every tick
            self.reason = "not read by this piece (its stalls are read by the CPU share)"
            return
        self._schedstat = _open("/proc/thread-self/schedstat")
        if self._schedstat is None:
            self.reason = "/proc/thread-self/schedstat is not readable (not Linux, or hidden)"
        self._throttle = CgroupThrottle()
        if self._schedstat is not None and self._read_schedstat() == (0, 0):
            # a kernel without sched_info reports zeros for a thread that surely ran
            self.reason = "the kernel's schedstat counters read zero (sched_info off)"
            os.close(self._schedstat)
            self._schedstat = None

    @property
    def available(self) -> bool:
        return self._schedstat is not None

    @property
    def source(self) -> str:
        """What the readings rest on, for the result (or why there are none)."""
        if not self.available:
            return f"unavailable: {self.reason}"
        return "schedstat" + (f" + {self._throttle.source}"
                              if self._throttle and self._throttle.available else "")

    def _read_schedstat(self) -> tuple[int, int]:
        if self._schedstat is None:
            return 0, 0
        try:
            on, wait, *_ = os.pread(self._schedstat, 128, 0).split()
            return int(on), int(wait)
        except (OSError, ValueError):
            return 0, 0

    def read(self) -> CpuReading:
        if self._schedstat is None:
            return CpuReading(0, 0, 0)
        on, wait = self._read_schedstat()
        return CpuReading(on, wait, self._throttle.read() if self._throttle else 0)

    def close(self) -> None:
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None
        if self._throttle:
            self._throttle.close()


# An Erlang VM's threads that run its processes (`1_scheduler`...) and poll its sockets
# (`0_poller`): a message through RabbitMQ waits on these; its dirty I/O schedulers, async
# and signal threads serve the disk and the VM itself, not a message on its way.
ON_PATH_SUFFIXES = ("_scheduler", "_poller")


class ProcessWaits:
    """How long the threads of some processes ran and waited on a run queue for a CPU (ns,
    summed): a multi-threaded piece such as RabbitMQ's Erlang VM waits thread by thread,
    and no per-process counter sums it. Each thread's schedstat is held open and re-read
    with one pread; threads started later are picked up by `refresh`, and one that ended
    keeps what it had. The threads a message's path runs on (ON_PATH_SUFFIXES, when the
    process names its threads so) are also summed apart (`read_path`)."""

    def __init__(self, pids: list[int]) -> None:
        self._files: dict[str, int] = {}  # /proc/<pid>/task/<tid>/schedstat -> fd
        self._on_path: set[str] = set()  # of those, the threads a message's path runs on
        self._last: dict[str, tuple[int, int]] = {}  # (on a CPU, waited) when last read
        self.available = False  # some thread's counters could be read (closing keeps it so)
        self.refresh(pids)

    def refresh(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                path = f"/proc/{pid}/task/{tid}/schedstat"
                if path not in self._files and (fd := _open(path)) is not None:
                    self._files[path] = fd
                    self.available = True
                    if _thread_name(pid, tid).endswith(ON_PATH_SUFFIXES):
                        self._on_path.add(path)

    def read(self) -> int:
        """Every thread's waits so far, summed (ns)."""
        for path, fd in self._files.items():
            try:
                on, wait = os.pread(fd, 128, 0).split()[:2]
                self._last[path] = (int(on), int(wait))
            except (OSError, ValueError):  # the thread ended: keep what it had
                pass
        return sum(wait for _on, wait in self._last.values())

    def read_path(self) -> dict[str, tuple[int, int]]:
        """As last read: each on-path thread's time on a CPU and waiting for one (ns); every
        thread's, where none is named as on a message's path (not an Erlang VM)."""
        return {path: self._last[path] for path in (self._on_path or self._last)
                if path in self._last}

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


def _thread_name(pid: int, tid: str) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as file:
            return file.read().strip()
    except OSError:
        return ""


class CgroupThrottle:
    """The time this process's CPU cgroup was held back by its quota (ns), from cpu.stat:
    cgroup v2 `throttled_usec`, v1 `throttled_time` (ns)."""

    def __init__(self, pid: str = "self") -> None:
        self.path = cgroup_cpu_stat(pid)
        self._fd = _open(self.path) if self.path else None
        self.source = f"cgroup {self.path}" if self._fd is not None else ""

    @property
    def available(self) -> bool:
        return self._fd is not None

    def read(self) -> int:
        if self._fd is None:
            return 0
        try:
            return parse_throttled_ns(os.pread(self._fd, 4096, 0).decode())
        except OSError:
            return 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parse_throttled_ns(text: str) -> int:
    """Throttled time in ns from a cpu.stat (v2 `throttled_usec`, v1 `throttled_time`)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_usec":
            return int(value) * 1000
        if key == "throttled_time":
            return int(value)
    return 0


def cgroup_cpu_stat(pid: str = "self", root: str = "/sys/fs/cgroup") -> str | None:
    """The cpu.stat of a process's CPU cgroup (v1 `cpu` controller, else v2), or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            for mount in (f"{root}/cpu", f"{root}/cpu,cpuacct", f"{root}/cpuacct,cpu"):
                candidate = f"{mount}{path.rstrip('/')}/cpu.stat"
                if os.path.exists(candidate):
                    return candidate
        if controllers == "":
            unified = path
    if unified is not None:
        for mount in (root, f"{root}/unified"):
            candidate = f"{mount}{unified.rstrip('/')}/cpu.stat"
            if os.path.exists(candidate):
                return candidate
    return None


def cgroup_quota(pid: int | str = "self", root: str = "/sys/fs/cgroup") -> float | None:
    """A process's CPU quota as a share of one CPU (cgroup v1 cfs_quota_us/cfs_period_us,
    v2 cpu.max), or None where it has none or it cannot be read."""
    stat = cgroup_cpu_stat(str(pid), root)
    if stat is None:
        return None
    folder = stat.rpartition("/")[0]
    quota = read_text(f"{folder}/cpu.cfs_quota_us")
    period = read_text(f"{folder}/cpu.cfs_period_us")
    if not quota:  # v2: "max 100000" or "5000 100000"
        quota, _, period = read_text(f"{folder}/cpu.max").partition(" ")
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def process_stopped(pid: int) -> bool:
    """Whether a process is stopped (state T: SIGSTOP, a debugger, a frozen cgroup's `T`),
    not merely idle: it cannot answer however long it is asked."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except OSError:
        return False
    return text[text.rindex(b")") + 2:][:1] in (b"T", b"t")


def read_text(path: str) -> str:
    """A small file's text, stripped; '' where it cannot be read (a missing cgroup file)."""
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return ""


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


# -- processes and the host, as a sampler outside them sees them ---------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not; one we may not signal does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_cpu_ns(pid: int) -> int | None:
    """A process's CPU time so far, user + system, all its threads (ns); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_NS  # utime, stime


def process_tree(root_pid: int) -> list[int]:
    """The process and all its descendants (a broker's script, its Erlang VM, epmd...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                text = file.read()
        except OSError:
            continue
        parent = int(text[text.rindex(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def run_cpus() -> frozenset[int] | None:
    """The CPUs this process (and the pieces it starts) may run on, when fewer than the
    host's (`taskset`, a cpuset): a process elsewhere took no CPU from them."""
    try:
        allowed = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return allowed if len(allowed) < (os.cpu_count() or 0) else None


def host_cpu_ns(cpus: frozenset[int] | None = None) -> tuple[int, int, int] | None:
    """The host's CPU time in all, of it busy (not idle or iowait), and stolen (a virtual
    machine's CPUs held by its hypervisor: every thread paused, whatever it was doing),
    over all CPUs, or over `cpus` only."""
    try:
        with open("/proc/stat") as file:
            rows = [file.readline().split()] if cpus is None else [
                line.split() for line in file if line.startswith("cpu")]
    except OSError:
        return None
    if cpus is not None:  # the per-CPU lines (cpu0, cpu1, ...) of those CPUs
        rows = [fields for fields in rows if fields[0][3:].isdigit() and int(fields[0][3:]) in cpus]
    if not rows:
        return None
    values = [sum(int(fields[i]) for fields in rows) * CLOCK_TICK_NS for i in range(1, 9)]
    idle = values[3] + values[4]
    return sum(values), sum(values) - idle, values[7]


def host_pressure_ns() -> int | None:
    """The host's CPU pressure so far (`some` total): time runnable tasks waited for a CPU
    (Linux PSI); None where the kernel does not give it."""
    try:
        with open("/proc/pressure/cpu") as file:
            for line in file:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1]) * 1000
    except (OSError, ValueError, IndexError):
        return None
    return None


def listening_pid(port: int) -> int | None:
    """The local process listening on a TCP port (a local broker seen by pid), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file, None)
                for line in file:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    return int(entry)
        except OSError:
            continue
    return None

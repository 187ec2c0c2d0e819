"""What each piece of a run cost in CPU, sampled from outside every 100 ms on the run's
clock: the system measured (the broker, the nodes) beside the instrument measuring it
(swarms, publisher, compare itself), and the host's CPU pressure.

A node that waited for a CPU waited for someone: this is where the verdict finds who. A
piece it cannot see (on another host, or a broker that is not local) is named as not seen,
never counted as idle; a broker elsewhere whose Prometheus endpoint answers is counted from
what the broker sampler's scrapes of it read (Reported), and the result says so.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from dataclasses import dataclass, field

from mqprobe.cpu import (
    CgroupThrottle,
    ProcessWaits,
    cgroup_quota,
    host_cpu_ns,
    host_pressure_ns,
    listening_pid,
    process_cpu_ns,
    process_stopped,
    process_tree,
    run_cpus,
)
from mqprobe.figures import BrokerCpu, CpuUse, HostCpu, PieceCpu
from mqprobe.model import HOST_CPU, INSTRUMENT_ROLES, PieceRole, role_of
from mqprobe.stamps import now_ns
from mqprobe.windows import Windows

PERIOD_S = 0.1
THREADS_EVERY = 10  # samples between looks for threads a piece started since


@dataclass(frozen=True)
class Reported:
    """A piece's CPU as something other than /proc reports it (a remote broker's
    Prometheus endpoint): `readings`, (ns, its CPU ms so far), filled by whoever reads it
    (the broker sampler, from the scrape it makes anyway)."""

    source: str  # said in the result beside the figure
    readings: list[tuple[int, float]]


@dataclass
class CpuSampler:
    """Samples the CPU time of named local processes and the host's, every PERIOD_S until
    cancelled. A piece may be several processes (the broker's Erlang VM and its helpers,
    found by broker_processes before measuring: finding them scans /proc)."""

    pids: dict[str, list[int]]  # piece -> its processes (the broker's with its helpers)
    not_seen: dict[str, str] = field(default_factory=dict)  # piece -> why it is not sampled
    times: list[int] = field(default_factory=list)  # ns, CLOCK_REALTIME, at each sample
    used: dict[str, list[int]] = field(default_factory=dict)  # piece -> CPU ns at each sample
    host: list[tuple[int, int, int]] = field(default_factory=list)  # (all, busy, stolen) ns
    pressure: list[int] = field(default_factory=list)  # the host's PSI `some` ns so far
    # piece -> its threads' run-queue wait so far (ns) at each sample: the broker's too,
    # which measures nothing of itself
    waited: dict[str, list[int]] = field(default_factory=dict)
    reported: dict[str, Reported] = field(default_factory=dict)  # piece -> where its CPU is read
    # a local broker, per sample window: its on-path threads' time on a CPU, their waits
    # for one beyond its cgroup's throttling (summed, and the longest one thread's), its
    # throttled time, the most one thread computed (BrokerCpu's rows); and at each sample
    # whether its process was stopped
    broker_rows: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)
    broker_stopped: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the host as the run sees it: the CPUs its pieces may use (all, unless pinned: one
        # core's run beside work on the other once read 'other processes 98%' of its core)
        self.cpus = run_cpus()
        self.used = {piece: [] for piece in self.pids}
        self.waited = {piece: [] for piece in self.pids}
        self._waits = {piece: ProcessWaits(pids) for piece, pids in self.pids.items()}
        self._last: dict[int, int] = {}  # pid -> its CPU when last seen (it may have ended)
        broker = self.pids.get(PieceRole.BROKER, [])
        self._broker_pid = next((pid for pid in broker if _name(pid) == "beam.smp"),
                                broker[0] if broker else 0)
        self._broker_cgroup = CgroupThrottle(str(self._broker_pid)) if broker else None
        self.broker_quota = cgroup_quota(self._broker_pid) if broker else None
        self._broker_cgroup_read = bool(self._broker_cgroup and self._broker_cgroup.available)
        self._broker_last: tuple[dict[str, tuple[int, int]], int] = ({}, 0)

    def sample(self) -> None:
        self.times.append(now_ns())
        refresh = len(self.times) % THREADS_EVERY == 0
        for piece, pids in self.pids.items():
            self.used[piece].append(sum(self._cpu(pid) for pid in pids))
            waits = self._waits[piece]
            if refresh:
                waits.refresh(pids)
            self.waited[piece].append(waits.read())
        if self._broker_cgroup is not None:
            self._sample_broker()
        self.host.append(host_cpu_ns(self.cpus) or (0, 0, 0))
        self.pressure.append(host_pressure_ns() or 0)

    def forget_before(self, t_ns: int) -> None:
        """The samples before t_ns, all but the last of them (each window is a difference of
        two samples): a sampler kept for hours (a trace's watch) in flat memory."""
        keep = max(0, next((i for i, t in enumerate(self.times) if t >= t_ns),
                           len(self.times)) - 1)
        if not keep:
            return
        del self.times[:keep]
        every: list[list] = [*self.used.values(), *self.waited.values(), self.host,
                             self.pressure, self.broker_stopped]
        for series in every:
            del series[:keep]
        del self.broker_rows[:keep]

    def _sample_broker(self) -> None:
        """One window of a local broker's own counters. The kernel counts a throttled
        thread's time as a wait on its run queue: each thread's wait beyond the cgroup's
        throttled time is what it waited for a CPU others had."""
        threads = self._waits[PieceRole.BROKER].read_path()
        throttled = self._broker_cgroup.read() if self._broker_cgroup else 0
        (before, throttled_before), self._broker_last = self._broker_last, (threads, throttled)
        self.broker_stopped.append(process_stopped(self._broker_pid))
        if len(self.times) < 2:
            return
        held_back = throttled - throttled_before
        on = waited = most = busiest = 0
        for path, (now_on, now_wait) in threads.items():
            was_on, was_wait = before.get(path, (now_on, now_wait))
            on, busiest = on + now_on - was_on, max(busiest, now_on - was_on)
            wait = max(0, now_wait - was_wait - held_back)
            waited, most = waited + wait, max(most, wait)
        start, end = self.times[-2], self.times[-1]
        # its threads are read after the window is stamped: a late read spans more than
        # the window, and no one thread waits longer than the window itself
        wall = end - start
        self.broker_rows.append((start, wall, min(on, wall * len(threads)),
                                 min(waited, wall * len(threads)), min(most, wall),
                                 min(held_back, wall * len(threads)), min(busiest, wall)))

    def _cpu(self, pid: int) -> int:
        """A process's CPU so far; one that has ended keeps what it had used."""
        used = process_cpu_ns(pid)
        if used is None:
            return self._last.get(pid, 0)
        self._last[pid] = used
        return used

    async def run(self, period_s: float = PERIOD_S) -> None:
        try:
            while True:
                self.sample()
                await asyncio.sleep(period_s)
        finally:
            for waits in self._waits.values():
                waits.close()
            if self._broker_cgroup is not None:
                self._broker_cgroup.close()

    def during(self, spans: list[tuple[int, int]]) -> dict[str, float]:
        """The CPU ns each piece used within the spans, pro rata of the samples' windows."""
        return {piece: Windows(self._per_window(series)).within(spans)
                for piece, series in self.used.items()}

    def windows(self, piece: str) -> list[list[int]]:
        """A piece's CPU per sample window: [start_ns, wall_ns, on_cpu_ns, waited_ns (its
        threads summed)]; none when its waits were not read."""
        if piece not in self.used or not self._waits[piece].available:
            return []
        waited = self.waited[piece]
        return [[*row, waited[i] - waited[i - 1]]
                for i, row in enumerate(self._per_window(self.used[piece]), start=1)]

    def used_rows(self) -> dict[str, list[list[int]]]:
        """Each piece's CPU per sample window, [start_ns, wall_ns, on_cpu_ns], and the
        host's busy CPU over all its cores (HOST_CPU): who had the CPU while a node waited."""
        series = {**self.used}
        if len(self.host) == len(self.times) and all(all_ns for all_ns, _busy, _stolen in self.host):
            series[HOST_CPU] = [busy for _all, busy, _stolen in self.host]
        return {piece: self._per_window(used) for piece, used in series.items()}

    def _per_window(self, series: list[int]) -> list[list[int]]:
        """A cumulative ns counter per sample window: [start_ns, wall_ns, gained_ns]."""
        times = self.times
        return [[times[i - 1], times[i] - times[i - 1], series[i] - series[i - 1]]
                for i in range(1, len(times))]

    def broker_cpu(self) -> BrokerCpu | None:
        """What a local broker's counters measured, window by window, for the verdict (its
        rows), its quota, whether its cgroup was read, and when its process was stopped.
        None for a broker not sampled here."""
        if self._broker_cgroup is None or not self.broker_rows:
            return None
        # each stop from midway between the last sample that saw it running and the first
        # that saw it stopped, to midway between the last stopped and the first running
        times, stopped, since = self.times, [], None
        for i, now_stopped in enumerate(self.broker_stopped):
            if now_stopped and since is None:
                since = (times[i - 1] + times[i]) // 2 if i else times[0]
            elif not now_stopped and since is not None:
                stopped.append((since, (times[i - 1] + times[i]) // 2))
                since = None
        if since is not None:
            stopped.append((since, times[-1]))
        return BrokerCpu(tuple(self.broker_rows), self.broker_quota, self._broker_cgroup_read,
                         tuple(stopped))

    def summary(self, t0_ns: int) -> CpuUse:
        """For the result JSON: each piece's CPU in all and as a share of one core, whether
        it is the system or the instrument, the host's busy share and pressure, and the
        series (ms of CPU per sample window, on the timeline's axis)."""
        if len(self.times) < 2:
            return CpuUse(False, "too few samples", not_seen=dict(self.not_seen))
        wall = self.times[-1] - self.times[0]
        pieces = {}
        for piece, series in self.used.items():
            used = series[-1] - series[0]
            waited = self.waited[piece]
            # its threads' waits for a CPU, summed: against what they ran, how much of its
            # progress waited
            waited_ms = (round((waited[-1] - waited[0]) / 1e6, 1)
                         if self._waits[piece].available and waited else None)
            pieces[piece] = PieceCpu(role_of(piece), round(used / 1e6, 1), round(used / wall, 3),
                                     role_of(piece) in INSTRUMENT_ROLES, waited_ms)
        not_seen = dict(self.not_seen)
        for piece, reported in self.reported.items():
            readings = list(reported.readings)  # its reader may still be adding to it
            if len(readings) < 2 or readings[-1][0] <= readings[0][0]:
                not_seen[piece] = (f"{not_seen.get(piece, 'not local')}; {reported.source} "
                                   f"answered {len(readings)} of its scrapes")
                continue
            (t0, ms0), (t1, ms1) = readings[0], readings[-1]
            rate = max(0.0, ms1 - ms0) * 1e6 / (t1 - t0)  # cores, over the readings' span
            not_seen.pop(piece, None)
            pieces[piece] = PieceCpu(role_of(piece), round(rate * wall / 1e6, 1), round(rate, 3),
                                     False, source=reported.source)
        (all0, busy0, stolen0), (all1, busy1, stolen1) = self.host[0], self.host[-1]
        pressure = self.pressure[-1] - self.pressure[0] if self.pressure[0] else None
        names = list(self.used)
        read = [self._waits[n].available for n in names]
        rows, waited_rows = [], []
        for i in range(1, len(self.times)):
            t_ms = round((self.times[i] - t0_ns) / 1e6, 1)
            rows.append([t_ms] + [_window_ms(self.used[n], i) for n in names])
            waited_rows.append([t_ms] + [_window_ms(self.waited[n], i) if was_read else -1
                                         for n, was_read in zip(names, read, strict=True)])
        return CpuUse(
            True, wall_s=round(wall / 1e9, 2),
            cores=len(self.cpus) if self.cpus else os.cpu_count() or 1, pieces=pieces,
            not_seen=not_seen,
            host=HostCpu(round((busy1 - busy0) / (all1 - all0), 3) if all1 > all0 else None,
                         round((stolen1 - stolen0) / 1e6, 1),
                         round(pressure / wall, 3) if pressure is not None else None),
            # waited_rows: each piece's threads' waits for a CPU (ms per window), -1: not read
            series={"columns": ["t_ms", *names], "rows": rows, "waited_rows": waited_rows})


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return ""


def _window_ms(series: list[int], i: int) -> float:
    """What a cumulative ns counter gained in sample window i, in ms."""
    return round((series[i] - series[i - 1]) / 1e6, 1)


def broker_processes(amqp_url: str) -> list[int]:
    """The broker's processes when its AMQP port is on this host (the managed one, or a
    user's local RabbitMQ): the one listening on the port, and its descendants. Empty for
    a broker elsewhere."""
    parts = urllib.parse.urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or 5672
    except ValueError:
        return []
    if host not in ("localhost", "::1") and not host.startswith("127."):
        return []
    pid = listening_pid(port)
    return process_tree(pid) if pid else []

"""How a process's event loop kept time, and why it did not when it was late.

- its lag: how late a 10 ms timer wakes up, the error bar of every stamp the loop takes;
- each stall (a wake-up 5 ms late or more) split by the thread's own counters into time
  computing, waiting for a CPU, throttled by a CPU quota, and off the CPU (a sleep, I/O,
  a lock): "blocked" and "no CPU free" read the same from process CPU share alone;
- the loop thread's CPU in 100 ms windows through the run (the same four parts), so a
  node that was starved between stalls is seen too;
- optionally, a watchdog thread that costs one short wake-up per tick while the loop
  keeps time and, while it is late, samples the loop thread's stack: the stall's evidence
  names the code that held it (`mqprobe/pieces/node.py:190 in _stall: time.sleep(...)`).
"""

from __future__ import annotations

import asyncio
import linecache
import os
import sys
import sysconfig
import threading
import time
from collections import Counter, deque
from types import FrameType

from mqprobe.cpu import Anatomy, CpuReading, ThreadCounters
from mqprobe.records import Latency
from mqprobe.stamps import now_ns
from mqprobe.timeline import STALL_MIN_NS, EventKind, Recorder

WINDOW_NS = 100_000_000  # the loop thread's CPU series: one row per this much wall time
MAX_WINDOWS = 36_000  # an hour of rows; later ones are counted, not kept (a ring: the first)
HELD_SHARE = 0.6  # of a stall's samples in one code location: that code held the loop


class LoopLagMonitor:
    """How late this process's event loop wakes up, and why.

    With a timeline recorder, every wake-up later than STALL_MIN_NS is also an interval
    (a loop stall) with its anatomy (cpu.Anatomy's four parts, and `cpu_share`, the part
    on a CPU) and, with a watchdog, the code the loop was in meanwhile."""

    # what a measurement counts (set by reset)
    _discard: bool
    lag: Latency
    worst_lag_ns: int
    worst_cpu_share: float
    windows: CpuWindows
    _cpu_before: int

    def __init__(self, interval: float = 0.01, timeline: Recorder | None = None,
                 watchdog: bool = False, counters: bool = True, ring: int = 0) -> None:
        self.interval, self.interval_ns = interval, int(interval * 1e9)
        self.ring = ring  # keep the latest this many CPU windows, not the first (0: no ring)
        self.timeline = timeline
        self.watch, self.read_counters = watchdog, counters
        self.counters: ThreadCounters | None = None
        self.source = "unavailable: not started"  # what the CPU figures rest on
        self.watchdog: Watchdog | None = None
        self._task: asyncio.Task | None = None
        self._before = 0  # when the wake-up under way began (monotonic ns; 0: not started)
        self._reading = CpuReading(0, 0, 0)  # the loop thread's counters then
        self.failed_ticks = 0
        self.reset()

    def start(self) -> None:
        """In the loop's own thread: its counters are that thread's."""
        self.counters = ThreadCounters(wanted=self.read_counters)
        self.source = self.counters.source
        if self.watch:
            self.watchdog = Watchdog(self.interval_ns + STALL_MIN_NS)
            self.watchdog.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        counters = self.counters
        assert counters is not None, "start() makes the counters"
        self._before, self._reading = time.monotonic_ns(), counters.read()
        while True:
            if self.watchdog:
                self.watchdog.beat = self._before
            if not counters.available:  # the fallback reads the process's CPU around a tick
                self._cpu_before = time.process_time_ns()
            await asyncio.sleep(self.interval)
            try:
                self._tick()
            except Exception:  # one tick lost is counted; the monitor must not end with it
                self.failed_ticks += 1

    def _tick(self) -> None:
        """The wake-up just now (or the one under way, at stop): one tick of the CPU
        series, of the lag, and a stall when it came late."""
        counters = self.counters
        assert counters is not None, "start() makes the counters"
        after, now_reading = time.monotonic_ns(), counters.read()
        took = after - self._before
        tick = Anatomy.between(self._reading, now_reading, took)
        self._before, self._reading = after, now_reading
        if self._discard:  # began before a reset: set-up's, not the measurement's
            self._discard = False
            return
        self.windows.add(tick)
        interval_ns = self.interval_ns
        lag = max(0, took - interval_ns)
        self.lag.record(lag)
        if lag > self.worst_lag_ns or (lag >= STALL_MIN_NS and self.timeline):
            stall = tick.minus_sleep(interval_ns) if counters.available else None
            # without the counters: the CPU share through the tick tells blocked (near
            # 0) from computing (near 1), and no more
            cpu_share = min(1.0, tick.on_cpu_ns / took) if counters.available else \
                self._process_share(took)
            if lag > self.worst_lag_ns:
                self.worst_lag_ns, self.worst_cpu_share = lag, cpu_share
            if lag >= STALL_MIN_NS and self.timeline:
                end = now_ns()
                detail: dict = {"cpu_share": round(cpu_share, 2)}
                if stall is not None:
                    detail.update(stall.to_detail())
                if self.watchdog:
                    detail.update(self.watchdog.held(after - took, after))
                self.timeline.add(EventKind.LOOP_STALL, end - lag, end, **detail)

    def _process_share(self, took: int) -> float:
        return min(1.0, max(0, time.process_time_ns() - self._cpu_before) / max(1, took))

    def reset(self) -> None:
        """Start counting afresh (the set-up phase is not part of a measurement); the sleep
        under way began in set-up (a reset may itself block the loop) and is not counted."""
        self._discard = True
        self.lag = Latency()
        self.worst_lag_ns = 0
        self.worst_cpu_share = 0.0
        self.windows = CpuWindows(self.ring)
        self._cpu_before = time.process_time_ns()

    def worst(self) -> dict:
        """The longest time the loop could not run, and the CPU share the process used then."""
        return {"lag_ms": round(self.worst_lag_ns / 1e6, 3),
                "cpu_share": round(self.worst_cpu_share, 2)}

    def cpu(self) -> dict:
        """The loop thread's CPU through the run, for a node's result (loop_cpu), and the
        ticks the monitor lost to an error of its own (failed_ticks), if any."""
        out = self.windows.to_json(self.source)
        if self.failed_ticks:
            out["failed_ticks"] = self.failed_ticks
        return out

    def stop(self) -> None:
        if self._task and not self._task.done():
            if self._before:
                # the wake-up under way is part of the run: a loop held until it stopped (a
                # throttled node that never caught up) is a stall, never nothing; an error in
                # it is a lost tick, as in _run, never a lost result
                try:
                    self._tick()
                except Exception:
                    self.failed_ticks += 1
            self._task.cancel()
        if self.watchdog:
            self.watchdog.stop()
            self.watchdog = None
        if self.counters:
            self.counters.close()


class CpuWindows:
    """The loop thread's wall time in windows of WINDOW_NS, each split into its parts:
    rows of [start_ns (CLOCK_REALTIME), wall_ns, on_cpu_ns, waiting_ns, throttled_ns]."""

    def __init__(self, ring: int = 0) -> None:
        """With `ring`, the latest that many windows (a server's hour, a watch's minutes)."""
        self.ring = ring
        self.rows: list[list[int]] | deque[list[int]] = deque(maxlen=ring) if ring else []
        self.dropped = 0
        self.totals = [0, 0, 0, 0]  # wall, on, waiting, throttled: every tick, kept or not
        self._open: list[int] | None = None

    def add(self, tick: Anatomy) -> None:
        self.totals[0] += tick.wall_ns
        self.totals[1] += tick.on_cpu_ns
        self.totals[2] += tick.waiting_ns
        self.totals[3] += tick.throttled_ns
        row = self._open
        if row is None:
            row = self._open = [now_ns() - tick.wall_ns, 0, 0, 0, 0]
        row[1] += tick.wall_ns
        row[2] += tick.on_cpu_ns
        row[3] += tick.waiting_ns
        row[4] += tick.throttled_ns
        if row[1] >= WINDOW_NS:
            self._close()

    def _close(self) -> None:
        if self._open is None:
            return
        if self.ring:
            self.dropped += len(self.rows) >= self.ring
            self.rows.append(self._open)
        elif len(self.rows) < MAX_WINDOWS:
            self.rows.append(self._open)
        else:
            self.dropped += 1
        self._open = None

    def so_far(self) -> list[list[int]]:
        """The windows so far, the open one too, without closing it (a server asked for its
        intervals every few seconds keeps whole windows)."""
        return [*self.rows, *([list(self._open)] if self._open else [])]

    def to_json(self, source: str) -> dict:
        self._close()
        wall, on, waiting, throttled = self.totals
        share = (lambda ns: round(ns / wall, 4)) if wall else (lambda ns: 0.0)
        return {"source": source, "columns": ["start_ns", "wall_ns", "on_cpu_ns", "waiting_ns",
                                              "throttled_ns"],
                "rows": list(self.rows), "dropped": self.dropped,
                "on_cpu": share(on), "waiting": share(waiting), "throttled": share(throttled)}


# -- the watchdog ----------------------------------------------------------------------------
def join_sampler(thread: threading.Thread, timeout_s: float = 2.0) -> None:
    """Wait for a sampling thread told to stop (it ends within one sample's work): nothing
    of ours walks the loop thread's frames once its owner goes on to tear the loop down."""
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout_s)


STDLIB = tuple(p for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_CALLBACK = ("events.py", "_run")  # asyncio's Handle._run: the loop runs a callback from here
_LOOP = ("base_events.py", "_run_once")  # the loop's own iteration: select, then callbacks
IN_THE_LOOP = "the event loop itself (select, timers)"


class Watchdog(threading.Thread):
    """A thread that looks at the loop's last beat every `poll_s` (or when it is due);
    while the loop is late, it samples, every `every_s`, the loop thread's innermost frame
    outside asyncio and the standard library (sys._current_frames), its state (R running
    or runnable, S sleeping, D uninterruptible) and its time on a CPU so far; it keeps the
    last `keep` samples.

    A sample is evidence that code held the loop when the thread was blocked in it (S, D)
    or ran in it since the sample before. A thread that waits for a CPU, or is throttled,
    stays where it was stopped: the same frame, again and again, with no progress.

    Each sample also says which callback the loop ran (a number, 0 for none): the same
    place in different callbacks is a loop busy with many, not held by one. On a crowded
    core a thread is preempted where it wakes another, in a socket write to a local peer:
    one write after another, every sample there, each after some progress."""

    def __init__(self, late_ns: int, every_s: float = 0.005, keep: int = 4096,
                 poll_s: float = 0.025) -> None:
        super().__init__(name="mqprobe-watchdog", daemon=True)
        self.poll_s = poll_s  # how often it looks while the loop keeps time
        self.loop_thread = threading.get_ident()
        self.loop_native = threading.get_native_id()
        self.late_ns, self.every_s = late_ns, every_s
        self.beat = time.monotonic_ns()
        # (monotonic ns, code location, thread state, the thread's CPU ns, callback number)
        self.samples: deque[tuple[int, str, str, int, int]] = deque(maxlen=keep)
        self._runner: FrameType | None = None  # asyncio's frame running the last callback seen
        self._callbacks = 0  # callbacks seen while late: a number names each in its samples
        self._stopped = threading.Event()
        try:
            self._schedstat: int | None = os.open(
                f"/proc/self/task/{self.loop_native}/schedstat", os.O_RDONLY)
        except OSError:
            self._schedstat = None

    def run(self) -> None:
        while not self._stopped.is_set():
            due = self.beat + self.late_ns
            now = time.monotonic_ns()
            if now < due:  # in time: look again later (every wake-up costs the host)
                self._runner = None  # the callback's frame keeps its locals alive
                self._stopped.wait(max((due - now) / 1e9, self.poll_s))
                continue
            frame = sys._current_frames().get(self.loop_thread)
            inside: list[FrameType] = []
            runner: FrameType | None = None
            try:
                inside, runner = callback_frames(frame)
                where = location(inside) if runner is not None else IN_THE_LOOP
            except Exception:  # a frame caught mid-change: this sample only, never the thread
                where, runner = IN_THE_LOOP, None  # (never evidence)
            if runner is not None and runner is not self._runner:
                # held, so never freed and reused: `is` tells this callback from the last
                self._runner, self._callbacks = runner, self._callbacks + 1
            self.samples.append((now, where, thread_state(self.loop_native), self._loop_on_cpu(),
                                 self._callbacks if runner is not None else 0))
            del frame, inside, runner
            self._stopped.wait(self.every_s)

    def _loop_on_cpu(self) -> int:
        """The loop thread's time on a CPU so far (ns); -1 where it cannot be read."""
        if self._schedstat is None:
            return -1
        try:
            return int(os.pread(self._schedstat, 64, 0).split()[0])
        except (OSError, ValueError, IndexError):
            return -1

    def stop(self) -> None:
        """Stop sampling and wait for the thread to end: it reads the loop thread's frames and
        a descriptor, neither of which may change under it (a loop tearing down its tasks; a
        closed descriptor's number reused by the next open)."""
        self._stopped.set()
        join_sampler(self)
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None

    def held(self, start_mono: int, end_mono: int) -> dict:
        """What the samples between two monotonic times say, for a stall's detail: the code
        the loop was held in (`held_by`: one callback, and one function in it, in HELD_SHARE
        of the samples that show the thread blocked or running there, at least two), else
        where it was seen most (`in`); how many samples, how many were evidence, in how many
        callbacks, and the states seen."""
        previous = -1
        taken, evidence = [], []
        # a copy, made at once (no Python code runs in it): the watchdog may be appending
        for t, where, state, on_cpu, callback in tuple(self.samples):
            if t > end_mono:
                break
            if t >= start_mono:
                taken.append((where, state))
                ran = on_cpu < 0 or (previous >= 0 and on_cpu > previous)
                if where != IN_THE_LOOP and (state in ("S", "D") or ran):
                    evidence.append((callback, _function_of(where), where))
            previous = on_cpu
        if not taken:
            return {}
        out = {"samples": len(taken), "evidence": len(evidence),
               "callbacks": len({callback for callback, _f, _w in evidence}),
               "states": dict(Counter(state for _where, state in taken))}
        if len(evidence) >= 2:
            (callback, function), seen = Counter(e[:2] for e in evidence).most_common(1)[0]
            if seen >= HELD_SHARE * len(evidence):
                out["held_by"] = Counter(w for c, f, w in evidence
                                         if (c, f) == (callback, function)).most_common(1)[0][0]
                return out
        out["in"] = Counter(where for where, _state in taken).most_common(1)[0][0]
        return out


def _function_of(where: str) -> str:
    """`mqprobe/pieces/node.py in _stall` from `mqprobe/pieces/node.py:194 in _stall: ...`."""
    path, _, rest = where.partition(":")
    return f"{path} {rest.split(':', 1)[0].split(' ', 1)[-1]}"


def code_location(frame: FrameType | None) -> str:
    """The innermost frame of the callback the loop is running that is outside asyncio
    and the standard library, as `path:line in function: source`; IN_THE_LOOP when the
    loop runs no callback (it waits in select, or runs its timers)."""
    inside, runner = callback_frames(frame)
    return location(inside) if runner is not None else IN_THE_LOOP


def callback_frames(frame: FrameType | None) -> tuple[list[FrameType], FrameType | None]:
    """From a thread's innermost frame: the frames of the callback its event loop runs,
    innermost first, and asyncio's frame that runs it (Handle._run); ([], None) when the
    loop runs no callback."""
    inside: list[FrameType] = []
    while frame is not None:
        code = frame.f_code
        where = (os.path.basename(code.co_filename), code.co_name)
        if where == _CALLBACK:
            return (inside, frame) if inside else ([], None)
        if where == _LOOP:  # reached the loop's iteration without a callback: its own work
            return [], None
        inside.append(frame)
        frame = frame.f_back
    return [], None  # not inside an event loop's callback


def location(inside: list[FrameType]) -> str:
    """The innermost of a callback's frames outside the standard library (else its
    innermost), as `path:line in function: source`."""
    chosen = next((f for f in inside if not f.f_code.co_filename.startswith(STDLIB)), inside[0])
    code = chosen.f_code
    # another thread's frame, read while it runs, may be between two lines (f_lineno None)
    line = chosen.f_lineno
    source = linecache.getline(code.co_filename, line).strip() if line else ""
    return f"{short_path(code.co_filename)}:{line or '?'} in {code.co_name}" + (
        f": {source[:80]}" if source else "")


def short_path(path: str) -> str:
    """From the package down (mqprobe/pieces/node.py, socketio/async_server.py)."""
    parts = path.split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1:])
    if "mqprobe" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("mqprobe"):])
    return "/".join(parts[-2:])


def thread_state(native_id: int) -> str:
    """A thread's scheduler state letter (R, S, D...), or '?' where it cannot be read."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as file:
            text = file.read()
        return text[text.rindex(b")") + 2:text.rindex(b")") + 3].decode()
    except (OSError, ValueError):
        return "?"


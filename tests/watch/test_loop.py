"""The loop monitor on a real event loop in this process: a planted sleep and a planted
spin are each one stall, split into their parts, naming the line that held the loop."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from mqprobe.model import Cause
from mqprobe.timeline import EventKind, Recorder
from mqprobe.verdict.attribution import stall_cause
from mqprobe.watch.loop import IN_THE_LOOP, CpuWindows, LoopLagMonitor, code_location

MS = 1_000_000


def _sleep_in_the_loop() -> None:
    time.sleep(0.12)


def _spin_in_the_loop() -> None:
    until = time.perf_counter() + 0.12
    while time.perf_counter() < until:
        pass


async def _watched(hold, watchdog: bool = True) -> tuple[list, LoopLagMonitor]:
    """The long stalls a monitor recorded around `hold()` (and the callbacks it schedules),
    and the monitor (stopped)."""
    timeline = Recorder("n1")
    monitor = LoopLagMonitor(timeline=timeline, watchdog=watchdog)
    monitor.start()
    await asyncio.sleep(0.05)
    monitor.reset()
    await asyncio.sleep(0.05)
    hold()
    await asyncio.sleep(0.05)
    monitor.stop()
    return [e for e in timeline.events
            if e.kind == EventKind.LOOP_STALL and e.duration_ns > 80 * MS], monitor


async def _stall_with(hold) -> list:
    stalls, monitor = await _watched(hold)
    if monitor.source.startswith("unavailable"):
        pytest.skip(monitor.source)
    return stalls


@pytest.mark.parametrize(("hold", "line", "part"), [
    (_sleep_in_the_loop, "time.sleep(0.12)", "off_cpu_ms"),
    (_spin_in_the_loop, "while time.perf_counter() < until", "on_cpu_ms")])
def test_a_planted_stall_is_split_and_names_its_code(hold, line, part):
    # the watchdog must have been able to look: a hypervisor that stops this VM (steal),
    # or a crowded host, can keep its thread from running through most of a 120 ms stall
    # (seen once in a fresh-clone CI: no held_by). Such a run says nothing; up to 3 tries.
    for _attempt in range(3):
        (stall,) = asyncio.run(_stall_with(hold))
        detail = stall.detail
        if detail.get("samples", 0) >= 3:
            break
    assert detail.get("samples", 0) >= 3, detail
    assert "watch/test_loop.py" in detail.get("held_by", ""), detail
    assert line in detail["held_by"], detail
    # a busy machine may keep a spin waiting for a CPU part of the time: its own time
    # (computing) and its wait add up to the stall, and it is still the code's
    own = detail[part] + (detail["waiting_ms"] if part == "on_cpu_ms" else 0)
    assert own >= 90, detail
    assert stall_cause(detail) == Cause.SERVER_STALL


def test_a_loop_waiting_in_select_is_the_loop_itself():
    async def frames() -> tuple[str, str]:
        here = code_location(sys._getframe())
        loop_thread = __import__("threading").get_ident()
        await asyncio.sleep(0)
        return here, loop_thread

    here, _ = asyncio.run(frames())
    assert "watch/test_loop.py" in here and "in frames" in here
    assert code_location(None) == IN_THE_LOOP


def test_cpu_windows_close_every_100_ms_and_keep_every_tick_in_the_totals():
    from mqprobe.cpu import Anatomy

    windows = CpuWindows()
    for _ in range(25):  # 25 ticks of 10 ms: two whole windows and an open one
        windows.add(Anatomy(10 * MS, 3 * MS, 1 * MS, 0, 6 * MS))
    data = windows.to_json("schedstat")
    assert [row[1] for row in data["rows"]] == [100 * MS, 100 * MS, 50 * MS]
    assert (data["on_cpu"], data["waiting"], data["throttled"]) == (0.3, 0.1, 0.0)


def test_only_samples_of_a_thread_blocked_or_running_in_the_code_are_evidence():
    """A thread stopped by a quota stays in the frame it was stopped in, making no
    progress: the same place again and again is not evidence that the code held the loop."""
    from mqprobe.watch.loop import Watchdog

    watchdog = Watchdog(late_ns=15 * MS)
    write = "asyncio/selector_events.py:1057 in write: n = self._sock.send(data)"
    spin = "mqprobe/pieces/node.py:192 in _stall: pass"
    watchdog.samples.extend([(t * MS, write, "R", 5 * MS, 1) for t in range(10, 50, 5)])
    stopped = watchdog.held(10 * MS, 50 * MS)
    assert "held_by" not in stopped and stopped["in"] == write and stopped["evidence"] == 0
    watchdog.samples.clear()  # the same place, the thread running between samples
    watchdog.samples.extend([(t * MS, spin, "R", t * MS, 1) for t in range(10, 50, 5)])
    running = watchdog.held(10 * MS, 50 * MS)
    assert running["held_by"] == spin and running["evidence"] == 7  # the first has no before
    watchdog.samples.clear()  # blocked in a sleep: no CPU progress, but state S
    watchdog.samples.extend([(t * MS, spin, "S", 0, 1) for t in range(10, 50, 5)])
    assert watchdog.held(10 * MS, 50 * MS)["held_by"] == spin
    watchdog.stop()


def test_the_same_place_in_one_callback_after_another_is_a_busy_loop_not_one_held():
    """The one-core miss of 041a44a's matrix: a clean per-group node's 129 ms stall (19 ms
    computing, 120 ms waiting for a CPU) read "held in selector_events.py in write:
    self._sock.send(data)", all of it the code's. A thread on a crowded core is preempted
    where it wakes its peer, in each socket write: every sample there, each after progress,
    in a different callback each time."""
    from mqprobe.watch.loop import Watchdog

    watchdog = Watchdog(late_ns=15 * MS)
    write = "asyncio/selector_events.py:1057 in write: n = self._sock.send(data)"
    watchdog.samples.extend([(t * MS, write, "R", t * MS, t) for t in range(10, 50, 5)])
    busy = watchdog.held(10 * MS, 50 * MS)
    assert "held_by" not in busy and busy["in"] == write, busy
    assert (busy["evidence"], busy["callbacks"]) == (7, 7)
    watchdog.samples.clear()  # one callback writing through the stall holds the loop
    watchdog.samples.extend([(t * MS, write, "R", t * MS, 3) for t in range(10, 50, 5)])
    assert watchdog.held(10 * MS, 50 * MS)["held_by"] == write
    watchdog.stop()


def _one_write(until_ns: int) -> None:
    while time.perf_counter_ns() < until_ns:
        pass


def test_a_loop_busy_with_many_short_callbacks_names_no_one_of_them():
    """On a real loop: 100 callbacks of 3 ms, each in the same function, keep the loop from
    its timer for about 300 ms. No one of them held it: the watchdog saw many callbacks
    (it samples one in 20-40 ms here: the loop thread holds the GIL), and the stall is the
    loop's work, split by its parts, not a held_by."""
    def many_short() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            loop.call_soon(lambda: _one_write(time.perf_counter_ns() + 3 * MS))

    (stall,) = asyncio.run(_stall_with(many_short))
    assert "held_by" not in stall.detail, stall.detail
    assert stall.detail["callbacks"] >= 3 and "in _one_write" in stall.detail["in"], str(
        stall.detail)


def test_without_the_threads_counters_a_stall_falls_back_to_the_cpu_share_and_says_why(
        monkeypatch):
    import mqprobe.cpu

    monkeypatch.setattr(mqprobe.cpu, "_open", lambda path: None)  # as on another OS

    (stall,), monitor = asyncio.run(_watched(_spin_in_the_loop, watchdog=False))
    cpu = monitor.cpu()
    assert "on_cpu_ms" not in stall.detail and stall.detail["cpu_share"] > 0.5
    assert stall_cause(stall.detail) == Cause.SERVER_STALL
    assert cpu["source"].startswith("unavailable: /proc/thread-self/schedstat")


def test_a_loop_held_until_the_monitor_stops_is_a_stall_not_nothing():
    """A throttled node that never caught up: its last wake-up came only at stop. That
    tick is part of the run (it was lost, and the node read 2 s of its CPU out of 13)."""
    async def held_to_the_end() -> tuple[list, LoopLagMonitor]:
        timeline = Recorder("n1")
        monitor = LoopLagMonitor(timeline=timeline)
        monitor.start()
        await asyncio.sleep(0.05)
        monitor.reset()
        await asyncio.sleep(0.05)
        _sleep_in_the_loop()  # 120 ms, and the monitor is stopped before it wakes up
        monitor.stop()
        return [e for e in timeline.events if e.kind == EventKind.LOOP_STALL], monitor

    stalls, monitor = asyncio.run(held_to_the_end())
    (stall,) = stalls  # its 120 ms, less the 10 ms the monitor's tick sleeps anyway
    assert 100 * MS <= stall.duration_ns <= 150 * MS, stall
    assert stall.detail["off_cpu_ms"] >= 90, stall
    cpu = monitor.cpu()
    assert sum(row[1] for row in cpu["rows"]) >= 150 * MS  # the held tick is in the series


def test_an_error_in_the_tick_at_stop_is_a_lost_tick_not_a_lost_result(monkeypatch):
    """The tick under way at stop runs outside the monitor's loop: an error in it (a node
    that gave no result at stop, twice in a 210-run matrix) is counted like one in the
    loop, and stop goes on."""
    async def stopped_mid_tick() -> LoopLagMonitor:
        monitor = LoopLagMonitor(timeline=Recorder("n1"))
        monitor.start()
        await asyncio.sleep(0.05)

        def broken() -> None:
            raise IndexError("a sample read as it changed")

        monitor._tick = broken
        monitor.stop()
        return monitor

    monitor = asyncio.run(stopped_mid_tick())
    assert monitor.failed_ticks == 1 and monitor.cpu()["failed_ticks"] == 1


def test_a_frame_between_two_lines_is_named_without_its_line_and_the_watchdog_goes_on():
    """Another thread's frame, read while it runs, may have no line number (f_lineno None
    in Python 3.11). That killed the watchdog thread in 11 of 35 nodes' logs of one suite
    run: every later stall of that node had no code named, and a spin read cpu-starved."""
    import asyncio.events
    from types import SimpleNamespace

    def frame(function: str, filename: str, lineno: int | None, back=None):
        return SimpleNamespace(f_code=SimpleNamespace(co_name=function, co_filename=filename),
                               f_lineno=lineno, f_back=back)

    callback = frame("_run", asyncio.events.__file__, 88)
    spinning = frame("_stall", "/work/main/mqprobe/pieces/node.py", None, back=callback)
    assert code_location(spinning) == "mqprobe/pieces/node.py:? in _stall"


def test_the_samples_are_read_while_the_watchdog_adds_to_them():
    """The watchdog samples while the loop is late, and the loop reads the samples as soon
    as it wakes: iterating the deque itself then raised "deque mutated during iteration"
    inside the loop monitor's tick, which ended the monitor. Beside a CPU hog one node of
    five planted stalls recorded no stall, no lag and no CPU at all, and its planted stall
    read consumer-saturated."""
    import threading

    from mqprobe.watch.loop import Watchdog

    watchdog = Watchdog(late_ns=10**9)
    watchdog.samples.extend((t, IN_THE_LOOP, "R", t, 0) for t in range(4096))
    done = threading.Event()

    def sampling() -> None:
        t = 4096
        while not done.is_set():
            watchdog.samples.append((t, "mqprobe/pieces/node.py:1 in _stall", "R", t, 1))
            t += 1

    thread = threading.Thread(target=sampling)
    thread.start()
    try:
        for _ in range(300):
            watchdog.held(0, 2**62)
    finally:
        done.set()
        thread.join()
        watchdog.stop()

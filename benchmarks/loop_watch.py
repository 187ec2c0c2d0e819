"""What watching a loop costs the process it watches: the loop monitor with Linux's
counters, and the watchdog thread that samples the loop's stack while it is late.

    .venv/bin/python benchmarks/loop_watch.py [--seconds 10]

1. An idle loop for N s: the process's CPU per second with no monitor, the monitor as it
   was (process CPU share only), with the thread's counters, and with the watchdog too.
2. One stack sample as the watchdog takes it while the loop is late (sys._current_frames,
   the code location, the thread's state), in us, and one counter reading.
3. A busy loop (short callbacks back to back, 2 s): callbacks run per second with and
   without the watchdog beside it, and through a planted 200 ms spin, how many samples it
   took and what the spin cost in extra wall time.

Each variant runs in a fresh process, one after the other; prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from statistics import median

VARIANTS = ("none", "share-only", "counters", "counters+watchdog")


def idle(variant: str, seconds: float) -> dict:
    from mqprobe.timeline import Recorder
    from mqprobe.watch.loop import LoopLagMonitor

    async def run() -> dict:
        monitor = None
        if variant != "none":
            monitor = LoopLagMonitor(timeline=Recorder("n1"), watchdog=variant.endswith("watchdog"))
            monitor.start()
            if variant == "share-only":  # the monitor as it was: no thread counters
                monitor.counters.close()
        await asyncio.sleep(0.5)
        cpu0, t0 = time.process_time_ns(), time.monotonic_ns()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time_ns() - cpu0, time.monotonic_ns() - t0
        if monitor:
            monitor.stop()
        return {"cpu_ms_per_s": round(cpu / wall * 1000, 3)}

    return asyncio.run(run())


def sample_cost() -> dict:
    from mqprobe.cpu import ThreadCounters
    from mqprobe.watch.loop import code_location, thread_state

    counters = ThreadCounters()
    native, ident = threading.get_native_id(), threading.get_ident()
    n = 20_000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        counters.read()
    reading = (time.perf_counter_ns() - t0) / n / 1000
    n = 5_000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        frame = sys._current_frames().get(ident)
        code_location(frame)
        thread_state(native)
        del frame
    sample = (time.perf_counter_ns() - t0) / n / 1000
    return {"reading_us": round(reading, 2), "sample_us": round(sample, 2)}


def busy(watchdog: bool) -> dict:
    from mqprobe.timeline import EventKind, Recorder
    from mqprobe.watch.loop import LoopLagMonitor

    async def run() -> dict:
        timeline = Recorder("n1")
        monitor = LoopLagMonitor(timeline=timeline, watchdog=watchdog)
        monitor.start()
        loop = asyncio.get_running_loop()
        count = 0
        done = loop.create_future()
        until = time.monotonic() + 2.0

        def tick() -> None:
            nonlocal count
            count += 1
            x = 0
            for i in range(200):  # a few us of work, like a short handler
                x += i
            if time.monotonic() < until:
                loop.call_soon(tick)
            elif not done.done():
                done.set_result(None)

        for _ in range(4):
            loop.call_soon(tick)
        await done
        per_s = count / 2.0
        t0 = time.perf_counter()
        spin_until = t0 + 0.2
        while time.perf_counter() < spin_until:
            pass
        spun_ms = (time.perf_counter() - t0) * 1000
        await asyncio.sleep(0.05)
        monitor.stop()
        stalls = [e for e in timeline.events if e.kind == EventKind.LOOP_STALL
                  and e.duration_ns > 150_000_000]
        samples = stalls[-1].detail.get("samples", 0) if stalls else 0
        return {"callbacks_per_s": round(per_s), "spin_ms": round(spun_ms, 2), "samples": samples}

    return asyncio.run(run())


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="variants interleaved, N times")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        result = {"idle": lambda: idle(rest[0], float(rest[1])), "sample": sample_cost,
                  "busy": lambda: busy(rest[0] == "1")}[kind]()
        print(json.dumps(result))
        return
    idle_runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    busy_runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.rounds):  # interleaved: the machine's drift falls on every variant
        for variant in VARIANTS:
            idle_runs[variant].append(child(["idle", variant, str(args.seconds)])["cpu_ms_per_s"])
        for watchdog in (False, True):
            busy_runs[watchdog].append(child(["busy", "1" if watchdog else "0"]))
    print(f"\n| idle loop, {args.seconds:g} s, {args.rounds} rounds | CPU ms per s, median "
          "(range) |\n| --- | --- |")
    for variant, runs in idle_runs.items():
        print(f"| {variant} | {median(runs):.1f} ({min(runs):.1f}-{max(runs):.1f}) |")
    cost = child(["sample"])
    print(f"\nOne counter reading (two preads): {cost['reading_us']} us; one stack sample "
          f"(frames, code location, thread state): {cost['sample_us']} us.")
    print("\n| busy loop | callbacks/s, median (range) | 200 ms spin took (ms) | samples in it |\n"
          "| --- | --- | --- | --- |")
    for watchdog, runs in busy_runs.items():
        rate = [r["callbacks_per_s"] for r in runs]
        print(f"| {'with' if watchdog else 'without'} the watchdog | {median(rate):.0f} "
              f"({min(rate)}-{max(rate)}) | {median(r['spin_ms'] for r in runs):.1f} | "
              f"{', '.join(str(r['samples']) for r in runs)} |")


if __name__ == "__main__":
    main()

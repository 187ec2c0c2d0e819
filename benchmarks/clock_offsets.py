"""How well mqprobe measures another host's clock over the broker, against a known answer.

One machine plays two hosts: an agent runs with MQPROBE_CLOCK_SKEW_MS=S, so its clock is
exactly S ms ahead. The coordinator's hub measures it (8 NTP-style exchanges over the
broker per estimate, the shortest round trip kept) ROUNDS times per skew, and the table
shows the estimate's error against S next to the uncertainty it claimed.

    .venv/bin/python benchmarks/clock_offsets.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys

from mqprobe.broker import broker_for
from mqprobe.pieces.agent import Hub


async def measure(url: str, skew_ms: float, rounds: int) -> dict:
    env = dict(os.environ, MQPROBE_CLOCK_SKEW_MS=str(skew_ms))
    agent = subprocess.Popen([sys.executable, "-m", "mqprobe", "agent", "--name", "bench",
                              "--amqp-url", url], env=env, stderr=subprocess.PIPE, text=True)
    try:
        agent.stderr.readline()  # ready
        hub = Hub(url)
        await hub.open()
        try:
            await hub.hello("bench")
            estimates = [await hub.clock("bench") for _ in range(rounds)]
        finally:
            await hub.close()
    finally:
        agent.terminate()  # ours, by pid
        agent.wait(30)
    errors = [abs(e.offset_ns / 1e6 - skew_ms) for e in estimates]
    bars = [e.uncertainty_ns / 1e6 for e in estimates]
    return {"skew_ms": skew_ms, "rounds": rounds,
            "error_median_ms": statistics.median(errors), "error_max_ms": max(errors),
            "uncertainty_median_ms": statistics.median(bars), "uncertainty_max_ms": max(bars),
            "within_bar": sum(err <= bar for err, bar in zip(errors, bars, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skews", default="-1000,-250,40,250,3000", help="ms, comma-separated")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--amqp-url")
    args = parser.parse_args()
    skews = [float(s) for s in args.skews.split(",")]
    with broker_for(args.amqp_url) as (url, _):
        rows = [asyncio.run(measure(url, skew, args.rounds)) for skew in skews]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| true offset (ms) | estimates | error median / max (ms) | "
          "claimed ± median / max (ms) | error within ± |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['skew_ms']:+g} | {r['rounds']} | {r['error_median_ms']:.3f} / "
              f"{r['error_max_ms']:.3f} | {r['uncertainty_median_ms']:.3f} / "
              f"{r['uncertainty_max_ms']:.3f} | {r['within_bar']}/{r['rounds']} |")


if __name__ == "__main__":
    main()

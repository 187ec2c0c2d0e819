"""Where a server's CPU goes with many quiet connections: the seed's question 2 ("the
server's CPU came in waves at 27,000 connections; heartbeat checks suspected").

Runs compare at CLIENTS connections in quiet groups (100 members each, one message every
50 s a group) for SECONDS, on mqprobe's single-topic nodes and on python-socketio's own
AsyncAioPikaManager, and reads from each run's result: the nodes' CPU each second (the
waves: when each began and how high), and the CPU of the waves above the seconds between
them: what the pings cost, per 1,000 connections per ping interval; beside it, the same
from each node's loop profiler (its heartbeats: the pings it wrote, told from messages by
the packet in the socket writer's hands, the pongs it read, engine.io's liveness walk),
and the share of the tail the verdict charged to them.

    .venv/bin/python benchmarks/idle_connections.py [--clients 27000] [--seconds 60]
        [--ping-interval 25] [--png DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def run(topology: str, clients: int, seconds: float, ping_s: float, png: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        flags = ["--png", f"{png}/{topology}"] if png else []
        subprocess.run([sys.executable, "-m", "mqprobe", "compare", "--topologies", topology,
                        "--layouts", "per-node", "--groups", str(clients // 100),
                        "--group-size", "100", "--rate", "0.02", "--duration", str(seconds),
                        "--ping-interval", str(ping_s), "--ping-timeout", "20",
                        "--json", str(out), *flags],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return json.loads(out.read_text())["runs"][0]


def weigh(result: dict, ping_s: float) -> dict:
    cpu = result["cpu"]
    columns, rows = cpu["series"]["columns"], cpu["series"]["rows"]
    nodes = [n["node"] for n in result["nodes"]]
    per_second: dict[int, float] = defaultdict(float)
    for row in rows:
        per_second[int(row[0] // 1000)] += sum(row[columns.index(n)] for n in nodes)
    seconds = [per_second[k] for k in sorted(per_second)][1:-1]  # whole seconds only
    base = statistics.median(seconds)
    peaks = [i for i, v in enumerate(seconds) if v > 2 * base]
    starts = [p for p in peaks if p - 1 not in peaks]
    node_ms = sum(cpu["pieces"][n]["cpu_ms"] for n in nodes)
    connected = sum(n["connections"]["rows"][-1][2] for n in result["nodes"])
    excess = sum(max(0.0, v - base) for v in seconds)  # ms of CPU in the waves, above base
    return {"connected": connected, "node_cores": node_ms / 1000 / cpu["wall_s"],
            "base_ms_s": base, "peak_ms_s": max(seconds), "wave_starts_s": starts,
            "wave_share": excess / max(1.0, sum(seconds)),
            "wave_ms_per_1k": excess / max(1, len(starts)) / (connected / 1000),
            "kinds": result["nodes"][0]["profile"]["kinds"],
            # the profiler's own count of the same: each node's loop time on its pings and
            # pongs, per 1,000 connections a ping interval
            "profiled_per_1k": [n["heartbeats"]["per_1k_ms"] for n in result["nodes"]
                                if n.get("heartbeats")],
            "heartbeats_share": next((s["share"] for s in result["attribution"]["shares"]
                                      if s["cause"] == "heartbeats"), 0.0)
            if result.get("attribution") else 0.0,
            "verdict": f"{result['verdict']['culprit']}: {result['verdict']['cause'][:60]}",
            "hint": next((line for line in result["verdict"]["evidence"]
                          if "socket.io ping interval" in line), "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=27_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ping-interval", type=float, default=25)
    parser.add_argument("--png", default="")
    args = parser.parse_args()
    print(f"{args.clients} clients in groups of 100, one message every 50 s a group, "
          f"{args.seconds:g} s, ping every {args.ping_interval:g} s; {platform.node()}, "
          f"{os.cpu_count()} cores\n")
    print("| nodes | connected | nodes' CPU (cores) | CPU a second, median / highest (ms) "
          "| waves began at (s) | the nodes' CPU in the waves, above the rest | a wave's CPU "
          "per 1,000 connections | the profiler's heartbeats per 1,000 connections a ping "
          "interval, each node | heartbeats' share of the tail |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for topology in ("single-topic", "socketio-manager"):
        w = weigh(run(topology, args.clients, args.seconds, args.ping_interval, args.png),
                  args.ping_interval)
        print(f"| {topology} | {w['connected']} | {w['node_cores']:.2f} | "
              f"{w['base_ms_s']:.0f} / {w['peak_ms_s']:.0f} | {w['wave_starts_s']} | "
              f"{w['wave_share']:.0%} | {w['wave_ms_per_1k']:.1f} ms | "
              f"{', '.join(f'{v:.1f}' for v in w['profiled_per_1k'])} ms | "
              f"{w['heartbeats_share']:.0%} |")
        print(f"<!-- {topology} kinds: {w['kinds']} -->")
        print(f"<!-- {topology} verdict: {w['verdict']}; {w['hint'] or 'no ping hint'} -->")


if __name__ == "__main__":
    main()

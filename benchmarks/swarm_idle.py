"""What an idle connection costs one swarm process, and how many one process holds.

The servers are the official Node socket.io 4 (tests/servers/socketio4.js, installed by
`./dev test`): they hold connections cheaply, so the figure is the swarm's alone. This
process is the swarm: it measures its RSS with no connection (baseline), opens CLIENTS
connections in groups of 100, holds them idle for HOLD seconds (past the servers' 25 s ping
interval, so pings are answered), then sends one message to every group to show that the
connections still deliver.

    .venv/bin/python benchmarks/swarm_idle.py --clients 18000 --servers 2 --hold 30
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import time
import urllib.request

from node_servers import socketio4_servers  # benchmarks/, beside this script

from mqprobe.pieces.swarm import Swarm, SwarmConfig, rss_bytes
from mqprobe.protocol import Reset


async def measure(urls: list[str], clients: int, hold_s: float) -> dict:
    groups = {str(g + 1): 100 for g in range(clients // 100)}
    swarm = Swarm(SwarmConfig(node_urls=urls, group_sizes=groups, connect_timeout_s=600))
    gc.collect()
    baseline = rss_bytes()
    started = time.monotonic()
    await swarm.start()
    connect_s = time.monotonic() - started
    joined = swarm.progress()["joined"]
    swarm.command(Reset())
    await asyncio.sleep(hold_s)
    gc.collect()
    held = rss_bytes()
    for group in groups:  # every server emits to its own members of the room
        for url in urls:
            await asyncio.to_thread(urllib.request.urlopen, f"{url}/emit?group={group}&seq=0")
    expected = sum(groups.values())
    deadline = time.monotonic() + 30
    while swarm.delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    result = await swarm.stop()
    return {"clients": clients, "joined": joined, "failed": result["failed"],
            "first_error": result["first_error"], "connect_s": round(connect_s, 1),
            "disconnects_while_idle": result["disconnects"],
            "baseline_rss_mb": round(baseline / 2**20, 1), "rss_mb": round(held / 2**20, 1),
            "rss_per_connection_kb": round((held - baseline) / max(1, joined) / 1024, 2),
            "delivered_after_hold": f"{result['delivered']}/{expected}",
            "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=18000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--hold", type=float, default=30.0)
    args = parser.parse_args()
    with socketio4_servers(args.servers) as urls:
        row = asyncio.run(measure(urls, args.clients, args.hold))
    print(json.dumps({"machine": f"{platform.machine()}, {platform.python_implementation()} "
                                 f"{platform.python_version()}, {os.cpu_count()} cores",
                      "servers": args.servers, **row}, indent=2))


if __name__ == "__main__":
    main()

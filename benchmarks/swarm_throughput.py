"""How many deliveries a second one swarm process records, and its own loop lag meanwhile.

The load comes from the official Node socket.io 4 server (tests/servers/socketio4.js, npm,
installed by `./dev test`): it encodes a room emit once and writes it to every member, so
it can offer more than one python node could. This process is the swarm: MEMBERS clients
in one group, the server emits RATE messages a second to their room, and each delivery is
recorded as compare records it (trace field, seen-set, hops, message records). GROUPS rooms
of MEMBERS each take RATE messages a second each.

`--stamps kernel,read` runs each load twice: t_recv from the kernel's receive stamp, then
from the moment the swarm read the frame; `--busy MS` blocks the swarm's loop for MS every
100 ms (a loaded swarm), which the read stamp adds to `delivery` and the kernel's does not.

    .venv/bin/python benchmarks/swarm_throughput.py --members 1000 --rates 20,50 --seconds 10
    .venv/bin/python benchmarks/swarm_throughput.py --groups 20 --members 100 --rates 10,25
    .venv/bin/python benchmarks/swarm_throughput.py --members 1000 --rates 20 --stamps kernel,read --busy 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import time
import urllib.request

from node_servers import socketio4_servers  # benchmarks/, beside this script

from mqprobe.pieces.swarm import Swarm, SwarmConfig
from mqprobe.protocol import Reset
from mqprobe.records import HopSet


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, groups: int, members: int, rate: float, seconds: float,
                  stamps: str, busy_ms: float) -> dict:
    sizes = {str(g + 1): members for g in range(groups)}
    swarm = Swarm(SwarmConfig(node_urls=[url], group_sizes=sizes, connect_timeout_s=120,
                              kernel_stamps=stamps == "kernel"))
    await swarm.start()
    assert swarm.progress()["joined"] == groups * members, swarm.first_error
    swarm.command(Reset())
    busy = asyncio.get_running_loop().create_task(_busy(busy_ms)) if busy_ms else None
    started, cpu = time.monotonic(), cpu_s()
    for group in sizes:
        await asyncio.to_thread(urllib.request.urlopen,
                                f"{url}/burst?group={group}&rate={rate}&seconds={seconds}")
    expected = int(rate * seconds) * members * groups
    while swarm.delivered < expected and time.monotonic() - started < seconds + 30:
        await asyncio.sleep(0.1)
    took, cpu = time.monotonic() - started, cpu_s() - cpu
    if busy:
        busy.cancel()
    result = await swarm.stop()
    lag = swarm.loop_lag.lag.summary()
    delivery = HopSet()
    for raw in result["hops"].values():
        delivery.merge(HopSet.from_json(raw))
    hop = delivery["delivery"].summary()
    return {"groups": groups, "members": members, "rate": rate, "stamps": stamps,
            "busy_ms_per_100ms": busy_ms,
            "offered_per_s": round(rate * members * groups),
            "delivered": f"{swarm.delivered}/{expected}",
            "recorded_per_s": round(swarm.delivered / took),
            "self_lag_p99_ms": lag["p99_ms"], "self_lag_max_ms": lag["max_ms"],
            "cpu_share": round(cpu / took, 2),
            "delivery_p50_ms": hop["p50_ms"], "delivery_p99_ms": hop["p99_ms"],
            "t_recv_source": result["t_recv_source"],
            "rss_mb": round(result["rss_bytes"] / 2**20, 1)}


async def _busy(ms: float) -> None:
    """Block the loop for ms every 100 ms: a swarm with work of its own."""
    while True:
        await asyncio.sleep(0.1)
        until = time.monotonic() + ms / 1000
        while time.monotonic() < until:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--members", type=int, default=1000, help="per group")
    parser.add_argument("--rates", default="20,50", help="messages/s to the room, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stamps", default="kernel", help="kernel, read, or both: kernel,read")
    parser.add_argument("--busy", type=float, default=0.0, help="ms of loop blocking per 100 ms")
    args = parser.parse_args()
    with socketio4_servers(1) as (url,):
        rows = [asyncio.run(measure(url, args.groups, args.members, float(rate), args.seconds,
                                    stamps, args.busy))
                for rate in args.rates.split(",") for stamps in args.stamps.split(",")]
    print(json.dumps({"machine": f"{platform.machine()}, {platform.python_implementation()} "
                                 f"{platform.python_version()}, {os.cpu_count()} cores",
                      "seconds": args.seconds, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()

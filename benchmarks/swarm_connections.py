"""How many socket.io connections one swarm process holds, and what each costs in RSS.

Runs the real pieces through `mqprobe.run.compare` (nodes, one swarm process, publisher on a real
broker): once with one member per group for the swarm's baseline RSS, once with CLIENTS
members, publishing while they are connected so the figure is for live, receiving clients.

    .venv/bin/python benchmarks/swarm_connections.py --clients 5000 --nodes 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
from pathlib import Path

from mqprobe.broker import broker_for
from mqprobe.model import Layout
from mqprobe.run.compare import compare
from mqprobe.run.workload import Workload


def measure(url: str, groups: int, members: int, nodes: int, rate: float, workdir: Path) -> dict:
    workload = Workload(topologies=["single-topic"], layouts=[Layout.PER_NODE], nodes=nodes,
                        group_sizes=[members] * groups, rate=rate, size=1024, duration_s=5.0)
    result = asyncio.run(compare(workload, url, None, workdir / f"m{members}"))
    return result.runs[0].to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1.0, help="msgs/s per group while held")
    parser.add_argument("--amqp-url")
    args = parser.parse_args()
    members = args.clients // args.groups
    with broker_for(args.amqp_url) as (url, _), tempfile.TemporaryDirectory() as tmp:
        base = measure(url, args.groups, 1, args.nodes, args.rate, Path(tmp))
        full = measure(url, args.groups, members, args.nodes, args.rate, Path(tmp))
    clients = full["swarm"]["joined"]
    per_conn = (full["swarm"]["rss_bytes"] - base["swarm"]["rss_bytes"]) / max(1, clients - args.groups)
    report = {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}, {_cpus()} cores",
        "swarm_processes": 1,
        "clients_joined": clients,
        "failed": full["swarm"]["failed"],
        "disconnects": full["swarm"]["disconnects"],
        "swarm_rss_mb": round(full["swarm"]["rss_bytes"] / 2**20, 1),
        "baseline_rss_mb": round(base["swarm"]["rss_bytes"] / 2**20, 1),
        "rss_per_connection_kb": round(per_conn / 1024, 1),
        "delivered": f"{full['delivered']}/{full['expected_deliveries']}",
        "lost": full["lost"],
        "e2e_p99_ms": full["hops"]["e2e"]["p99_ms"],
        "swarm_self_lag_p99_ms": full["self_lag_ms"]["p99"],
        "verdict": full["verdict"]["culprit"],
        "cause": full["verdict"]["cause"].split("; then")[0],
    }
    print(json.dumps(report, indent=1))


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()

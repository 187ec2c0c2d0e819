"""What the instrument weighs: each piece's CPU per 1,000 deliveries in a default compare.

Runs `mqprobe compare` (the default workload, every topology x layout, on the managed
broker, as a user runs it) --repeat times and reads each run's own CPU figures from the
result (`runs[].cpu.pieces`: /proc per piece through the measuring window). Prints, per
role, the CPU per 1,000 deliveries and in cores (median over the compares, and the range),
the instrument's share of all the CPU the run used, and the goals issue 39 set.

    .venv/bin/python benchmarks/footprint.py [--repeat 3] [-- extra compare flags]
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

# role: (the goal, what it is per): issue 39's goals at the default workload
GOALS = {"swarm": (6.0, "ms/1k"), "publisher": (0.005, "cores"), "compare": (0.01, "cores"),
         "instrument": (10.0, "ms/1k")}


def one_compare(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run([sys.executable, "-m", "mqprobe", "compare", "--json", str(out), *extra],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return json.loads(out.read_text())


def weigh(result: dict) -> dict[str, tuple[float, float]]:
    """Per role (and `instrument`, `all`): (CPU ms per 1,000 deliveries, cores), over every
    run of one compare."""
    cpu_ms: dict[str, float] = defaultdict(float)
    delivered = wall_s = 0.0
    for run in result["runs"]:
        cpu = run.get("cpu") or {}
        if not cpu.get("available"):
            continue
        delivered += run["delivered"]
        wall_s += cpu["wall_s"]
        for piece in cpu["pieces"].values():
            cpu_ms[piece["role"]] += piece["cpu_ms"]
            cpu_ms["instrument" if piece["instrument"] else "system"] += piece["cpu_ms"]
            cpu_ms["all"] += piece["cpu_ms"]
    return {role: (ms / delivered * 1000, ms / 1000 / wall_s) for role, ms in cpu_ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="flags for mqprobe compare (after --)")
    args = parser.parse_args()
    weighed = [weigh(one_compare(args.extra)) for _ in range(args.repeat)]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    print(f"`compare {' '.join(args.extra)}` x{args.repeat} at {head}, {platform.node()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| piece | CPU ms per 1,000 deliveries | cores | goal |")
    print("| --- | --- | --- | --- |")
    order = ["node", "broker", "swarm", "publisher", "compare", "system", "instrument", "all"]
    for role in order + sorted({r for w in weighed for r in w} - set(order)):
        values = [w[role] for w in weighed if role in w]
        if not values:
            continue
        cells = []
        for index in (0, 1):
            column = sorted(v[index] for v in values)
            digits = 1 if index == 0 else 3
            spread = f" ({column[0]:.{digits}f}-{column[-1]:.{digits}f})" if len(column) > 1 else ""
            cells.append(f"{statistics.median(column):.{digits}f}{spread}")
        goal = GOALS.get(role)
        print(f"| {role} | {cells[0]} | {cells[1]} | "
              f"{f'at most {goal[0]} {goal[1]}' if goal else ''} |")
    shares = sorted(w["instrument"][0] / w["all"][0] for w in weighed if "instrument" in w)
    print(f"\nthe instrument's share of the CPU the runs used: "
          f"{statistics.median(shares):.0%} ({shares[0]:.0%}-{shares[-1]:.0%})")


if __name__ == "__main__":
    main()

"""What the instrument weighs: each piece's CPU per 1,000 deliveries in a default compare.

Runs `mqprobe compare` (the default workload, every topology x layout, on the managed
broker, on a terminal, as a user runs it) --repeat times and reads each run's own CPU figures from the
result (`runs[].cpu.pieces`: /proc per piece through the measuring window). Prints, per
role, the CPU per 1,000 deliveries and in cores (median over the compares, and the range),
the instrument's share of all the CPU the run used, and the goals issue 39 set.

    .venv/bin/python benchmarks/footprint.py [--repeat 3] [-- extra compare flags]
    .venv/bin/python benchmarks/footprint.py --bare-nodes both   (the nodes' own instruments)

--bare-nodes both runs each compare twice, interleaved: the reference nodes as they are,
then without their instruments (MQPROBE_BARE_NODE=1: no loop monitor and watchdog, no loop
profiler, no link pings, no GC watch), and prints the nodes' CPU per 1,000 deliveries
each way: what the nodes' instrumentation costs them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections import defaultdict
from pathlib import Path

# role: (the goal, what it is per): issue 39's goals at the default workload
GOALS = {"swarm": (6.0, "ms/1k"), "publisher": (0.005, "cores"), "compare": (0.01, "cores"),
         "instrument": (10.0, "ms/1k")}


def one_compare(extra: list[str], bare_nodes: bool = False) -> dict:
    """One compare on a terminal of its own (120 x 40), as a user runs it: its progress bars
    are drawn, which a pipe would spare it."""
    env = dict(os.environ, MQPROBE_BARE_NODE="1" if bare_nodes else "0")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    reader = threading.Thread(target=_read_all, args=(leader,), daemon=True)
    reader.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            subprocess.run([sys.executable, "-m", "mqprobe", "compare", "--json", str(out),
                            *extra], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                           check=False, env=env)
            return json.loads(out.read_text())
    finally:
        os.close(follower)
        reader.join(5)
        os.close(leader)


def _read_all(fd: int) -> None:
    """Read what compare draws on its terminal, and drop it (a terminal nobody reads fills)."""
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


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
    parser.add_argument("--bare-nodes", choices=("no", "both"), default="no")
    parser.add_argument("extra", nargs="*", help="flags for mqprobe compare (after --)")
    args = parser.parse_args()
    if args.bare_nodes == "both":
        weigh_the_nodes(args.extra, args.repeat)
        return
    results = [one_compare(args.extra) for _ in range(args.repeat)]
    weighed = [weigh(result) for result in results]
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
    runs = [run for result in results for run in result["runs"]]
    heavy = sum(1 for run in runs if any(HEAVY in line for line in evidence_of(run)))
    print(f"runs whose verdict says the run measured the host: {heavy} of {len(runs)}")


HEAVY = "measured the host as much as the topology"  # the verdict's footprint sentence


def evidence_of(run: dict) -> list[str]:
    verdict = run.get("verdict") or {}
    return [str(line) for line in verdict.get("evidence", [])] if isinstance(verdict, dict) else []


def weigh_the_nodes(extra: list[str], repeat: int) -> None:
    """The nodes' CPU per 1,000 deliveries with their instruments and without, interleaved."""
    rows: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        for bare in (False, True):
            rows[bare].append(weigh(one_compare(extra, bare))["node"][0])
    print("| nodes | CPU ms per 1,000 deliveries, each compare | median |")
    print("| --- | --- | --- |")
    for bare, label in ((False, "as they are"), (True, "without their instruments")):
        print(f"| {label} | {', '.join(f'{v:.1f}' for v in rows[bare])} | "
              f"{statistics.median(rows[bare]):.1f} |")
    cost = 1 - statistics.median(rows[True]) / statistics.median(rows[False])
    print(f"\nthe instruments' share of a node's CPU: {cost:.1%} (of the medians)")


if __name__ == "__main__":
    main()

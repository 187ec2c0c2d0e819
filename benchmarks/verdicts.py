"""Are the verdicts stable from run to run, and does the reference node fake faults?

    .venv/bin/python benchmarks/verdicts.py [--repeat 5] [--only clean,gc,inject]

1. The default compare (every topology x layout) with --repeat N: how often each verdict.
2. Each --inject kind at the default workload (single-topic, per-node), --repeat N: how
   often the planted culprit is named, and its share of the tail excess.
3. The nodes' garbage-collection pauses in a default compare, with the set-up frozen out
   of the collector's reach (the default) and without (MQPROBE_GC_FREEZE=0).

Everything runs on the managed broker, as a user runs it; prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INJECTIONS = [  # (what, extra flags, culprit: cause expected)
    ("broker-delay=80ms", ["--inject", "broker-delay=80ms"], "mq: broker-side"),
    ("server-delay=60ms (concurrent handling)",
     ["--concurrency", "concurrent", "--inject", "server-delay=60ms"], "server: slow-handler"),
    ("prefetch=1 + server-delay=20ms", ["--inject", "prefetch=1", "--inject", "server-delay=20ms"],
     "server: consumer-saturated"),
    ("stall=200ms/1s", ["--inject", "stall=200ms/1s"], "server: server-stall"),
    ("spin=200ms/1s", ["--inject", "spin=200ms/1s"], "server: server-stall"),
    ("throttle=8%", ["--inject", "throttle=8%"], "server: cpu-throttled"),
]


def compare(args: list[str], env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        done = subprocess.run([sys.executable, "-m", "mqprobe", "compare", *args, "--json", str(out),
                               "--run-dir", str(Path(tmp) / "logs")],
                              capture_output=True, text=True, env={**os.environ, **(env or {})})
        if not out.exists():
            sys.exit(f"compare failed: {done.stderr[-2000:]}")
        return json.loads(out.read_text())


def said(run: dict) -> str:
    verdict = run["verdict"]
    return f"{verdict['culprit']}: {verdict['cause'].split(':')[0]}"


def clean(repeat: int) -> None:
    result = compare(["--repeat", str(repeat)])
    print(f"\n### Default compare, --repeat {repeat}\n")
    print("| topology / layout | verdicts | e2e p99 per repeat (ms) | lost |")
    print("| --- | --- | --- | --- |")
    points: dict = {}
    for run in result["runs"]:
        points.setdefault(f"{run['topology']} / {run['layout']}", []).append(run)
    for label, runs in points.items():
        counts: dict = {}
        for run in runs:
            counts[said(run)] = counts.get(said(run), 0) + 1
        text = " + ".join(f"{k} {n}/{len(runs)}" for k, n in counts.items())
        p99s = ", ".join(f"{r['hops']['e2e']['p99_ms']:.1f}" for r in runs)
        print(f"| {label} | {text} | {p99s} | {sum(r['lost'] for r in runs)} |")
    gc_table("set-up frozen (default)", result)


def inject(repeat: int) -> None:
    print(f"\n### Each --inject kind at the default workload (single-topic, per-node), "
          f"--repeat {repeat}\n")
    print("| injection | expected | named | top share per repeat |")
    print("| --- | --- | --- | --- |")
    for what, flags, expected in INJECTIONS:
        result = compare(["--topologies", "single-topic", "--layouts", "per-node",
                          "--repeat", str(repeat), *flags])
        runs = result["runs"]
        named = sum(1 for r in runs if said(r) == expected)
        shares = ", ".join(f"{r['verdict']['shares'][0]['share']:.0%}" if r["verdict"].get("shares")
                           else said(r) for r in runs)
        print(f"| `{what}` | {expected} | **{named}/{len(runs)}** | {shares} |")


def gc_table(label: str, result: dict) -> None:
    pauses = [e["end_ms"] - e["start_ms"] for run in result["runs"]
              for e in run["timeline"]["events"] if e["kind"] == "gc" and e["piece"][:1] == "n"]
    over = sum(1 for p in pauses if p > 10)
    longest = max(pauses, default=0)
    print(f"\nNodes' GC pauses over 1 ms, {label}: {len(pauses)} in {len(result['runs'])} runs, "
          f"longest {longest:.1f} ms, {over} over 10 ms")


def gc_before(repeat: int) -> None:
    result = compare(["--repeat", str(repeat)], env={"MQPROBE_GC_FREEZE": "0"})
    gc_table("without the freeze (MQPROBE_GC_FREEZE=0)", result)
    counts: dict = {}
    for run in result["runs"]:
        counts[said(run)] = counts.get(said(run), 0) + 1
    print("verdicts without the freeze: " + ", ".join(f"{k} {n}" for k, n in counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="clean,gc,inject")
    args = parser.parse_args()
    parts = args.only.split(",")
    if "clean" in parts:
        clean(args.repeat)
    if "gc" in parts:
        gc_before(max(1, args.repeat // 2))
    if "inject" in parts:
        inject(args.repeat)


if __name__ == "__main__":
    main()

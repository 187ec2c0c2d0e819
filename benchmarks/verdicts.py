"""Are the verdicts stable from run to run, on any host, and does the node fake faults?

    .venv/bin/python benchmarks/verdicts.py [--repeat 5] [--only clean,gc,inject]
    .venv/bin/python benchmarks/verdicts.py --only matrix --host as-is|one-core|hog [--keep DIR]
    .venv/bin/python benchmarks/verdicts.py --only matrix --cases link-delay,broker-  (some)
    .venv/bin/python benchmarks/verdicts.py --only storms --host as-is|one-core|hog

1. The default compare (every topology x layout) with --repeat N: how often each verdict.
2. Each --inject kind at the default workload (single-topic, per-node), --repeat N: how
   often the planted culprit is named, and its share of the tail excess.
3. The nodes' garbage-collection pauses in a default compare, with the set-up frozen out
   of the collector's reach (the default) and without (MQPROBE_GC_FREEZE=0).
4. matrix: 1 and 2 together under one host condition: the machine as it is, the whole
   compare pinned to one core (taskset -c 0: a host half as fast), or beside a CPU hog
   (two busy processes at the same priority, ended by pid). A clean run that crosses the
   budget on a host short of CPU must say so (cpu-starved), never blame the topology.
5. storms: the reconnect storm's two causes (--inject client-stall with 1 s pings, and
   churn), --repeat N under one host condition: the share of the tail each charged to its
   cause, and that the other is never charged (they are told apart by the reasons the
   nodes counted). Neither is expected to be the top verdict on this 2-core host: the load
   process shares it with the nodes (BENCHMARKS, "The reconnect storm").

Everything runs on the managed broker, as a user runs it; prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mqprobe.broker.managed import ManagedBroker

INJECTIONS = [  # (what, extra flags, culprit: cause expected)
    ("broker-delay=80ms", ["--inject", "broker-delay=80ms"], "mq: broker-side"),
    ("server-delay=60ms (concurrent handling)",
     ["--concurrency", "concurrent", "--inject", "server-delay=60ms"], "server: slow-handler"),
    ("prefetch=1 + server-delay=20ms", ["--inject", "prefetch=1", "--inject", "server-delay=20ms"],
     "server: consumer-saturated"),
    ("stall=200ms/1s", ["--inject", "stall=200ms/1s"], "server: server-stall"),
    ("spin=200ms/1s", ["--inject", "spin=200ms/1s"], "server: server-stall"),
    ("throttle=8%", ["--inject", "throttle=8%"], "server: cpu-throttled"),
    # the MQ side (issue 35): a slow path to RabbitMQ, its own quota, RabbitMQ frozen
    ("link-delay=20ms", ["--inject", "link-delay=20ms"], "mq: network"),
    ("broker-throttle=5%", ["--inject", "broker-throttle=5%"], "mq: broker-throttled"),
    ("broker-freeze=3s", ["--inject", "broker-freeze=3s"], "mq: broker-unavailable"),
]


STORMS = [  # (what, extra flags, the cause to charge, the cause never to charge)
    ("client-stall=2500ms/4s, pings every 1 s, 10 s",
     ["--duration", "10", "--ping-interval", "1", "--ping-timeout", "1",
      "--inject", "client-stall=2500ms/4s"], "clients-unresponsive", "connection-churn"),
    ("churn=300/s", ["--inject", "churn=300/s"], "connection-churn", "clients-unresponsive"),
]
STORM_SHARE = 0.1  # of the tail's excess: charged, not incidental


PREFIX: list[str] = []  # what the compare command runs under (taskset -c 0, or nothing)
KEEP: list[Path] = []  # a directory to keep each compare's result JSON in (--keep)
CASES: list[str] = []  # the matrix's cases to run (--cases: `clean` and injection prefixes)
CLEAN_ON_A_SHORT_HOST = {"none: within-budget", "server: cpu-starved", "mq: broker-starved"}


def compare(args: list[str], env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        done = subprocess.run([*PREFIX, sys.executable, "-m", "mqprobe", "compare", *args,
                               "--json", str(out),
                               "--run-dir", str(Path(tmp) / "logs")],
                              capture_output=True, text=True, env={**os.environ, **(env or {})})
        if not out.exists():
            sys.exit(f"compare failed: {done.stderr[-2000:]}")
        result = json.loads(out.read_text())
        if KEEP:
            KEEP[0].mkdir(parents=True, exist_ok=True)
            name = "_".join(a.replace("/", "-") for a in args if not a.startswith("--"))
            stem = f"{len(list(KEEP[0].glob('*.json'))):02d}_{name or 'default'}"
            (KEEP[0] / f"{stem}.json").write_text(out.read_text())
            if any(run.get("error") for run in result["runs"]):  # a crash's stack is in there
                shutil.copytree(Path(tmp) / "logs", KEEP[0] / f"{stem}-logs")
        return result


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


def matrix(repeat: int, host: str) -> None:
    """The clean default compare and every injection under one host condition."""
    print(f"\n### Verdict matrix, host: {host}, --repeat {repeat}\n")
    print("| case | expected | named | verdicts | top share per repeat | e2e p99 (ms) | "
          "host busy, PSI | pieces' CPU (cores); at each miss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    if not CASES or "clean" in CASES:
        result = compare(["--repeat", str(repeat)])
        _matrix_row("clean default compare (every topology x layout)",
                    CLEAN_ON_A_SHORT_HOST if host != "as-is" else {"none: within-budget"},
                    result["runs"])
    for what, flags, expected in INJECTIONS:
        if CASES and not what.startswith(tuple(CASES)):
            continue
        result = compare(["--topologies", "single-topic", "--layouts", "per-node",
                          "--repeat", str(repeat), *flags])
        _matrix_row(f"`{what}`", {expected}, result["runs"])


def storms(repeat: int, host: str) -> None:
    """Each storm case --repeat times: what its cause was charged, and what the other was."""
    print(f"\n### The reconnect storm's causes, host: {host}, --repeat {repeat}\n")
    print(f"| case | charged | its share (>= {STORM_SHARE:.0%}) | the other cause | top verdicts "
          "| e2e p99 (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for what, flags, cause, never in STORMS:
        runs = compare(["--topologies", "single-topic", "--layouts", "per-node",
                        "--repeat", str(repeat), *flags])["runs"]
        share = [{s["cause"]: s["share"] for s in r["attribution"]["shares"]} for r in runs]
        named = sum(1 for s in share if s.get(cause, 0) >= STORM_SHARE)
        tops: dict = {}
        for run in runs:
            tops[said(run)] = tops.get(said(run), 0) + 1
        p99 = sorted(r["hops"]["e2e"]["p99_ms"] for r in runs)
        print(f"| `{what}` | {cause} | **{named}/{len(runs)}**: "
              f"{', '.join(f'{s.get(cause, 0):.0%}' for s in share)} | "
              f"{never}: {', '.join(f'{s.get(never, 0):.0%}' for s in share)} | "
              f"{', '.join(f'{k} {n}' for k, n in tops.items())} | {p99[0]:.1f}-{p99[-1]:.1f} |")


def _matrix_row(what: str, accepted: set[str], runs: list[dict]) -> None:
    counts: dict = {}
    for run in runs:
        counts[said(run)] = counts.get(said(run), 0) + 1
    named = sum(n for verdict, n in counts.items() if verdict in accepted)
    shares = ", ".join(f"{r['verdict']['shares'][0]['share']:.0%}" if r["verdict"].get("shares")
                       else "-" for r in runs[:5])
    p99 = sorted(r["hops"]["e2e"]["p99_ms"] for r in runs)
    hosts = [r.get("cpu", {}).get("host", {}) for r in runs]
    busy = [h["busy_share"] for h in hosts if h.get("busy_share") is not None]
    psi = [h["pressure_share"] for h in hosts if h.get("pressure_share") is not None]
    load = (f"{min(busy):.0%}-{max(busy):.0%}, {min(psi):.0%}-{max(psi):.0%}" if busy and psi
            else "-")
    # every piece's CPU summed (cores): on one core, how full it was; where the verdicts
    # that missed were (so far every one on a core 0.90 full or more)
    used = [sum(p.get("core_share", 0) for p in (r.get("cpu") or {}).get("pieces", {}).values())
            for r in runs]
    misses = [f"{u:.2f}" for u, r in zip(used, runs, strict=True) if said(r) not in accepted]
    pieces = (f"{min(used):.2f}-{max(used):.2f}" + (f"; {', '.join(misses)}" if misses else "")
              if used else "-")
    print(f"| {what} | {' or '.join(sorted(accepted))} | **{named}/{len(runs)}** | "
          f"{', '.join(f'{k} {n}' for k, n in counts.items())} | {shares} | "
          f"{p99[0]:.1f}-{p99[-1]:.1f} | {load} | {pieces} |")


@contextlib.contextmanager
def host_condition(host: str):
    """The machine as it is, one core for the whole compare, or two busy processes beside
    it (ended by pid when the matrix is done)."""
    hogs: list[subprocess.Popen] = []
    if host == "one-core":
        # a managed broker kept running (`mqprobe broker up`) is what each compare uses, and
        # it was not started under taskset: its CPU would be the other core's (it happened)
        if ManagedBroker().running_state():
            sys.exit("a managed broker is running (mqprobe broker up): one-core would leave it "
                     "on the other core; `mqprobe broker down` first")
        PREFIX[:] = ["taskset", "-c", "0"]
    elif host == "hog":
        # each busy loop also ends by itself when this process goes (even killed)
        spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
        hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    elif host != "as-is":
        sys.exit(f"--host is as-is, one-core or hog, not {host!r}")
    try:
        yield
    finally:
        PREFIX[:] = []
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="clean,gc,inject")
    parser.add_argument("--host", default="as-is",
                        help="as-is | one-core | hog (matrix, storms)")
    parser.add_argument("--keep", type=Path, help="keep each compare's result JSON here")
    parser.add_argument("--cases", default="", help="matrix: clean and injection prefixes, "
                        "comma-separated (default: all)")
    args = parser.parse_args()
    KEEP[:] = [args.keep] if args.keep else []
    CASES[:] = [c for c in args.cases.split(",") if c]
    parts = args.only.split(",")
    if "matrix" in parts:
        with host_condition(args.host):
            matrix(args.repeat, args.host)
    if "storms" in parts:
        with host_condition(args.host):
            storms(args.repeat, args.host)
    if "clean" in parts:
        clean(args.repeat)
    if "gc" in parts:
        gc_before(max(1, args.repeat // 2))
    if "inject" in parts:
        inject(args.repeat)


if __name__ == "__main__":
    main()

"""What `mqprobe trace` prints: a followed group's messages as they arrive, its summary,
and a group replayed from a saved run."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from mqprobe.figures import Verdict
from mqprobe.model import HOPS, HopName
from mqprobe.output.report import negative_text, print_connections, print_untraced
from mqprobe.run.trace import ReplayedGroup
from mqprobe.stamps import DeliveryTrace


def print_trace_line(line: dict, console: Console) -> None:
    """One message as it arrived (or was lost), hop by hop."""
    if line["kind"] == "lost":
        console.print(f"[red]lost [/red] seq {line['seq']:>5}  last hop reached: {line['last_hop']}")
        return
    bar = f"±{line['clock_ms']:.3f}" if line["clock_ms"] else ""

    def hop(name: str, clocked: bool = False) -> str:  # n/a: a stamp that was not taken
        value = line.get(f"{name}_ms")
        return f"{'n/a':>8}" if value is None else f"{value:>8.3f}{bar if clocked else ''}"

    console.print(f"{line['kind']:<5} seq {line['seq']:>5}  node {line['node']:<14} "
                  f"mq {hop(HopName.MQ, True)}  server {hop(HopName.SERVER)}  "
                  f"delivery {hop(HopName.DELIVERY, True)}  = e2e {line['e2e_ms']:>8.3f} ms")


def print_trace_summary(summary: dict, console: Console) -> None:
    """The group's hops over the trace, the listeners' trouble and each node's clock."""
    hops = summary["hops"]
    console.print(f"group {summary['group']}: {summary['received']} messages received by "
                  f"{summary['listeners']} listener(s); probes sent {summary['probes_sent']}, "
                  f"lost {summary['probes_lost']}; untraced events {summary['untraced']}")
    if summary.get("failed") or summary.get("disconnects"):
        print_connections(summary, console)
    print_untraced(summary, console)
    for node, clock in summary.get("clocks", {}).items():
        if clock["corrected"]:
            console.print(f"  node {node}'s clock is {clock['offset_ms']:+.3f} ms from ours "
                          f"±{clock['uncertainty_ms']:.3f} (from {clock['probes']} probe round "
                          "trips); its hops are corrected")
        elif clock["consistent"]:
            console.print(f"  node {node}'s clock agrees with ours: its offset lies within "
                          f"[{clock['low_ms']:+.3f}, {clock['high_ms']:+.3f}] ms")
        else:
            console.print(f"  [yellow]node {node}'s clock moved during the trace (the probe "
                          "bounds cross): hops are uncorrected[/yellow]")
    if summary.get("e2e_only"):
        console.print("  e2e only: no server stamped these messages (no mqprobe code in them), "
                      "so mq, server and delivery are n/a")
    for hop in HOPS:
        if hop not in hops:
            console.print(f"  {hop:<9} n/a")
            continue
        h = hops[hop]
        negative = negative_text(h)
        console.print(f"  {hop:<9} p50 {h['p50_ms']:>8.3f}  p99 {h['p99_ms']:>8.3f}  "
                      f"max {h['max_ms']:>8.3f} ms  ({h['count']} deliveries)"
                      + (f"  negative {negative}" if negative else ""))
    print_trace_verdict(summary, console)
    nodes = summary.get("nodes", {})
    if len(nodes) > 1:
        for node, node_hops in nodes.items():
            if HopName.E2E in node_hops:
                e2e = node_hops[HopName.E2E]
                console.print(f"  node {node}: e2e p50 {e2e['p50_ms']:.3f}  p99 "
                              f"{e2e['p99_ms']:.3f}  max {e2e['max_ms']:.3f} ms "
                              f"({e2e['count']} messages)")


def print_trace_verdict(summary: dict, console: Console) -> None:
    """Where the group's late time went, and why: the verdict compare gives, or what can be
    said from outside servers with no mqprobe code."""
    if not summary.get("verdict"):
        return
    verdict = Verdict.from_json(summary["verdict"])
    console.print(Text.assemble(("verdict: ", "bold"), f"{verdict.culprit} - {verdict.cause_text}"))
    for line in verdict.evidence:
        console.print(Text(f"  - {line}"))


def print_replayed(group: str, replayed: ReplayedGroup, console: Console) -> None:
    """One group of a saved run: its counts, its hops and its first samples."""
    run, figures, counts = replayed.run, replayed.figures, replayed.figures.counts
    load = f" at load {run.load:g}" if run.load is not None else ""
    bars = run.clocks.hop_uncertainty_ms if run.clocks else {}
    console.print(Text.assemble(
        (f"{run.topology}/{run.layout}{load}", "bold"), f" group {group}: "
        f"{figures.members} members, {counts.published} published, "
        f"{counts.delivered}/{counts.expected_deliveries} delivered, lost {counts.lost}, "
        f"dup {counts.duplicated}; verdict {run.verdict.culprit}"))
    for hop, h in figures.hops.items():
        bar = bars.get(hop, 0)
        console.print(f"  {hop:<11} p50 {h.p50_ms:>8.3f}  p99 {h.p99_ms:>8.3f}  "
                      f"max {h.max_ms:>8.3f} ms" + (f"  ±{bar:.3f} (clocks)" if bar else ""),
                      markup=False)
    for g, seq, t_plan, t_pub, t_deq, t_emit, t_recv in replayed.samples[:200]:
        hops = dict(DeliveryTrace("", str(g), seq, "", t_pub, t_deq, t_emit, t_plan).hops(t_recv))
        console.print(f"  seq {seq:>5}  mq {hops[HopName.MQ] / 1e6:>8.3f}  server "
                      f"{hops[HopName.SERVER] / 1e6:>8.3f}  delivery {hops[HopName.DELIVERY] / 1e6:>8.3f}"
                      f"  = e2e {hops[HopName.E2E] / 1e6:>8.3f} ms")

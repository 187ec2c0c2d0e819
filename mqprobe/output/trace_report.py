"""What `mqprobe trace` prints: a followed group's messages as they arrive, its summary,
and a group replayed from a saved run."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.text import Text

from mqprobe.errors import ResultFormatError
from mqprobe.figures import Verdict
from mqprobe.model import HOPS, HopName, TraceLine
from mqprobe.output.report import negative_text, print_connections, print_untraced
from mqprobe.run.trace import ReplayedGroup
from mqprobe.stamps import DeliveryTrace


def print_trace_line(line: dict, console: Console) -> None:
    """One message as it arrived (or was lost), hop by hop."""
    if line["kind"] == TraceLine.LOST:
        console.print(f"[red]lost [/red] seq {line['seq']:>5}  last hop reached: {line['last_hop']}")
        return
    bar = f"±{line['clock_ms']:.3f}" if line["clock_ms"] else ""

    def hop(name: str, clocked: bool = False) -> str:  # n/a: a stamp that was not taken
        value = line.get(f"{name}_ms")
        return f"{'n/a':>8}" if value is None else f"{value:>8.3f}{bar if clocked else ''}"

    console.print(f"{line['kind']:<5} seq {line['seq']:>5}  node {line['node']:<14} "
                  f"mq {hop(HopName.MQ, True)}  server {hop(HopName.SERVER)}  "
                  f"delivery {hop(HopName.DELIVERY, True)}  = e2e {line['e2e_ms']:>8.3f} ms")


def print_episode(line: dict, console: Console) -> None:
    """A watch's news: a group that went over budget, and the verdict of an episode over."""
    at = _clock(line["start_ns"])
    if line["kind"] == TraceLine.LATE:
        console.print(Text.assemble((f"{at} group {line['group']} late", "bold red"),
                                    f": e2e {line['e2e_ms']:.1f} ms through "
                                    f"{', '.join(line['servers'])}"))
        return
    how = ("still late when the watch ended" if line.get("ongoing") else
           f"recovered at {_clock(line['end_ns'])}")
    console.print(Text.assemble((f"{at} group {line['group']} episode", "bold"),
                                f": {how}; worst e2e {line['worst_e2e_ms']:.1f} ms, "
                                f"{line['late']} of {line['seen']} deliveries late, through "
                                f"{', '.join(line['servers'])}"))
    print_trace_verdict(line, console)


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S")


def print_trace_summary(summary: dict, console: Console) -> None:
    """The group's hops over the trace, the listeners' trouble and each node's clock; with
    several groups, each, and how they compare."""
    if "groups" in summary:
        for one in summary["groups"].values():
            print_trace_summary(one, console)
        console.print(Text.assemble(("groups: ", "bold"), summary["comparison"]))
        return
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
    if "episodes" in summary:
        console.print(f"  {len(summary['episodes'])} episode(s) over budget in the watch")
    else:
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


EPISODE_KEYS = ("group", "start_ns", "end_ns", "worst_e2e_ms", "late", "seen", "servers",
                "verdict")


def episodes_of(text: str) -> list[dict] | None:
    """A watch's episode log (one JSON object a line, `mqprobe trace --duration 0 --log`),
    each line checked; None when the text is not one (a result JSON)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].lstrip().startswith(f'{{"kind":"{TraceLine.EPISODE}"'):
        return None
    episodes = []
    for number, line in enumerate(lines, 1):
        try:
            episode = json.loads(line)
            if episode.get("kind") != TraceLine.EPISODE or any(k not in episode for k in EPISODE_KEYS):
                raise ValueError("not an episode")
            Verdict.from_json(episode["verdict"])
            int(episode["start_ns"]), float(episode["worst_e2e_ms"])
        except (ValueError, TypeError, KeyError, AttributeError, ResultFormatError) as exc:
            raise ResultFormatError(f"line {number} of the episode log is not one mqprobe "
                                    f"wrote ({str(exc)[:80]})") from None
        episodes.append(episode)
    return episodes


def print_episodes(episodes: list[dict], console: Console) -> None:
    """A watch's episodes again, each with its verdict."""
    groups = sorted({e["group"] for e in episodes})
    console.print(f"{len(episodes)} episode(s) over budget, group(s) {', '.join(groups)}")
    for episode in episodes:
        print_episode(episode, console)

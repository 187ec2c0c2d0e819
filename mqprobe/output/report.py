"""Tables people read at a glance: one row per topology x layout, one column pair per hop."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mqprobe.clocks import RunClocks
from mqprobe.errors import ResultFormatError
from mqprobe.figures import Counts, Sweep
from mqprobe.model import HOPS, PATH_HOPS, Cause, Culprit, HopName
from mqprobe.result import Comparison, RunRecord, result_problem
from mqprobe.verdict.analysis import agreement, agreement_text, by_point, representative
from mqprobe.verdict.conclusion import conclude, conclude_sweep

MAX_RESULT_BYTES = 256 * 2**20  # a result JSON past this is not one of ours


def _regular_only(path: str, flags: int) -> int:
    """Open without blocking (a FIFO with no writer would wait forever), then refuse what
    is not a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ResultFormatError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_text_bounded(path: Path) -> str:
    """A regular file's text, at most MAX_RESULT_BYTES; one sentence when it cannot be."""
    try:
        with open(path, "rb", opener=_regular_only) as handle:
            raw = handle.read(MAX_RESULT_BYTES + 1)
    except OSError as exc:
        raise ResultFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise ResultFormatError(f"{path} is over {MAX_RESULT_BYTES // 2**20} MiB: not mqprobe's")
    return raw.decode("utf-8", "replace")


def load_result(path: Path) -> Comparison:
    """A saved result, read with a size bound and checked for the shape report, trace and
    pictures read (the contract's run fields), so a wrong file is one sentence, not a crash."""
    path = path / "result.json" if path.is_dir() else path
    try:
        # only a regular file: a FIFO (or a device) given by mistake would block or never end
        with open(path, "rb", opener=_regular_only) as handle:
            raw = handle.read(MAX_RESULT_BYTES + 1)
    except OSError as exc:
        raise ResultFormatError(f"cannot read a result from {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise ResultFormatError(f"{path} is over {MAX_RESULT_BYTES // 2**20} MiB: not an "
                                "mqprobe result")
    try:
        result = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultFormatError(f"{path} is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if problem := result_problem(result):
        raise ResultFormatError(f"{path} is not an mqprobe result: {problem}")
    try:
        return Comparison.from_json(result)  # every part of every run, as its type, once
    except ResultFormatError as exc:
        raise ResultFormatError(f"{path} is not an mqprobe result: {exc}") from None


NODE_HOPS = (HopName.MQ, HopName.SERVER, HopName.FANOUT)  # what a node records (top)
_CULPRIT_STYLE: dict[str, str] = {Culprit.NONE: "green", Culprit.CLIENT: "magenta", Culprit.MQ: "red",
                  Culprit.SERVER: "yellow", Culprit.DELIVERY: "cyan"}


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def compare_table(result: Comparison) -> Table:
    workload = result.workload
    title = (f"mqprobe compare: {workload.get('groups', '?')} groups x "
             f"{_members(workload)} members, {workload.get('nodes', '?')} nodes, "
             f"{workload.get('rate', '?')} msg/s per group, {workload.get('size', '?')} B, "
             f"{workload.get('duration_s', '?')} s; RabbitMQ {result.broker.get('version', '?')}")
    repeats = result.repeats or {}
    repeated = repeats.get("count", 1) > 1
    caption = ("latency in ms; lost: will never arrive, late: still queued when the run "
               "stopped; self-lag: the swarm's own event-loop lag p99, the error bar of "
               "every figure; CPU: ms per 1,000 deliveries on this host; the verdict: the "
               "top cause and its share of the tail excess")
    if repeated:
        caption += (f"; {repeats['count']} repeats per row: figures of the repeat with "
                    "the median e2e p99, delivered and lost summed, the verdicts of all")
    table = Table(title=Text(title), caption=caption)
    table.add_column("topology", no_wrap=True)
    table.add_column("layout", no_wrap=True)
    table.add_column("delivered", justify="right", no_wrap=True)
    table.add_column("lost", justify="right")
    table.add_column("dup", justify="right")
    for hop in HOPS[:-1]:
        table.add_column(f"{hop}\np50/p99", justify="right", no_wrap=True)
    table.add_column("e2e\np50/p99/max", justify="right", no_wrap=True)
    table.add_column("self-lag\np99", justify="right")
    table.add_column("CPU ms/1k\nbroker/nodes", justify="right")
    table.add_column("verdict")
    points = by_point(list(result.runs), lambda r: (r.topology, r.layout))
    for runs in points.values():
        run = representative(runs)
        hops = {hop: run.hop(hop) for hop in HOPS}  # what RunRecord.SHAPE checked
        clocks = run.clocks or RunClocks()
        # a hop nothing was measured on (no delivery reached that far) is '-', never 0.00
        cells = [f"{_ms(hops[h].p50_ms)}/{_ms(hops[h].p99_ms)}{_pm(clocks, h)}"
                 if hops[h].count else "-" for h in HOPS[:-1]]
        e2e = hops[HopName.E2E]
        cells.append(f"{_ms(e2e.p50_ms)}/{_ms(e2e.p99_ms)}/{_ms(e2e.max_ms)}"
                     f"{_pm(clocks, HopName.E2E)}" if e2e.count else "-")
        text, style = verdict_cell(run) if len(runs) == 1 else repeats_cell(runs)
        counts = Counts.total(r.counts for r in runs)
        bounded = any(r.lost_at_most for r in runs)  # a swarm died: at least / at most
        table.add_row(
            run.topology, run.layout,
            f"{'≥' * bounded}{counts.delivered}/{counts.expected_deliveries}",
            _lost_cell(counts, bounded), _flag(counts.duplicated),
            *cells, _ms(run.self_lag.p99), _cost_cell(run), Text(text, style=style))
    return table


def repeats_cell(runs: list[RunRecord]) -> tuple[str, str]:
    """`none 5/5`, `mq 4/5 + server 1/5`; styled by the most common culprit."""
    counts = agreement(runs)
    failed = sum(1 for r in runs if r.error)
    text = agreement_text(counts) + (f" ({failed} failed)" if failed else "")
    return text, _CULPRIT_STYLE.get(next(iter(counts)), "")


def verdict_cell(run: RunRecord) -> tuple[str, str]:
    """`mq: broker-side 91%` (the top cause and its share of the tail excess), and a style."""
    verdict = run.verdict
    culprit = verdict.culprit
    text = str(culprit) if culprit is Culprit.NONE else f"{culprit}: {verdict.cause}"
    shares = verdict.shares
    if culprit is not Culprit.NONE and shares and shares[0].cause is verdict.cause:
        text += f" {shares[0].share:.0%}"
    if run.error:
        text += " (run failed)"
    return text, _CULPRIT_STYLE.get(culprit, "")


def _pm(clocks: RunClocks, hop: str, sep: str = "\n") -> str:
    """The hop's clock error bar when its two ends were stamped on different hosts."""
    if not clocks.apart:
        return ""  # one clock: no hop has an error bar from clocks
    bar = clocks.hop_uncertainty_ms.get(hop, 0)
    return f"{sep}±{_ms(bar) if bar else 0}"


def _clock_lines(run: RunRecord) -> list[str]:
    pieces = run.clocks.pieces if run.clocks else {}
    return [f"{name}: {c.offset_ns / 1e6:+.3f} ms from this host's clock "
            f"±{c.uncertainty_ns / 1e6:.3f} ({c.exchanges} exchanges over the broker, before "
            f"and after the run; drift {c.drift_ns / 1e6:.3f} ms)"
            for name, c in pieces.items() if not c.same_clock]


def _members(workload: dict) -> str:
    sizes = workload.get("group_sizes") or []
    if sizes and min(sizes) == max(sizes):
        return str(sizes[0])
    return f"{min(sizes)}-{max(sizes)}" if sizes else "?"


def _cost_cell(run: RunRecord) -> str:
    """CPU ms per 1,000 deliveries of the broker and of the nodes ('-': not measured)."""
    cost = run.cost
    values = (cost.broker_per_1k_deliveries, cost.nodes_per_1k_deliveries) if cost else (None,
                                                                                          None)
    return "/".join("-" if value is None else _ms(value) for value in values)


def _lost_cell(counts: Counts, at_most: bool = False) -> str:
    """Lost (will never arrive; at most, when a swarm died unreported), and below it what
    was still on its way at the end."""
    lost = f"[red]≤{counts.lost}[/red]" if at_most and counts.lost else _flag(counts.lost)
    return (f"{lost}\n[yellow]+{counts.not_delivered} late[/yellow]" if counts.not_delivered
            else lost)


def _flag(count: int) -> str:
    return f"[red]{count}[/red]" if count else "0"


def print_compare(result: Comparison, console: Console) -> None:
    console.print(compare_table(result))
    # a result saved before conclusions were drawn gets one from its runs
    runs = result.runs
    sentence = result.sentence or conclude(list(runs)).sentence
    console.print(Text.assemble(("conclusion: ", "bold"), sentence))
    for run in runs:
        verdict = run.verdict
        clock_lines = _clock_lines(run)
        if clock_lines:
            console.print(f"[bold]{run.topology}/{run.layout}[/bold] clocks (a hop "
                          "between two clocks is corrected; ± in the table is its error bar):")
            for line in clock_lines:
                console.print(Text(f"  - {line}"))
        if verdict.culprit == Culprit.NONE and not run.error:
            continue
        label = f"{run.topology}/{run.layout}" + (f" (repeat {run.repeat})" if run.repeat else "")
        console.print(Text.assemble((label, "bold"), f": {verdict.culprit} - {verdict.cause_text}"))
        for line in verdict.evidence:
            console.print(Text(f"  - {line}"))
    untrusted = [r for r in runs if r.verdict.cause == Cause.SWARM_SATURATED]
    if untrusted:
        console.print("[magenta]Runs marked 'client' measured the swarm, not your system: "
                      "add --swarm-processes or lower the load.[/magenta]")


def print_hops(swarm_result: dict, console: Console) -> None:
    """A swarm run by hand: its hops over all groups, and its own loop lag."""
    from mqprobe.records import HopSet, Latency

    hops = HopSet()
    for raw in swarm_result.get("hops", {}).values():
        hops.merge(HopSet.from_json(raw))
    table = Table(title=f"swarm: {swarm_result.get('delivered', 0)} deliveries, latency in ms",
                  caption="self-lag: this swarm's own event-loop lag, the error bar of t_recv")
    for column in ("hop", "count", "p50", "p90", "p99", "p99.9", "max"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    rows: list[tuple[str, Any]] = [(hop, hops[hop].summary())
                                   for hop in (*HOPS, HopName.E2E_PLANNED) if hop in hops]
    if "self_lag" in swarm_result:
        rows.append(("self-lag", Latency.from_json(swarm_result["self_lag"]).summary()))
    negative = any(s.get("negative") for _hop, s in rows)
    if negative:  # clock skew between hosts: shown, never hidden (docs/comparing.md)
        table.add_column("negative", justify="right")
    for hop, s in rows:
        table.add_row(hop, str(s["count"]), *(_ms(s[k]) for k in
                                              ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")),
                      *([negative_text(s)] if negative else []))
    console.print(table)
    print_untraced(swarm_result, console)


def print_connections(result: dict, console: Console) -> None:
    """The swarm's (or trace's listeners') own connections: who joined, who failed and why,
    who was dropped and came back. Yellow when any were lost: their deliveries are too."""
    protocols = sorted(set((result.get("protocols") or {}).values()))
    text = (f"clients: {result.get('joined', 0)} of {result.get('planned', 0)} joined"
            + (f" (engine.io {', '.join(map(str, protocols))})" if protocols else "")
            + f", {result.get('failed', 0)} failed, {result.get('disconnects', 0)} disconnects, "
            f"{result.get('reconnects', 0)} came back")
    if result.get("down"):
        text += f", {result['down']} still down at the end"
    if result.get("first_error"):
        text += f"; first error: {result['first_error']}"
    trouble = result.get("failed") or result.get("disconnects")
    console.print(Text(text, style="yellow" if trouble else ""))


def negative_text(summary: dict) -> str:
    """`12 (min -3.21 ms)` for a hop with negative values (clock skew), else ''."""
    if not summary.get("negative"):
        return ""
    return f"{summary['negative']} (min {summary.get('min_ms', 0):.2f} ms)"


def print_untraced(result: dict, console: Console, shown: int = 3) -> None:
    """How many events carried no usable trace, and why: the commonest reasons first."""
    reasons = result.get("untraced_reasons") or {}
    if not result.get("untraced"):
        return
    ranked = sorted(reasons.items(), key=lambda item: -item[1])
    text = "; ".join(f"{count} x {reason}" for reason, count in ranked[:shown])
    rest = sum(count for _reason, count in ranked[shown:])
    console.print(Text(f"untraced events {result['untraced']}: {text}"
                       + (f"; {rest} for other reasons" if rest else ""), style="yellow"))


def sweep_table(result: Comparison, sweep: Sweep) -> Table:
    axis = sweep.axis
    table = Table(title=f"mqprobe sweep over {axis} ({sweep.layout} layout): p99 ms "
                  "mq / server / delivery = e2e, and the verdict",
                  caption="* the knee: where p99 e2e leaves its baseline, deliveries are lost "
                  "or a backlog builds")
    table.add_column(axis, justify="right")
    records = result.runs
    topologies = list(dict.fromkeys(r.topology for r in records))
    for name in topologies:
        table.add_column(name)
    knees = sweep.knees
    for value in sweep.values:
        cells = []
        for name in topologies:
            runs = [r for r in records if r.topology == name and r.load == value]
            if not runs:
                cells.append("")
                continue
            run = representative(runs)
            hops = {hop: run.hop(hop) for hop in HOPS}
            clocks = run.clocks or RunClocks()
            # mq / server / delivery = e2e, each hop between two clocks with its error bar
            text = " / ".join(f"{_ms(hops[hop].p99_ms)}{_pm(clocks, hop, '')}"
                              if hops[hop].count else "-" for hop in PATH_HOPS) + (
                f" = {_ms(hops[HopName.E2E].p99_ms)}{_pm(clocks, HopName.E2E, '')}"
                if hops[HopName.E2E].count else " = no delivery")
            if len(runs) > 1:
                text += f"  {repeats_cell(runs)[0]}"
            elif run.verdict.culprit != Culprit.NONE:
                text += f"  {verdict_cell(run)[0]}"
            if lost := run.counts.lost:
                text += f"  [red]lost {'at most ' * run.lost_at_most}{lost}[/red]"
            knee = knees.get(name)
            if knee and knee.load == value:
                text = f"[bold]* {text}[/bold]"
            cells.append(text)
        table.add_row(f"{value:g}", *cells)
    return table


def print_result(result: Comparison, console: Console) -> None:
    """A saved result, a sweep's or a comparison's, as its command printed it."""
    if result.sweep is None:
        print_compare(result, console)
    else:
        print_sweep(result, result.sweep, console)


def print_sweep(result: Comparison, sweep: Sweep, console: Console) -> None:
    console.print(sweep_table(result, sweep))
    for name, knee in sweep.knees.items():
        if knee is None:
            console.print(Text.assemble((name, "green"), f": no knee up to {sweep.axis} = "
                                        f"{max(sweep.values):g}"))
            continue
        console.print(Text.assemble((name, "bold"), f": knee at {sweep.axis} = {knee.load:g}: "
                                    f"{'; '.join(knee.reasons)}"))
        console.print(Text(f"  cause: {knee.culprit} - {knee.cause}"))
        for line in knee.evidence:
            console.print(Text(f"  - {line}"))
    sentence = result.sentence or conclude_sweep(sweep).sentence
    console.print(Text.assemble(("conclusion: ", "bold"), sentence))


def print_leftovers(found: list, outcome: dict, dry_run: bool, where: str,
                    console: Console) -> None:
    """What `cleanup` found of mqprobe's on a broker, and what became of each."""
    if not found:
        console.print(f"nothing of mqprobe's is left on {where}")
        return
    table = Table("kind", "name", "state", "", title=f"mqprobe's leftovers on {where}")
    for item in found:
        if item.in_use:
            action = "in use: kept"
        elif dry_run:
            action = "would be removed"
        else:
            action = "removed" if item.name in outcome["removed"] else "in use by now: kept"
        table.add_row(item.kind, Text(item.name), item.detail, action)
    console.print(table)
    console.print(f"{len(found)} left; " + ("nothing removed (--dry-run)" if dry_run
                                             else f"{len(outcome['removed'])} removed"))


def _p50_p99(quantiles: dict[str, float] | None) -> str:
    if not quantiles:
        return "-"
    return f"{_ms(quantiles.get('0.5', 0))}/{_ms(quantiles.get('0.99', 0))}"


def top_view(scrape, previous: dict, groups_shown: int = 10):
    """`mqprobe top`'s screen: a row per node (rates, hop p50/p99, pauses), then the
    busiest groups' hops, then the URLs that did not answer."""
    from rich.console import Group

    from mqprobe.output.top import rates

    nodes = Table("node", "traced/s", "untraced", "unsampled", "seq gaps", "mq p50/p99",
                  "server p50/p99", "fanout p50/p99", "GC pauses (longest)",
                  "loop stalls (longest)", title="mqprobe top: per node (ms)")
    for view in sorted(scrape.views, key=lambda v: v.node):
        per_second = rates(view, previous.get((view.url, view.node)))
        pauses = [f"{int(view.pauses.get(kind, (0, 0))[0])} "
                  f"({_ms(view.pauses.get(kind, (0, 0))[1])})" for kind in ("gc", "loop_stall")]
        nodes.add_row(Text(view.node), f"{per_second['traced']:.1f}" if "traced" in per_second
                      else "…", _flag_count(view.counts.get("untraced", 0)),
                      str(int(view.counts.get("unsampled", 0))),
                      _flag_count(view.counts.get("seq_gaps", 0)),
                      *(_p50_p99(view.hops.get(hop)) for hop in NODE_HOPS),
                      *pauses)
    groups = Table("node", "group", "messages", "mq p50/p99", "server p50/p99",
                   "fanout p50/p99", "max", title=f"the {groups_shown} busiest groups (ms)")
    rows = [(view, group, hops) for view in scrape.views for group, hops in view.groups.items()]
    rows.sort(key=lambda row: -row[0].group_messages.get(row[1], 0))
    for view, group, hops in rows[:groups_shown]:
        worst = max((q.get("1", 0) for q in hops.values()), default=0)
        groups.add_row(Text(view.node), Text(group),
                       str(int(view.group_messages.get(group, 0))),
                       *(_p50_p99(hops.get(hop)) for hop in NODE_HOPS),
                       _ms(worst))
    parts: list[Table | Text] = [nodes, groups]
    for url, error in scrape.errors.items():
        parts.append(Text(f"{url}: no answer ({error})", style="red"))
    if not scrape.views and not scrape.errors:
        parts.append(Text("no mqprobe metrics at these URLs yet"))
    return Group(*parts)


def _flag_count(value: float) -> Text:
    return Text(str(int(value)), style="yellow" if value else "")

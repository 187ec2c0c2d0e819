"""Pictures of a result, drawn with matplotlib: where the tail is, when it happened, and
which hop holds it.

- Percentile curves: latency against percentile on HdrHistogram's log axis (50 .. 99.99),
  one panel per hop, one line per topology x layout, from the run's HDR histograms.
- The run's timeline: e2e per publish-time bucket (p50, p99, max) above lanes of what the
  attribution recorded (loop stalls, GC pauses, full prefetch windows, the publisher
  blocked, backlogs) and the broker's ready messages, all on one time axis.
- The tail by hop: mq, server and delivery stacked at p50 and at p99, with the verdict.
- Sweep: p99 by hop against load, one panel per topology, the knee marked.

matplotlib is an optional extra (`pip install 'mqprobe[pictures]'`; ./dev installs it):
it draws both the SVG that the self-contained HTML page inlines and the PNG files, with
real axes, ticks and legends. Figures are made without pyplot (no global state, nothing
kept once drawn, no display needed). The HDR logs need only hdrhistogram.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from mqprobe.errors import InputError
from mqprobe.figures import Sweep, TimelineEvent
from mqprobe.model import HOP_COLOURS, HOPS, PATH_HOPS, Cause, HopName
from mqprobe.result import Comparison, RunRecord
from mqprobe.timeline import EventKind
from mqprobe.verdict.analysis import by_point, representative

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")
EVENT_COLOURS: dict[str, str] = {EventKind.LOOP_STALL: "#d62728", EventKind.GC: "#9467bd",
                 EventKind.WINDOW_FULL: "#ff7f0e", EventKind.CONSUMER_BUSY: "#fdd49e",
                 EventKind.PUBLISHER_BLOCKED: "#8c564b", EventKind.QUEUE_BACKLOG: "#1f77b4",
                 EventKind.BROKER_ALARM: "#e377c2", EventKind.BROKER_UNAVAILABLE: "#000000",
                 EventKind.CLIENT_DOWN: "#bcbd22", EventKind.CONNECTION_WORK: "#17becf",
                 EventKind.HEARTBEAT_WORK: "#2ca02c"}
PERCENTILE_TICKS = (50.0, 90.0, 99.0, 99.9, 99.99)
SHADED_KINDS = (EventKind.LOOP_STALL, EventKind.GC, EventKind.PUBLISHER_BLOCKED,
                EventKind.BROKER_UNAVAILABLE, EventKind.BROKER_ALARM)
MAX_LANES = 12
MAX_TIMELINES = 8  # one per run, the worst first: a page stays readable
MAX_CURVES = 10  # lines per percentile panel


class PicturesUnavailable(InputError):
    """matplotlib is not installed; the message says how to get it."""


@dataclass
class Picture:
    """One figure, with the file stem it is saved under and the title the page shows."""

    stem: str
    title: str
    figure: Figure


def _figure(rows: int, columns: int, **options):
    """A figure and its axes, made without pyplot: nothing global keeps it once drawn."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PicturesUnavailable(
            "pictures need matplotlib: pip install 'mqprobe[pictures]' (./dev installs it); "
            "the result JSON and --hdr-dir do not") from None
    subplot_options = {k: options.pop(k) for k in ("sharex", "sharey", "squeeze",
                                                     "gridspec_kw") if k in options}
    figure = Figure(layout="constrained", **options)
    return figure, figure.subplots(rows, columns, **subplot_options)


def check_available() -> None:
    """Raise PicturesUnavailable (one sentence) when matplotlib cannot be imported."""
    _figure(1, 1)


def _label(run: RunRecord) -> str:
    load = f" @ {run.load:g}" if run.load is not None else ""
    return f"{run.topology} / {run.layout}{load}"


def _stem(run: RunRecord) -> str:
    load = f"_{run.load:g}" if run.load is not None else ""
    repeat = f"_r{run.repeat}" if run.repeat else ""
    return f"{run.topology}_{run.layout}{load}{repeat}"


def _verdict_text(run: RunRecord) -> str:
    from mqprobe.output.report import verdict_cell

    return verdict_cell(run)[0]


def _points(result: Comparison) -> list[RunRecord]:
    """One run per topology x layout x load: the median repeat."""
    return [representative(runs) for runs in by_point(
        list(result.runs), lambda r: (r.topology, r.layout, r.load)).values()]


def _shown_runs(result: Comparison) -> list[RunRecord]:
    """The runs the percentile curves compare: every point of a compare; in a sweep, each
    topology at its knee (or at its heaviest load), so like is compared with like."""
    points = _points(result)
    if result.sweep is None:
        return points
    knees = result.sweep.knees
    by_topology: dict[str, list[RunRecord]] = {}
    for run in points:
        by_topology.setdefault(run.topology, []).append(run)
    return [next((r for r in runs if (knee := knees.get(t)) and r.load == knee.load),
                 max(runs, key=lambda r: r.load or 0))
            for t, runs in by_topology.items()]


# -- percentile curves ---------------------------------------------------------------------
def _percentile_points() -> list[float]:
    """Percentiles evenly spread on the log axis of 1 / (1 - p), from 0 to 99.99."""
    return [100.0 * (1 - 10 ** (-k / 20)) for k in range(0, 81)]


def percentile_curves(result: Comparison) -> Picture:
    runs = [r for r in _shown_runs(result) if r.hdr][:MAX_CURVES]
    figure, axes = _figure(2, 2, figsize=(12, 8))
    budget = result.workload.get("budget_ms")
    points = _percentile_points()
    xs = [1 / (1 - p / 100) for p in points]
    for ax, hop in zip(axes.flat, HOPS, strict=True):
        for i, run in enumerate(runs):
            encoded = run.hdr.get(hop)
            if not encoded:
                continue
            hist = HdrHistogram.decode(encoded)
            if not hist.get_total_count():
                continue
            ys = [hist.get_value_at_percentile(p) / 1000 for p in points]
            ax.plot(xs, ys, label=_label(run), color=LINE_COLOURS[i % len(LINE_COLOURS)],
                    linewidth=1.6)
        if hop == HopName.E2E and budget:
            ax.axhline(budget, color="black", linestyle="--", linewidth=1,
                       label=f"budget {budget:g} ms")
        ax.set_xscale("log")
        ax.set_xticks([1 / (1 - p / 100) for p in PERCENTILE_TICKS],
                      [f"{p:g}%" for p in PERCENTILE_TICKS])
        ax.minorticks_off()
        ax.set_xlim(1, 1 / (1 - 0.9999) * 1.05)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{hop}: latency by percentile")
        ax.set_xlabel("percentile")
        ax.set_ylabel("ms")
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes.flat[-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels) or 1))
    figure.suptitle("Latency by percentile, per hop (HDR histograms of every delivery)")
    return Picture("percentiles", "Percentile curves per hop", figure)


# -- the run's timeline --------------------------------------------------------------------
def run_timeline(run: RunRecord, budget_ms: float | None = None) -> Picture:
    timeline = run.timeline
    series = timeline.e2e.rows if timeline.e2e else []
    lanes = _lanes(timeline.events)
    ready = timeline.queue_ready.rows if timeline.queue_ready else []
    kinds = list(lanes)
    count = max(1, len(kinds))
    figure, (top, middle, bottom, link_axes, cpu_axes) = _figure(
        5, 1, figsize=(12, 10 + 0.25 * count), sharex=True,
        gridspec_kw={"height_ratios": [4, 0.6 + 0.35 * count, 1.6, 1.4, 1.8]})
    if series:
        t = [row[0] / 1000 for row in series]
        p50, p99, peak = ([row[i] for row in series] for i in (2, 3, 4))
        top.fill_between(t, p50, p99, color="#1f77b4", alpha=0.25, step="post",
                         label="e2e p50..p99")
        top.step(t, p50, where="post", color="#1f77b4", linewidth=1, label="e2e p50")
        top.step(t, p99, where="post", color="#d62728", linewidth=1.2, label="e2e p99")
        top.plot(t, peak, linestyle="none", marker=".", markersize=3, color="#555555",
                 label="e2e max")
    if budget_ms:
        top.axhline(budget_ms, color="black", linestyle="--", linewidth=1,
                    label=f"budget {budget_ms:g} ms")
    top.set_ylabel("e2e ms")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"{_label(run)}: {_verdict_text(run)}", loc="left")
    for lane, (kind, lane_events) in enumerate(lanes.values()):
        spans = [(e.start_ms / 1000, max((e.end_ms - e.start_ms) / 1000, 0.002))
                 for e in lane_events]
        middle.broken_barh(spans, (lane - 0.4, 0.8), color=EVENT_COLOURS.get(kind, "#7f7f7f"))
        for start, width in spans:  # the same moments, faintly, over the deliveries
            if width >= 0.02 and kind in SHADED_KINDS:
                top.axvspan(start, start + width, color=EVENT_COLOURS[kind], alpha=0.12,
                            linewidth=0)
    middle.set_yticks(range(len(kinds)), kinds, fontsize=8)
    middle.set_ylim(-0.6, count - 0.4)
    middle.invert_yaxis()
    middle.grid(True, axis="x", alpha=0.3)
    if not kinds:
        middle.set_yticks([])
        middle.text(0.5, 0.5, "nothing recorded on the timeline", transform=middle.transAxes,
                    ha="center", va="center", fontsize=9, color="#555555")
    if ready:
        bottom.step([row[0] / 1000 for row in ready], [row[1] for row in ready], where="post",
                    color="#1f77b4", label="ready messages (all the run's queues)")
        bottom.legend(loc="upper right", fontsize=8)
    else:
        bottom.text(0.5, 0.5, "no queue depth sampled", transform=bottom.transAxes,
                    ha="center", va="center", fontsize=9, color="#555555")
    bottom.set_ylabel("queued")
    bottom.set_ylim(0, max([1, *(row[1] for row in ready)]) * 1.1)
    bottom.grid(True, alpha=0.3)
    _link_lanes(link_axes, timeline.links.nodes if timeline.links else {})
    _cpu_lanes(cpu_axes, run.cpu.series or {})
    cpu_axes.set_xlabel("seconds since the first publish")
    return Picture(f"timeline_{_stem(run)}", f"Timeline of {_label(run)}", figure)


def _link_lanes(axes, links: dict[str, list[list]]) -> None:
    """A line per AMQP link: its round trip at each ping (dashed: the kernel's), so a slow
    path to RabbitMQ shows under the mq hop it lengthened."""
    if not links:
        axes.text(0.5, 0.5, "no link round trips measured", transform=axes.transAxes,
                  ha="center", va="center", fontsize=9, color="#555555")
    for link, rows in links.items():
        line, = axes.plot([row[0] / 1000 for row in rows], [row[1] for row in rows],
                          linewidth=1, marker=".", markersize=3, label=f"{link} AMQP")
        kernel = [(row[0] / 1000, row[2]) for row in rows if row[2] is not None]
        if kernel:
            axes.plot(*zip(*kernel, strict=True), linewidth=0.8, linestyle="--",
                      color=line.get_color())
    axes.set_ylabel("link RTT ms")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    if links:
        axes.legend(loc="upper right", fontsize=7, ncol=min(6, len(links)),
                    title="dashed: the kernel's", title_fontsize=7)


def _cpu_lanes(axes, series: dict) -> None:
    """A line per piece: the cores it used in each sample (ms of CPU over the sample's
    length), so a wave of CPU shows under the e2e line it may explain."""
    columns = series.get("columns") or []
    rows = [row for row in series.get("rows") or [] if len(row) >= len(columns)]
    if len(rows) < 2 or len(columns) < 2:
        axes.text(0.5, 0.5, "no CPU sampled", transform=axes.transAxes, ha="center",
                  va="center", fontsize=9, color="#555555")
        axes.set_ylabel("CPU cores")
        return
    t = [row[0] for row in rows]
    widths = [later - earlier for earlier, later in zip(t, t[1:], strict=False)]
    widths = [widths[0], *widths]
    for i, piece in enumerate(columns[1:], 1):
        cores = [row[i] / width if width > 0 else 0.0 for row, width in zip(rows, widths,
                                                                              strict=True)]
        axes.step([x / 1000 for x in t], cores, where="post", linewidth=1, label=piece)
    axes.set_ylabel("CPU cores")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize=7, ncol=min(8, len(columns) - 1))


def _lanes(events: tuple[TimelineEvent, ...]) -> dict[str, tuple[str, list[TimelineEvent]]]:
    """One lane per kind and piece ("loop-stall n1"), in the order of EVENT_COLOURS; past
    MAX_LANES, one lane per kind with its pieces named."""
    order: dict[str, int] = {kind: i for i, kind in enumerate(EVENT_COLOURS)}
    by_piece: dict[tuple[str, str], list[TimelineEvent]] = {}
    for event in events:
        by_piece.setdefault((event.kind, event.piece), []).append(event)
    keys = sorted(by_piece, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
    if len(keys) <= MAX_LANES:
        return {f"{kind} {piece}".strip(): (kind, by_piece[(kind, piece)]) for kind, piece in keys}
    lanes: dict[str, tuple[str, list[TimelineEvent]]] = {}
    for kind in dict.fromkeys(kind for kind, _piece in keys):
        pieces = [piece for k, piece in keys if k == kind]
        label = f"{kind} {', '.join(pieces[:3])}{'…' if len(pieces) > 3 else ''}"
        lanes[label] = (kind, [e for piece in pieces for e in by_piece[(kind, piece)]])
    return lanes


def run_timelines(result: Comparison) -> list[Picture]:
    """One timeline per run, the worst p99 e2e first."""
    budget = result.workload.get("budget_ms")
    worst = sorted(result.runs, key=lambda r: -r.e2e.p99_ms)
    return [run_timeline(run, budget) for run in worst[:MAX_TIMELINES]]


# -- the tail by hop -----------------------------------------------------------------------
def tail_by_hop(result: Comparison) -> Picture:
    runs = _points(result)
    figure, axes = _figure(1, 2, figsize=(13, 1.2 + 0.55 * len(runs)), sharey=True)
    rows = list(range(len(runs)))
    for ax, (name, key) in zip(axes, (("p50", "p50_ms"), ("p99", "p99_ms")), strict=True):
        left = [0.0] * len(runs)
        for hop in PATH_HOPS:
            widths = [getattr(run.hop(hop), key) for run in runs]
            ax.barh(rows, widths, left=left, color=HOP_COLOURS[hop], label=hop, height=0.6)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        e2e = [getattr(run.e2e, key) for run in runs]
        ax.plot(e2e, rows, linestyle="none", marker="|", markersize=18, color="black",
                markeredgewidth=2, label=f"e2e {name}")
        ax.set_title(f"hops at {name} (stacked), e2e {name} marked")
        ax.set_xlabel("ms")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].set_yticks(rows, [_label(run) for run in runs])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    for row, run in enumerate(runs):
        axes[1].annotate(_verdict_text(run), xy=(1.01, row), xycoords=("axes fraction", "data"),
                         va="center", fontsize=9)
    figure.suptitle("Where the time goes: each hop at p50 and at p99, and the verdict")
    return Picture("tail_by_hop", "The tail by hop", figure)


# -- sweep ---------------------------------------------------------------------------------
def sweep_curves(result: Comparison, sweep: Sweep) -> Picture:
    points = by_point(list(result.runs), lambda r: (r.topology, r.load))
    topologies = list(dict.fromkeys(topology for topology, _load in points))
    columns = min(2, len(topologies)) or 1
    rows = math.ceil(len(topologies) / columns) or 1
    figure, axes = _figure(rows, columns, figsize=(6.5 * columns, 3.8 * rows), squeeze=False)
    budget = result.workload.get("budget_ms")
    for ax, topology in zip(axes.flat, topologies, strict=False):
        runs = sorted((representative(rs) for (t, _l), rs in points.items() if t == topology),
                      key=lambda r: r.load or 0)
        loads = [r.load or 0 for r in runs]
        for hop in HOPS:
            ax.plot(loads, [r.hop(hop).p99_ms for r in runs], marker="o", markersize=3,
                    color=HOP_COLOURS[hop], label=f"{hop} p99",
                    linewidth=2 if hop == HopName.E2E else 1.2)
        if budget:
            ax.axhline(budget, color="black", linestyle="--", linewidth=1,
                       label=f"budget {budget:g} ms")
        knee = sweep.knees.get(topology)
        if knee:
            ax.axvline(knee.load, color="#d62728", linestyle=":", linewidth=1.5,
                       label=f"knee at {knee.load:g}")
            cause = Cause.of(knee.cause) or ""
            ax.annotate(f"{knee.culprit}: {cause}" if cause else "",
                        xy=(knee.load, 1.0), xycoords=("data", "axes fraction"), va="top",
                        ha="left", fontsize=8, xytext=(4, -4), textcoords="offset points",
                        color="#d62728")
        ax.set_title(f"{topology} ({sweep.layout})")
        ax.set_xlabel(sweep.axis)
        ax.set_ylabel("p99 ms")
        values = [p99 for r in runs for hop in HOPS if (p99 := r.hop(hop).p99_ms) > 0]
        if values and max(values) > 30 * min(values):  # a cliff: keep the baseline readable
            ax.set_yscale("log")
            ax.set_ylabel("p99 ms (log scale)")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(sorted(set(loads)))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        _cost_curves(ax, loads, runs)
    for ax in list(axes.flat)[len(topologies):]:
        ax.set_visible(False)
    figure.suptitle(f"p99 by hop against {sweep.axis}, the knee marked")
    return Picture("sweep", f"p99 by hop against {sweep.axis}", figure)


def _cost_curves(ax, loads: list[float], runs: list[RunRecord]) -> None:
    """Beside the latency curves, on an axis of its own: CPU ms per 1,000 deliveries of the
    broker and of the nodes at each load (what each point cost, not only how fast it was)."""
    cost_ax = None
    for key, label, colour in (("broker_per_1k_deliveries", "broker CPU ms/1k", "#8c564b"),
                               ("nodes_per_1k_deliveries", "nodes CPU ms/1k", "#7f7f7f")):
        values = [(load, getattr(run.cost, key) if run.cost else None)
                  for load, run in zip(loads, runs, strict=True)]
        values = [(load, v) for load, v in values if v is not None]
        if not values:
            continue
        cost_ax = cost_ax or ax.twinx()
        cost_ax.plot([load for load, _ in values], [v for _, v in values], linestyle="--",
                     marker="s", markersize=3, color=colour, linewidth=1, label=label)
    if cost_ax is not None:
        cost_ax.set_ylabel("CPU ms per 1,000 deliveries")
        cost_ax.set_ylim(bottom=0)
        cost_ax.legend(fontsize=7, loc="upper right")


# -- what a result gets, and where it goes ---------------------------------------------------
def pictures_of(result: Comparison) -> list[Picture]:
    """Every picture of a compare or sweep result, in the order the page shows them."""
    made = [sweep_curves(result, result.sweep)] if result.sweep else []
    made += [tail_by_hop(result), percentile_curves(result)]
    return made + run_timelines(result)


def _render(picture: Picture, kind: str) -> bytes:
    out = io.BytesIO()
    picture.figure.savefig(out, format=kind, dpi=110 if kind == "png" else None,
                           metadata={"Date": None} if kind == "svg" else None)
    return out.getvalue()


def write_pngs(result: Comparison, directory: Path) -> list[Path]:
    """Each picture as a PNG file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for picture in pictures_of(result):
        path = directory / f"{picture.stem}.png"
        path.write_bytes(_render(picture, "png"))
        written.append(path)
    return written


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
            "figure{margin:1.5em 0}figcaption{font-weight:bold;margin-bottom:.4em}"
            "svg{max-width:100%;height:auto}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def write_html(result: Comparison, path: Path) -> Path:
    """One self-contained page: every picture as inline SVG, then the verdicts."""
    if result.sweep:
        title = f"mqprobe sweep over {result.sweep.axis}"
    else:
        title = "mqprobe compare: where the time goes, per topology x layout"
    figures = "".join(
        f"<figure><figcaption>{html.escape(p.title)}</figcaption>"
        f"{_inline_svg(_render(p, 'svg'))}</figure>" for p in pictures_of(result))
    verdicts = "".join(
        f"<li><b>{html.escape(_label(r))}</b>: "
        f"{html.escape(r.verdict.culprit)} - {html.escape(r.verdict.cause_text)}</li>"
        for r in result.runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, figures + f"<h2>Verdicts</h2><ul>{verdicts}</ul>"))
    return path


def _inline_svg(svg: bytes) -> str:
    """The SVG element alone (no XML prolog or doctype), to sit inside the page."""
    text = svg.decode()
    return text[text.index("<svg"):]


# -- HDR logs ------------------------------------------------------------------------------
def export_hdr_logs(result: Comparison, directory: Path) -> list[Path]:
    """One .hlog per run and hop (values in microseconds; max column in ms), named like
    the run's pictures: a repeat's number keeps it from overwriting the one before."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for run in result.runs:
        for hop, encoded in run.hdr.items():
            path = directory / f"{_stem(run)}_{hop}.hlog"
            with open(path, "w") as out:
                writer = HistogramLogWriter(out)
                writer.output_comment(f"mqprobe {result.mqprobe_version} hop {hop}, "
                                      "values in microseconds")
                writer.output_log_format_version()
                writer.output_legend()
                writer.output_interval_histogram(HdrHistogram.decode(encoded), 0, 0, 1000.0)
            written.append(path)
    return written

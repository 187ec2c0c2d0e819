"""Pictures of a result: a self-contained HTML page (inline SVG, no scripts, no network),
and HDR histogram logs that the standard HdrHistogram tools read."""

from __future__ import annotations

import html
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

HOP_COLOURS = {"mq": "#d9534f", "server": "#f0ad4e", "delivery": "#5bc0de"}
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def export_hdr_logs(result: dict, directory: Path) -> list[Path]:
    """One .hlog per run and hop (values in microseconds; max column in ms)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for run in result["runs"]:
        load = f"_{run['load']:g}" if "load" in run else ""
        for hop, encoded in run.get("hdr", {}).items():
            path = directory / f"{run['topology']}_{run['layout']}{load}_{hop}.hlog"
            with open(path, "w") as out:
                writer = HistogramLogWriter(out)
                writer.output_comment(f"mqprobe {result.get('mqprobe_version')} hop {hop}, "
                                      "values in microseconds")
                writer.output_log_format_version()
                writer.output_legend()
                writer.output_interval_histogram(HdrHistogram.decode(encoded), 0, 0, 1000.0)
            written.append(path)
    return written


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}text{font-size:12px}"
            "</style></head><body>" f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def compare_svg(result: dict) -> str:
    """Per run, the p50 of each hop stacked (mq, server, delivery), with the e2e p99 marked."""
    runs = result["runs"]
    width, bar, gap, left = 900, 22, 10, 230
    scale_max = max([r["hops"]["e2e"]["p99_ms"] for r in runs] + [0.001])
    height = len(runs) * (bar + gap) + 60
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"]
    plot = width - left - 20
    for i, run in enumerate(runs):
        y = 20 + i * (bar + gap)
        parts.append(f"<text x='4' y='{y + 15}'>{html.escape(run['topology'])} / "
                     f"{html.escape(run['layout'])}</text>")
        x = left
        bars = run.get("clocks", {}).get("hop_uncertainty_ms", {})
        for hop, colour in HOP_COLOURS.items():
            value = run["hops"][hop]["p50_ms"]
            w = plot * value / scale_max
            clock = f" ±{bars[hop]:g} ms (clocks)" if bars.get(hop) else ""
            parts.append(f"<rect x='{x:.1f}' y='{y}' width='{w:.1f}' height='{bar}' "
                         f"fill='{colour}'><title>{hop} p50 {value} ms{clock}</title></rect>")
            x += w
        p99 = run["hops"]["e2e"]["p99_ms"]
        px = left + plot * p99 / scale_max
        parts.append(f"<line x1='{px:.1f}' x2='{px:.1f}' y1='{y - 2}' y2='{y + bar + 2}' "
                     f"stroke='black' stroke-width='2'><title>e2e p99 {p99} ms</title></line>")
        parts.append(f"<text x='{min(px + 4, width - 60):.1f}' y='{y + 15}'>{p99:g} ms</text>")
    legend_y = height - 20
    for j, (hop, colour) in enumerate(HOP_COLOURS.items()):
        parts.append(f"<rect x='{left + j * 140}' y='{legend_y - 10}' width='12' height='12' "
                     f"fill='{colour}'/><text x='{left + j * 140 + 16}' y='{legend_y}'>"
                     f"{hop} p50</text>")
    parts.append(f"<text x='{left + 3 * 140}' y='{legend_y}'>| black line: e2e p99</text></svg>")
    return "".join(parts)


def sweep_svg(result: dict) -> str:
    """p99 e2e against load, one line per topology; the knee is circled."""
    sweep = result["sweep"]
    values = sweep["values"]
    width, height, left, bottom = 900, 420, 60, 40
    runs = result["runs"]
    top = max([r["hops"]["e2e"]["p99_ms"] for r in runs] + [0.001])
    lo, hi = min(values), max(values)

    def xy(load: float, ms: float) -> tuple[float, float]:
        x = left + (width - left - 20) * ((load - lo) / (hi - lo) if hi > lo else 0.5)
        return x, height - bottom - (height - bottom - 20) * ms / top

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>",
             f"<line x1='{left}' y1='{height - bottom}' x2='{width - 20}' y2='{height - bottom}' "
             "stroke='black'/>",
             f"<line x1='{left}' y1='20' x2='{left}' y2='{height - bottom}' stroke='black'/>",
             f"<text x='{width / 2}' y='{height - 8}'>{sweep['axis']}</text>",
             f"<text x='4' y='14'>p99 e2e ms (max {top:g})</text>"]
    for value in values:
        x, _ = xy(value, 0)
        parts.append(f"<text x='{x - 6:.1f}' y='{height - bottom + 16}'>{value:g}</text>")
    topologies = list(dict.fromkeys(r["topology"] for r in runs))
    for i, name in enumerate(topologies):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        points = [(r["load"], r["hops"]["e2e"]["p99_ms"]) for r in runs if r["topology"] == name]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in points))
        parts.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>")
        knee = sweep.get("knees", {}).get(name)
        if knee:
            p99 = next(ms for load, ms in points if load == knee["load"])
            x, y = xy(knee["load"], p99)
            parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='7' fill='none' stroke='{colour}'>"
                         f"<title>knee: {html.escape(knee['cause'])}</title></circle>")
        parts.append(f"<text x='{left + 10}' y='{34 + 16 * i}' fill='{colour}'>"
                     f"{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def write_html(result: dict, path: Path) -> Path:
    if "sweep" in result:
        title, svg = f"mqprobe sweep over {result['sweep']['axis']}", sweep_svg(result)
    else:
        title, svg = "mqprobe compare: where the time goes, per topology x layout", compare_svg(result)
    verdicts = "".join(
        f"<li><b>{html.escape(r['topology'])}/{html.escape(r['layout'])}"
        f"{' @ ' + format(r['load'], 'g') if 'load' in r else ''}</b>: "
        f"{html.escape(r['verdict']['culprit'])} - {html.escape(r['verdict']['cause'])}</li>"
        for r in result["runs"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(title, svg + f"<h2>Verdicts</h2><ul>{verdicts}</ul>"))
    return path

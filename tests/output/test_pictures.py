"""Each kind of picture, drawn from saved results of this machine (a default compare and a
small sweep, made by the commands in tests/data/README.md): the file is written, and each
figure holds the series of the result it was drawn from. No broker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mqprobe.model import HOPS
from mqprobe.output.pictures import (
    MAX_TIMELINES,
    PicturesUnavailable,
    check_available,
    percentile_curves,
    pictures_of,
    run_timelines,
    sweep_curves,
    tail_by_hop,
    write_html,
    write_pngs,
)
from mqprobe.output.report import load_result, verdict_cell
from mqprobe.result import Comparison

from ..conftest import REPO, run_cli

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def saved_compare() -> Comparison:
    return load_result(DATA / "compare_result.json")


@pytest.fixture(scope="module")
def saved_sweep() -> Comparison:
    return load_result(DATA / "sweep_result.json")


def _label(run: dict) -> str:
    return f"{run['topology']} / {run['layout']}"


def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_percentile_curves_draw_each_runs_histogram_per_hop_with_the_budget(saved_compare):
    figure = percentile_curves(saved_compare).figure
    panels = figure.axes[:4]
    assert [ax.get_title().split(":")[0] for ax in panels] == list(HOPS)
    budget = f"budget {saved_compare.workload['budget_ms']:g} ms"
    for ax in panels:
        assert set(_lines(ax)) - {budget} == {_label(r) for r in saved_compare.to_json()["runs"]}
        assert [t.get_text() for t in ax.get_xticklabels()] == [
            "50%", "90%", "99%", "99.9%", "99.99%"]
    assert budget in _lines(panels[3])
    for run in saved_compare.to_json()["runs"]:  # the curve at 99% is the run's own p99, hop by hop
        for ax, hop in zip(panels, HOPS, strict=True):
            xs, ys = _lines(ax)[_label(run)].get_data()
            at_99 = min(range(len(xs)), key=lambda i: abs(xs[i] - 100))
            assert ys[at_99] == pytest.approx(run["hops"][hop]["p99_ms"], rel=0.02, abs=0.002)


def test_a_timeline_per_run_worst_first_with_its_series_and_recorded_intervals(saved_compare):
    pictures = run_timelines(saved_compare)
    runs = sorted(saved_compare.to_json()["runs"], key=lambda r: -r["hops"]["e2e"]["p99_ms"])
    assert len(pictures) == min(MAX_TIMELINES, len(runs))
    for picture, run in zip(pictures, runs, strict=False):
        top, lanes, queued, links, cpu = picture.figure.axes
        assert top.get_title(loc="left").startswith(_label(run))
        rows = run["timeline"]["e2e"]["rows"]
        assert len(rows) >= 40  # 5 s of publishing in 100 ms buckets
        _xs, p99 = _lines(top)["e2e p99"].get_data()
        assert list(p99) == [row[3] for row in rows]
        expected = {f"{e['kind']} {e['piece']}" for e in run["timeline"]["events"]}
        assert {t.get_text() for t in lanes.get_yticklabels()} == expected
        assert len(lanes.collections) == len(expected)  # one band series per lane
        ready = run["timeline"]["queue_ready"]["rows"]
        assert list(queued.get_lines()[0].get_data()[1]) == [row[1] for row in ready]
        # a line per AMQP link, its round trip at each ping
        measured = (run["timeline"].get("links") or {}).get("nodes") or {}
        assert {f"{link} AMQP" for link in measured} <= set(_lines(links))
        for link, rows in measured.items():
            assert list(_lines(links)[f"{link} AMQP"].get_data()[1]) == [r[1] for r in rows]
        if not measured:
            assert [t.get_text() for t in links.texts] == ["no link round trips measured"]
        assert cpu.get_xlabel() == "seconds since the first publish"
        # a CPU line per piece, in cores: ms of CPU over each sample's length
        series = run["cpu"]["series"]
        assert set(_lines(cpu)) == set(series["columns"][1:])
        piece = series["columns"][1]
        t, cores = _lines(cpu)[piece].get_data()
        first, second = series["rows"][0], series["rows"][1]
        assert cores[1] == pytest.approx(second[1] / (second[0] - first[0]))


def test_the_tail_by_hop_stacks_each_hop_at_p50_and_p99_beside_the_verdict(saved_compare):
    figure = tail_by_hop(saved_compare).figure
    runs = saved_compare.to_json()["runs"]
    for ax, key in zip(figure.axes, ("p50_ms", "p99_ms"), strict=True):
        bars = ax.patches
        assert len(bars) == 3 * len(runs)
        for i, hop in enumerate(("mq", "server", "delivery")):
            widths = [bar.get_width() for bar in bars[i * len(runs):(i + 1) * len(runs)]]
            assert widths == pytest.approx([run["hops"][hop][key] for run in runs])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == [_label(r) for r in runs]
    said = [verdict_cell(r)[0] for r in saved_compare.runs]
    assert [t.get_text() for t in figure.axes[1].texts] == said


def test_the_sweep_draws_p99_by_hop_against_load_with_the_knee(saved_sweep):
    figure = sweep_curves(saved_sweep, saved_sweep.sweep).figure
    topologies = list(dict.fromkeys(r["topology"] for r in saved_sweep.to_json()["runs"]))
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]
    costs = [ax for ax in figure.axes if ax.get_ylabel() == "CPU ms per 1,000 deliveries"]
    assert [ax.get_title().split(" (")[0] for ax in panels] == topologies
    assert len(costs) == len(topologies)  # what each point cost, beside how fast it was
    knees = saved_sweep.to_json()["sweep"]["knees"]
    for ax, cost_ax, topology in zip(panels, costs, topologies, strict=True):
        ordered = sorted((r for r in saved_sweep.to_json()["runs"] if r["topology"] == topology),
                         key=lambda r: r["load"])
        _loads, broker = _lines(cost_ax)["broker CPU ms/1k"].get_data()
        assert list(broker) == [r["cost"]["broker_per_1k_deliveries"] for r in ordered]
        runs = sorted((r for r in saved_sweep.to_json()["runs"] if r["topology"] == topology),
                      key=lambda r: r["load"])
        lines = _lines(ax)
        for hop in HOPS:
            loads, p99 = lines[f"{hop} p99"].get_data()
            assert list(loads) == [r["load"] for r in runs]
            assert list(p99) == [r["hops"][hop]["p99_ms"] for r in runs]
        assert ax.get_xlabel() == saved_sweep.to_json()["sweep"]["axis"]
        knee = knees.get(topology)
        assert (f"knee at {knee['load']:g}" in lines) == bool(knee)


def test_the_page_is_one_file_with_every_picture_inline_and_nothing_fetched(saved_compare, tmp_path):
    page = write_html(saved_compare, tmp_path / "page.html").read_text()
    assert page.count("<svg") == len(pictures_of(saved_compare)) == 2 + len(saved_compare.to_json()["runs"])
    assert "<script" not in page
    assert not re.findall(r"""(?:href|src)=["']https?:""", page)
    assert "Percentile curves per hop" in page and "The tail by hop" in page


def test_pngs_of_a_sweep_are_written_one_per_picture(saved_sweep, tmp_path):
    written = write_pngs(saved_sweep, tmp_path / "png")
    assert written[0].name == "sweep.png"
    assert {p.name for p in written} >= {"sweep.png", "tail_by_hop.png", "percentiles.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


@pytest.mark.integration  # matplotlib in a process of its own: seconds
def test_report_draws_a_saved_result_again(saved_compare, tmp_path):
    # the command's wiring, on one run of the saved compare (each picture's own drawing is
    # tested above): three pictures, not a sweep's dozen twice over
    one_run = tmp_path / "one.json"
    one_run.write_text(json.dumps({**saved_compare.to_json(), "runs": saved_compare.to_json()["runs"][:1]}))
    result = run_cli("report", str(one_run), "--html", str(tmp_path / "p.html"),
                     "--png", str(tmp_path / "png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.html").read_text().count("<svg") == 3
    assert len(list((tmp_path / "png").glob("*.png"))) == 3


def test_without_matplotlib_pictures_are_one_sentence_before_anything_starts(monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(PicturesUnavailable, match=r"pip install 'mqprobe\[pictures\]'"):
        check_available()
    script = ("import sys; sys.modules['matplotlib'] = None; from mqprobe.cli import main; "
              "sys.argv = ['mqprobe', 'compare', '--png', 'x', '--amqp-url', "
              "'amqp://127.0.0.1:1/']; main()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pictures need matplotlib" in done.stderr  # not the unreachable broker: it came first


def test_hdr_logs_of_repeats_are_one_file_each_never_overwritten(saved_compare, tmp_path):
    """--repeat N --hdr-dir DIR: each repeat's logs keep its number (they overwrote each
    other before)."""
    import copy

    from mqprobe.output.pictures import export_hdr_logs

    run = saved_compare.to_json()["runs"][0]
    repeats = {"runs": [{**copy.deepcopy(run), "repeat": n} for n in (1, 2, 3)]}
    written = export_hdr_logs(Comparison.from_json(repeats), tmp_path)
    assert len(written) == len(set(written)) == 3 * len(run["hdr"])
    assert {p.name for p in written} >= {f"{run['topology']}_{run['layout']}_r{n}_e2e.hlog"
                                         for n in (1, 2, 3)}

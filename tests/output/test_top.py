"""`mqprobe top` reads what embedded Tracers export: parsed without a broker, then live
against the example chat server (real python-socketio, real RabbitMQ) under load."""

from __future__ import annotations

import time

from mqprobe.embed import Tracer
from mqprobe.output.top import parse, rates

from ..conftest import run_cli
from ..embed.test_embed import _chat_server


def _loaded_tracer(node: str, messages: int) -> Tracer:
    tracer = Tracer(node)
    for i in range(messages):
        trace = tracer.consumed(tracer.publish_headers(str(i % 3)))
        tracer.event_data(trace, {"text": "x"})
        tracer.emitted(trace)
    return tracer


def test_a_scrape_is_read_into_one_view_per_node():
    text = b"".join(_loaded_tracer(node, 30).metrics_text()[0] for node in ("a", "b"))
    views = {v.node: v for v in parse(text.decode(), "http://x/metrics", at=1.0)}
    assert set(views) == {"a", "b"}
    view = views["a"]
    assert view.counts["traced"] == 30 and view.counts["published"] == 30
    assert set(view.hops) == {"mq", "server", "fanout"}
    assert set(view.hops["mq"]) == {"0.5", "0.9", "0.99", "0.999", "1"}
    assert set(view.groups) == {"0", "1", "2"} and view.group_messages["0"] == 10
    later = parse(_loaded_tracer("a", 50).metrics_text()[0].decode(), "http://x/metrics", 3.0)
    assert rates(later[0], view)["traced"] == 10.0  # (50 - 30) over 2 s


def test_top_shows_live_nodes_and_groups_and_says_which_url_did_not_answer(broker, tmp_path):
    with _chat_server(broker.amqp_url) as url:
        load = run_cli("publish", "--prefix", "chat.", "--groups", "1,2", "--rate", "50",
                       "--duration", "2", amqp_url=broker.amqp_url, timeout=60)
        assert load.returncode == 0, load.stderr
        time.sleep(0.5)
        result = run_cli("top", "--once", "--interval", "0.5", "--metrics-url",
                         f"{url}/metrics,http://127.0.0.1:9/metrics", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    node_row = next(line for line in out.splitlines() if "chat-t" in line and "│" in line)
    cells = [c.strip() for c in node_row.split("│")[1:-1]]
    assert cells[0] == "chat-t" and cells[2] == "0"  # nothing untraced
    assert all("/" in cell for cell in cells[5:8])  # mq, server, fanout p50/p99
    groups_table = out[out.index("busiest groups"):]
    group_rows = [line for line in groups_table.splitlines() if "chat-t" in line]
    assert {row.split("│")[2].strip() for row in group_rows} == {"1", "2"}
    assert {row.split("│")[3].strip() for row in group_rows} == {"100"}  # 50/s x 2 s each
    assert "http://127.0.0.1:9/metrics: no answer" in out


def test_top_refuses_what_is_not_a_url():
    result = run_cli("top", "--metrics-url", "file:///etc/passwd", "--once")
    assert result.returncode == 1 and "--metrics-url must look like http://" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_exporter_using_our_names_is_one_sentence_not_a_crash():
    import pytest

    from mqprobe.errors import InputError

    foreign = "# TYPE mqprobe_hop_quantile_ms gauge\nmqprobe_hop_quantile_ms{node=\"x\"} 1.0\n"
    with pytest.raises(InputError, match="without the label 'hop'"):
        parse(foreign, "http://u:secret@h/metrics", at=0.0)

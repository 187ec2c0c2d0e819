"""What an embedding server exports: histograms that stay within their stated precision,
a per-group table that stays bounded, sampling that publisher and consumer agree on, the
Prometheus text a scraper reads, and OpenTelemetry spans when the host records them.
No broker: the Tracer is driven with the headers it would meet."""

from __future__ import annotations

import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqprobe.embed import Tracer
from mqprobe.embed.metrics import MAX_GROUPS, OTHER, FastHistogram, GroupTable


def _exact(values: list[int], percentile: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-percentile * len(ordered) // 100))
    return ordered[int(rank) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_one_percent_of_the_exact_ones(seed):
    rng = random.Random(seed)
    values_ns = [int(rng.lognormvariate(14, 1.5)) for _ in range(20_000)]  # ~1 ms, long tail
    histogram = FastHistogram()
    for value in values_ns:
        histogram.record(value)
    points = (50.0, 90.0, 99.0, 99.9, 100.0)
    for got, percentile in zip(histogram.percentiles_ms(points), points, strict=True):
        exact_ms = _exact([v // 1000 for v in values_ns], percentile) / 1000
        assert got == pytest.approx(exact_ms, rel=0.01, abs=0.001), percentile
    assert histogram.summary()["max_ms"] == round(max(values_ns) / 1e6, 3)


def test_cumulative_buckets_count_what_is_at_most_each_bound():
    histogram = FastHistogram()
    for ms in (0.05, 0.3, 0.9, 4.0, 4.9, 30.0, 700.0, 90_000.0):  # the last: past a minute
        histogram.record(int(ms * 1e6))
    assert histogram.cumulative_ms((0.1, 1.0, 5.0, 50.0, 1000.0)) == [1, 3, 5, 6, 7]
    histogram.record(-5)  # clock skew: counted, never a latency
    assert histogram.negative == 1 and histogram.total == 8


def test_the_group_table_is_bounded_and_follows_the_traffic():
    table = GroupTable(limit=4)
    for group in ("a", "b", "c", "d"):
        table.for_group(group)["mq"].record(1_000_000)
    for _ in range(10):  # "e" arrives when the table is full: "other", until it is busy
        hops = table.for_group("e")
    assert "e" in table.tables and hops is table.tables["e"]
    assert len(table.tables) == 4
    assert table.other["mq"].total == 1  # the quiet group's figures went to "other"
    for i in range(10_000):
        table.for_group(f"many{i}")
    assert len(table.tables) == 4 and len(table.traffic) <= 8 * 4
    assert [name for name, _hops in table.items()][-1] == OTHER


def test_sampling_is_decided_by_trace_id_alike_on_both_sides():
    publisher, consumer = Tracer("pub", sample=0.1), Tracer("sub", sample=0.1)
    traced = 0
    for _ in range(5_000):
        headers = publisher.publish_headers("7")
        trace = consumer.consumed(headers)
        assert (trace is not None) == ("x-mqprobe" in headers)
        traced += trace is not None
    assert 350 < traced < 650  # one in ten
    assert consumer.unsampled == 5_000 - traced and consumer.untraced == 0
    assert publisher.published == traced


def test_a_host_traceparent_is_continued_and_decides_the_sampling():
    tracer = Tracer("n1", sample=0.5)
    kept = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # last 32 bits: 0x1c80319c
    headers = tracer.publish_headers("1", {"traceparent": kept})
    assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert ("x-mqprobe" in headers) == (0x1C80319C < 0x8000_0000)


def test_sample_is_checked():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sample"):
            Tracer("n1", sample=bad)


def _families(tracer: Tracer) -> dict:
    body, content_type = tracer.metrics_text()
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_prometheus_text_has_hops_groups_counts_and_pauses():
    tracer = Tracer("chat-1")
    for i in range(200):
        trace = tracer.consumed(tracer.publish_headers(str(i % 40)),
                                t_deq=None)
        tracer.event_data(trace, {"text": "hi"})
        tracer.emitted(trace)
    tracer.consumed({"x-mqprobe": "9;nope"})  # foreign: untraced, with its reason
    families = _families(tracer)
    latency = families["mqprobe_hop_latency_ms"]
    counts = {s.labels["hop"]: s.value for s in latency.samples
              if s.name.endswith("_count")}
    assert counts == {"mq": 200, "server": 200, "fanout": 200}
    quantiles = {(s.labels["hop"], s.labels["quantile"]) for s in
                 families["mqprobe_hop_quantile_ms"].samples}
    assert ("mq", "0.99") in quantiles and ("fanout", "1") in quantiles
    groups = {s.labels["group"] for s in families["mqprobe_group_quantile_ms"].samples}
    assert len(groups) == MAX_GROUPS + 1 and OTHER in groups  # 40 groups: 32 and "other"
    traced = families["mqprobe_traced"].samples[0]
    assert traced.value == 200 and traced.labels == {"node": "chat-1"}
    (untraced,) = families["mqprobe_untraced"].samples
    assert "version" in untraced.labels["reason"] and untraced.value == 1
    assert "mqprobe_gc_pauses" in families and "mqprobe_loop_stall_longest_ms" in families


def test_seq_gaps_count_what_a_group_never_received():
    publisher, consumer = Tracer("pub"), Tracer("sub")
    for i in range(10):
        headers = publisher.publish_headers("3")
        if i not in (4, 5, 8):
            consumer.consumed(headers)
    assert consumer.seq_gaps == 3


def test_a_listener_records_delivery_and_e2e():
    node, listener = Tracer("n1"), Tracer("listener")
    trace = node.consumed(node.publish_headers("5"))
    event = node.event_data(trace, {"text": "x"})
    assert listener.received(event) is not None
    assert listener.received({"text": "no field"}) is None
    assert set(listener.hops) == {"delivery", "e2e"} and listener.untraced == 1


def test_the_hops_join_the_hosts_opentelemetry_span_with_a_link_to_the_producer():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer("n1")
    headers = tracer.publish_headers("5")
    with provider.get_tracer("host").start_as_current_span("consume"):
        trace = tracer.consumed(headers)
        tracer.event_data(trace, {"text": "x"})
        tracer.emitted(trace)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["mqprobe.group"] == "5" and "mqprobe.mq_ms" in span.attributes
    (link,) = span.links
    _v, trace_id, parent, _flags = headers["traceparent"].split("-")
    assert f"{link.context.trace_id:032x}" == trace_id
    assert f"{link.context.span_id:016x}" == parent
    (event,) = span.events
    assert event.name == "mqprobe.emitted" and "mqprobe.fanout_ms" in event.attributes


def test_without_a_recording_span_nothing_changes():
    tracer = Tracer("n1")
    trace = tracer.consumed(tracer.publish_headers("5"))  # no span is current
    assert trace is not None and tracer.traced == 1


def test_the_same_figures_as_opentelemetry_metrics():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("host")
    tracer = Tracer("n1")
    for i in range(50):
        trace = tracer.consumed(tracer.publish_headers(str(i % 2)))
        tracer.event_data(trace, {})
        tracer.emitted(trace)
    tracer.otel_metrics(meter)
    data = reader.get_metrics_data()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert {"mqprobe.hop.latency", "mqprobe.group.latency", "mqprobe.traced"} <= set(metrics)
    hops = {(p.attributes["hop"], p.attributes["quantile"]): p.value
            for p in metrics["mqprobe.hop.latency"].data.data_points}
    assert hops[("mq", "0.99")] == tracer.hops["mq"].percentiles_ms((99.0,))[0]
    (traced,) = metrics["mqprobe.traced"].data.data_points
    assert traced.value == 50


def test_metrics_on_a_port_of_their_own_listen_on_loopback():
    import asyncio
    import urllib.request

    async def scenario() -> tuple[str, bytes]:
        tracer = Tracer("n1")
        tracer.consumed(tracer.publish_headers("1"))
        runner = await tracer.serve_metrics(0)
        try:
            host, port = runner.addresses[0][:2]
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read())
            return host, body
        finally:
            await runner.cleanup()

    host, body = asyncio.run(scenario())
    assert host == "127.0.0.1"
    assert b'mqprobe_traced_total{node="n1"} 1.0' in body

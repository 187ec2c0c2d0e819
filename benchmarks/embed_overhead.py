"""What mqprobe.embed adds per message to a host server, in microseconds (no I/O timed),
beside what an OpenTelemetry SDK span per hop costs, measured in the same run.

    .venv/bin/python benchmarks/embed_overhead.py     (needs opentelemetry-sdk for the last)

Traced (sample=1.0), each step also records its hop in the per-hop and per-group
histograms the metrics export:
publish: Tracer.publish_headers (trace id, traceparent, x-mqprobe header)
consume: Tracer.consumed (parse and validate both headers, stamp t_deq, record mq)
emit:    Tracer.event_data + Tracer.emitted (stamp t_emit, build the field, record server
         and fan-out)
Left out by sampling (sample=0.01, 99 messages in 100):
publish: a traceparent with flags 00 only; consume: read its trace id, count it
OpenTelemetry: a span started and ended per hop (mq, server, fanout) with the same
attributes, on an SDK TracerProvider with no exporter (its cheapest set-up).
"""

from __future__ import annotations

import json
import platform
import timeit

from mqprobe.embed import Tracer


def per_call_us(statement, number: int = 50_000, repeat: int = 5) -> float:
    return min(timeit.repeat(statement, number=number, repeat=repeat)) / number * 1e6


def otel_span_per_hop_us() -> float | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    tracer = TracerProvider().get_tracer("bench")

    def three_spans() -> None:
        for hop in ("mq", "server", "fanout"):
            with tracer.start_as_current_span(hop) as span:
                span.set_attributes({"mqprobe.group": "17", "mqprobe.seq": 1})

    return per_call_us(three_spans, number=20_000)


def main() -> None:
    tracer = Tracer("bench")
    headers = tracer.publish_headers("17")
    data = {"group": "17", "text": "hello"}

    def emit_side() -> None:
        trace = tracer.consumed(headers)
        tracer.event_data(trace, data)
        tracer.emitted(trace)

    consume = per_call_us(lambda: tracer.consumed(headers))
    foreign = Tracer("bench")
    sampling = Tracer("bench", sample=0.01)
    left_out = next(h for h in iter(lambda: sampling.publish_headers("17"), None)
                    if "x-mqprobe" not in h)
    report = {
        "machine": f"{platform.machine()}, CPython {platform.python_version()}",
        "publish_us": round(per_call_us(lambda: tracer.publish_headers("17")), 2),
        "consume_us": round(consume, 2),
        "emit_us": round(per_call_us(emit_side) - consume, 2),
        "untraced_consume_us": round(per_call_us(lambda: foreign.consumed({"x": 1})), 2),
        "unsampled_publish_us": round(per_call_us(lambda: sampling.publish_headers("17")), 2),
        "unsampled_consume_us": round(per_call_us(lambda: sampling.consumed(left_out)), 2),
    }
    report["total_us"] = round(report["publish_us"] + report["consume_us"] + report["emit_us"], 2)
    otel = otel_span_per_hop_us()
    if otel is not None:
        report["otel_span_per_hop_us"] = round(otel, 2)
        report["otel_vs_traced"] = round(otel / report["total_us"], 1)
        report["otel_vs_sampled_1pc"] = round(
            otel / (0.01 * report["total_us"] + 0.99 * (report["unsampled_publish_us"]
                                                        + report["unsampled_consume_us"])), 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

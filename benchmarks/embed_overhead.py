"""What mqprobe.embed adds per message to a host server, in microseconds (no I/O timed).

    .venv/bin/python benchmarks/embed_overhead.py

publish: Tracer.publish_headers (trace id, traceparent, x-mqprobe header)
consume: Tracer.consumed (parse and validate both headers, stamp t_deq)
emit:    Tracer.event_data + Tracer.emitted (stamp t_emit, build the field, record fan-out)
"""

from __future__ import annotations

import json
import platform
import timeit

from mqprobe.embed import Tracer


def per_call_us(statement, number: int = 50_000, repeat: int = 5) -> float:
    return min(timeit.repeat(statement, number=number, repeat=repeat)) / number * 1e6


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
    report = {
        "machine": f"{platform.machine()}, CPython {platform.python_version()}",
        "publish_us": round(per_call_us(lambda: tracer.publish_headers("17")), 2),
        "consume_us": round(consume, 2),
        "emit_us": round(per_call_us(emit_side) - consume, 2),
        "untraced_consume_us": round(per_call_us(lambda: foreign.consumed({"x": 1})), 2),
    }
    report["total_us"] = round(report["publish_us"] + report["consume_us"] + report["emit_us"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

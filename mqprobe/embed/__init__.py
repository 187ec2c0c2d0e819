"""What a user's server imports to carry mqprobe's trace: `Tracer` (tracer.py) stamps a
message at publish, dequeue and emit; metrics.py keeps the hop timings in cheap histograms
and exports them (Prometheus text, OpenTelemetry). Nothing here needs the command line,
rich or matplotlib."""

from mqprobe.embed.tracer import Trace, Tracer

__all__ = ["Trace", "Tracer"]

"""Carry mqprobe's trace through your own socket.io + RabbitMQ server in a few lines.

    tracer = Tracer(node="chat-1")

    # publishing (aio-pika or pika): stamp t_pub
    aio_pika.Message(body, headers=tracer.publish_headers(group))
    pika.BasicProperties(headers=tracer.publish_headers(group))

    # consuming: stamp t_deq (None when the message carries no valid trace)
    trace = tracer.consumed(message.headers)

    # emitting to the room: stamps t_emit, adds the trace field, times the emit (fan-out)
    await tracer.emit(sio, "message", {"text": text}, room=f"group.{group}", trace=trace)

    # optional, from inside the running loop (e.g. on start-up): garbage collections over
    # 1 ms and event-loop stalls over 5 ms, as timed intervals (tracer.pauses())
    tracer.watch_pauses()

Nothing here raises into the host server because of what arrives: a malformed or foreign
header makes the message go on untraced, and it is counted (`tracer.stats()`). W3C
`traceparent` stays compatible with OpenTelemetry: an existing one is continued.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from mqprobe.records import Latency, LoopLagMonitor
from mqprobe.stamps import (
    SOCKETIO_FIELD,
    PublishStamp,
    TraceFormatError,
    check_id,
    decode_amqp_headers,
    encode_amqp_headers,
    new_trace_id,
    now_ns,
    socketio_field,
)
from mqprobe.timeline import EventKind, Recorder

_MAX_REASONS = 32  # distinct reasons kept; the rest are counted together
_MAX_REASON_CHARS = 200


@dataclass(slots=True)
class Trace:
    """One consumed message's stamps so far."""

    stamp: PublishStamp
    t_deq: int
    t_emit: int = 0

    @property
    def group(self) -> str:
        return self.stamp.group


class Tracer:
    """Stamps and counters for one server process (one node)."""

    def __init__(self, node: str = "node") -> None:
        self.node = check_id("node", node)
        self.published = 0
        self.traced = 0
        self.untraced = 0
        self.untraced_reasons: Counter[str] = Counter()
        self.fanout = Latency()
        self._seq: defaultdict[str, itertools.count] = defaultdict(itertools.count)
        self.timeline = Recorder(self.node, limit=10_000)
        self._loop_lag: LoopLagMonitor | None = None

    def watch_pauses(self) -> None:
        """Record this process's GC pauses (over 1 ms) and event-loop stalls (over 5 ms) as
        intervals, the way mqprobe's own pieces do. Call it inside the running event loop;
        it costs one short wake-up every 10 ms and a callback per collection."""
        self.timeline.watch_gc()
        if self._loop_lag is None:
            self._loop_lag = LoopLagMonitor(timeline=self.timeline)
            self._loop_lag.start()

    def stop_watching(self) -> None:
        self.timeline.unwatch_gc()
        if self._loop_lag:
            self._loop_lag.stop()
            self._loop_lag = None

    def pauses(self) -> list[dict]:
        """The recorded GC pauses and loop stalls: kind, start_ns, end_ns (CLOCK_REALTIME,
        like the stamps) and what was measured through them (generation, cpu_share)."""
        return [{"kind": e.kind.value, "start_ns": e.start_ns, "end_ns": e.end_ns, **e.detail}
                for e in self.timeline.events]

    def publish_headers(self, group: str | int, headers: dict | None = None) -> dict:
        """Headers for an outgoing AMQP message to `group`; existing headers are kept.

        The sequence number counts per group in this process. A group id that cannot travel
        in a header leaves the message untraced (counted), never an exception.
        """
        if headers is not None and not isinstance(headers, Mapping):
            self.count_untraced(TraceFormatError(
                f"headers are a {type(headers).__name__}, not a mapping"))
            return headers  # theirs, untouched
        group = str(group)
        try:
            check_id("group", group)
        except TraceFormatError as exc:
            self.count_untraced(exc)
            return dict(headers or {})
        t_pub = now_ns()
        stamp = PublishStamp(new_trace_id(), group, next(self._seq[group]), t_pub, t_pub)
        self.published += 1
        return encode_amqp_headers(stamp, headers)

    def consumed(self, headers: dict | None, t_deq: int | None = None) -> Trace | None:
        """Stamp t_deq for a message just taken off the broker; None if it is untraced.

        Pass `t_deq` when the message was stamped on arrival and handled later."""
        t_deq = t_deq or now_ns()
        try:
            stamp = decode_amqp_headers(headers)
        except TraceFormatError as exc:
            self.count_untraced(exc)
            return None
        self.traced += 1
        return Trace(stamp, t_deq)

    def event_data(self, trace: Trace | None, data: dict) -> dict:
        """The event's object with the trace field first (stamps t_emit); as-is if untraced."""
        if trace is None or not isinstance(data, dict):
            return data  # untraced, or not an object a field can join: sent as it is
        trace.t_emit = now_ns()
        field = socketio_field(trace.stamp, self.node, trace.t_deq, trace.t_emit)
        return {SOCKETIO_FIELD: field, **{k: v for k, v in data.items() if k != SOCKETIO_FIELD}}

    def emitted(self, trace: Trace | None) -> int:
        """Record how long the emit took since t_emit (fan-out); returns it in ns."""
        if trace is None or not trace.t_emit:
            return 0
        took = now_ns() - trace.t_emit
        self.fanout.record(took)
        return took

    async def emit(self, sio, event: str, data: dict, *, room: str, trace: Trace | None,
                   **kwargs) -> None:
        """`sio.emit` to the room with the trace attached and the fan-out timed."""
        await sio.emit(event, self.event_data(trace, data), room=room, **kwargs)
        self.emitted(trace)

    def stats(self) -> dict:
        out = {"node": self.node, "published": self.published, "traced": self.traced,
               "untraced": self.untraced, "untraced_reasons": dict(self.untraced_reasons),
               "fanout_ms": self.fanout.summary()}
        if self.timeline.events or self._loop_lag:
            for kind, name in ((EventKind.GC, "gc"), (EventKind.LOOP_STALL, "stalls")):
                spans = [e.duration_ns for e in self.timeline.events if e.kind == kind]
                out[name] = {"count": len(spans),
                             "longest_ms": round(max(spans, default=0) / 1e6, 3)}
        return out

    def count_untraced(self, exc: TraceFormatError) -> None:
        """Count a message that goes on without a trace, and why."""
        self.untraced += 1
        reason = str(exc)[:_MAX_REASON_CHARS]
        if reason in self.untraced_reasons or len(self.untraced_reasons) < _MAX_REASONS:
            self.untraced_reasons[reason] += 1
        else:
            self.untraced_reasons["(other reasons)"] += 1

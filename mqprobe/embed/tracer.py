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

Always on: `Tracer(node, sample=0.01)` traces one message in a hundred, chosen by trace id
so that publisher and consumer agree; per-hop and per-group latency are kept in cheap
histograms and exported in the Prometheus text format:

    tracer.mount_metrics(app)              # GET /metrics on the host's own aiohttp app
    await tracer.serve_metrics(9464)       # or on a port of its own (loopback by default)

With OpenTelemetry in the host (`opentelemetry-api`, and an SDK that records), the hop
timings join the current span as attributes and the span links to the producer's context.

Nothing here raises into the host server because of what arrives: a malformed or foreign
header makes the message go on untraced, and it is counted (`tracer.stats()`). W3C
`traceparent` stays compatible with OpenTelemetry: an existing one is continued.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mqprobe.embed.metrics import FastHistogram, GroupTable, Hops, PrometheusCollector
from mqprobe.model import HOP_DELIVERY, HOP_E2E, HOP_FANOUT, HOP_MQ, HOP_SERVER
from mqprobe.records import Consumer, HopSet, Reasons
from mqprobe.stamps import (
    AMQP_HEADER,
    BROKER_IN_HEADER,
    SOCKETIO_FIELD,
    TRACEPARENT,
    DeliveryTrace,
    PublishStamp,
    TraceFormatError,
    amqp_header,
    broker_times,
    check_id,
    decode_amqp_headers,
    decode_socketio_field,
    encode_amqp_headers,
    format_traceparent,
    new_span_id,
    new_trace_id,
    now_ns,
    parse_traceparent,
    socketio_field,
)
from mqprobe.timeline import EventKind, Recorder
from mqprobe.watch.loop import MAX_WINDOWS, LoopLagMonitor

if TYPE_CHECKING:  # imported when used: the embed stays light (no AMQP until watch_link)
    from mqprobe.broker.link import LinkWatch
    from mqprobe.watch.profile import LoopProfiler

try:  # OpenTelemetry, when the host has it: never a dependency of ours
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the host
    _otel_trace = None  # type: ignore[assignment]

_MAX_SEQ_GROUPS = 4096  # groups whose sequence is followed for gaps


@dataclass(slots=True)
class Trace:
    """One consumed message's stamps so far."""

    stamp: PublishStamp
    t_deq: int
    t_emit: int = 0
    hops: Hops | None = None  # its group's histograms (or "other"), found once

    @property
    def group(self) -> str:
        return self.stamp.group


INTERVALS_VERSION = 1  # of the document Tracer.intervals serves


class Tracer:
    """Stamps and counters for one server process (one node)."""

    def __init__(self, node: str = "node", sample: float = 1.0) -> None:
        self.node = check_id("node", node)
        if not 0.0 <= sample <= 1.0:  # also refuses nan
            raise ValueError(f"sample must be between 0 and 1, got {sample!r}")
        self.sample = sample
        self._threshold = int(sample * 0x1_0000_0000)  # of the trace id's last 32 bits
        self.published = 0
        self.traced = 0
        self.untraced = 0
        self.unsampled = 0  # consumed messages that sampling left out (not untraced)
        self.seq_gaps = 0
        self.untraced_reasons = Reasons(limit=32, chars=200)
        self.hops = Hops()  # mq, server, fanout; delivery and e2e where a listener reports
        self.mq_split = HopSet()  # the mq hop in RabbitMQ's own stamps, when it stamps
        self.broker_stamps_unreadable = 0
        self.groups = GroupTable()
        self._next_seq: dict[str, int] = {}
        self._seq: defaultdict[str, itertools.count] = defaultdict(itertools.count)
        self.timeline = Recorder(self.node, limit=10_000, ring=True)
        self._link: LinkWatch | None = None  # with watch_link
        self._queues: list[str] = []  # the queues it consumes, as the host named them
        self._loop_lag: LoopLagMonitor | None = None
        self._profiler: LoopProfiler | None = None  # with watch_loop_time

    @property
    def fanout(self) -> FastHistogram:
        return self.hops[HOP_FANOUT]

    def sampled(self, trace_id: str) -> bool:
        """Whether this trace is traced: its last 32 bits below the sample rate's share.
        Publisher and consumer decide alike from the id alone (W3C ids are random)."""
        if self._threshold >= 0x1_0000_0000:
            return True
        try:
            return int(trace_id[-8:], 16) < self._threshold
        except (TypeError, ValueError):
            return False

    def watch_pauses(self, stacks: bool = True) -> None:
        """Record this process's GC pauses (over 1 ms) and event-loop stalls (over 5 ms) as
        intervals, the way mqprobe's own pieces do: each stall split into time computing,
        waiting for a CPU, throttled and off the CPU (Linux's counters), and with `stacks`,
        the code that held the loop (a watchdog thread samples the loop thread's stack
        while it is late). Call it inside the running event loop; it costs one short
        wake-up every 10 ms (two with stacks) and a callback per collection."""
        self.timeline.watch_gc()
        if self._loop_lag is None:
            self._loop_lag = LoopLagMonitor(timeline=self.timeline, watchdog=stacks,
                                            ring=MAX_WINDOWS)  # the latest hour
            self._loop_lag.start()

    def stop_watching(self) -> None:
        self.timeline.unwatch_gc()
        if self._loop_lag:
            self._loop_lag.stop()
            self._loop_lag = None
        if self._profiler:
            self._profiler.stop()
        if self._link:
            self._link.halt()
            self._link = None

    def watch_link(self, connection, queue: str | None = None) -> None:
        """Time the round trips of the AMQP connection this server consumes on (aio-pika),
        twice a second on a channel of its own, and name the queue it consumes: `mqprobe
        trace` then splits a late message's `mq` hop into the way to RabbitMQ and back and
        RabbitMQ's own time, and reads that queue's depth (a backlog there is this
        server's consumer falling behind). Call it inside the running event loop."""
        from mqprobe.broker.link import LinkWatch

        if queue and check_id("queue", queue) not in self._queues:
            self._queues.append(queue)
        if self._link is None:
            self._link = LinkWatch(connection, ring=True)
            self._link.start()

    def consumer(self, queue: str, prefetch: int, acks_after: bool = True) -> Consumer:
        """Meters for one of this server's consumers, recorded beside its pauses and served
        with its intervals: call `arrived()` as a message is delivered to it, `busy.enter()`
        and `busy.leave()` around its handling, and `acked()` as it is acked (`acks_after`:
        it acks after handling, so its prefetch window is a window). `mqprobe trace` then
        tells a message that waited behind a full window or a busy handler (the server's:
        consumer-saturated) from one RabbitMQ held."""
        return Consumer(check_id("queue", queue), prefetch, self.timeline, acks_after)

    def intervals(self, since_ns: int = 0) -> dict:
        """What this process went through since `since_ns` (ns, CLOCK_REALTIME), for `mqprobe
        trace` to judge its groups' deliveries with the verdict compare gives: its pauses
        (`events`, TimedEvent wire rows: kind, start_ns, end_ns, what was measured), its
        loop thread's CPU windows (`loop_cpu`: start_ns, wall_ns, on_cpu_ns, waiting_ns,
        throttled_ns), its AMQP link's round trips (`link`: t_send_ns, rtt_ns, tcp_rtt_ns)
        and the queues it consumes. Each part is empty unless watched (watch_pauses,
        watch_link, consumer). docs/production.md's wire format documents it (INTERVALS_VERSION)."""
        loop = self._loop_lag
        rows = loop.windows.so_far() if loop else []
        return {"mqprobe_intervals": INTERVALS_VERSION, "node": self.node, "now_ns": now_ns(),
                "since_ns": since_ns,
                "events": [e.to_wire() for e in self.timeline.events if e.end_ns > since_ns],
                "loop_cpu": {"source": loop.source if loop else "not watched",
                             "rows": [r for r in rows if r[0] + r[1] > since_ns]},
                "link": [r for r in (self._link.rows if self._link else ()) if r[0] > since_ns],
                "queues": list(self._queues)}

    def watch_loop_time(self, every_s: float = 0.01) -> None:
        """Opt-in: what this thread's event loop spends its time on, its stack sampled
        every `every_s` from another thread (AMQP consume and ack, socket.io encode,
        websocket write, GC, idle; the busiest functions): `loop_time()` says it. Costs
        the host about what BENCHMARKS.md ("What profiling the loop costs") measured."""
        from mqprobe.watch.profile import LoopProfiler

        if self._profiler is None:
            self._profiler = LoopProfiler(every_s)
            self._profiler.start()

    def loop_time(self) -> dict:
        """What watch_loop_time saw so far (LoopProfiler.summary); {"samples": 0} without it."""
        return self._profiler.summary() if self._profiler else {"samples": 0}

    def pauses(self) -> list[dict]:
        """The recorded GC pauses and loop stalls: kind, start_ns, end_ns (CLOCK_REALTIME,
        like the stamps) and what was measured through them (generation; for a stall its
        cpu_share, on_cpu_ms, waiting_ms, throttled_ms, off_cpu_ms, and the code that held
        the loop, `held_by`)."""
        return [{"kind": e.kind.value, "start_ns": e.start_ns, "end_ns": e.end_ns, **e.detail}
                for e in self.timeline.events]

    def publish_headers(self, group: str | int, headers: dict | None = None) -> dict:
        """Headers for an outgoing AMQP message to `group`; existing headers are kept.

        The sequence number counts per group in this process. A message that sampling
        leaves out carries only a traceparent (flags 00) so consumers agree. A group id
        that cannot travel in a header leaves the message untraced (counted), never an
        exception.
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
        trace_id = _trace_id_of(headers) or new_trace_id()
        if not self.sampled(trace_id):
            out = dict(headers or {})
            out.setdefault(TRACEPARENT, format_traceparent(trace_id, new_span_id(), "00"))
            return out
        t_pub = now_ns()
        seq = next(self._seq[group])
        self.published += 1
        if not headers:  # none of the host's own to keep or continue: the two built here
            return {TRACEPARENT: format_traceparent(trace_id, new_span_id()),
                    AMQP_HEADER: amqp_header(group, seq, t_pub, t_pub)}
        return encode_amqp_headers(PublishStamp(trace_id, group, seq, t_pub, t_pub), headers)

    def consumed(self, headers: dict | None, t_deq: int | None = None) -> Trace | None:
        """Stamp t_deq for a message just taken off the broker; None if it is untraced
        (or left out by sampling). Records the mq hop.

        Pass `t_deq` when the message was stamped on arrival and handled later."""
        t_deq = t_deq or now_ns()
        if self._threshold < 0x1_0000_0000 and isinstance(headers, Mapping) \
                and AMQP_HEADER not in headers:
            trace_id = _trace_id_of(headers)
            if trace_id and not self.sampled(trace_id):
                self.unsampled += 1
                return None
        try:
            stamp = decode_amqp_headers(headers)
        except TraceFormatError as exc:
            self.count_untraced(exc)
            return None
        self.traced += 1
        hops = self.groups.for_group(stamp.group)
        mq = t_deq - stamp.t_pub
        # each hop goes into the node's histogram and its group's, written out in place:
        # a shared helper's extra call cost 0.1-0.3 us a message (benchmarks/embed_overhead.py)
        self.hops[HOP_MQ].record(mq)
        hops[HOP_MQ].record(mq)
        if headers is not None and BROKER_IN_HEADER in headers:  # RabbitMQ stamped it too
            self._split_mq(headers, stamp.t_pub, t_deq)
        self._follow_seq(stamp.group, stamp.seq)
        if _otel_trace is not None:
            _otel_consumed(stamp, mq)
        return Trace(stamp, t_deq, hops=hops)

    def _split_mq(self, headers: dict, t_pub: int, t_deq: int) -> None:
        """The mq hop in the broker's own stamps (ms, its clock): before it (publish to
        arrival), in it (arrival to sent, RabbitMQ 4.x), after it (sent, or arrival where
        only that is stamped, to our dequeue). Negative parts (clock skew, ms truncation)
        are counted as such, as every hop's are."""
        times = broker_times(headers)
        if times is None:
            self.broker_stamps_unreadable += 1
            return
        arrived, sent = times
        split = self.mq_split
        split["before-broker"].record(arrived - t_pub)
        if sent:
            split["in-broker"].record(sent - arrived)
        split["after-broker"].record(t_deq - (sent or arrived))

    def _follow_seq(self, group: str, seq: int) -> None:
        """Count messages skipped in a group's sequence (one publisher per group: exact)."""
        expected = self._next_seq.get(group)
        if expected is not None and seq > expected:
            self.seq_gaps += seq - expected
        if expected is None and len(self._next_seq) >= _MAX_SEQ_GROUPS:
            return
        if expected is None or seq >= expected:
            self._next_seq[group] = seq + 1

    def event_data(self, trace: Trace | None, data: dict) -> dict:
        """The event's object with the trace field first (stamps t_emit, records the
        server hop); as-is if untraced."""
        if trace is None or not isinstance(data, dict):
            return data  # untraced, or not an object a field can join: sent as it is
        trace.t_emit = now_ns()
        server = trace.t_emit - trace.t_deq
        self.hops[HOP_SERVER].record(server)
        if trace.hops is not None:
            trace.hops[HOP_SERVER].record(server)
        field = socketio_field(trace.stamp, self.node, trace.t_deq, trace.t_emit)
        if SOCKETIO_FIELD in data:  # one of its own by that name: ours replaces it, first
            return {SOCKETIO_FIELD: field, **{k: v for k, v in data.items()
                                              if k != SOCKETIO_FIELD}}
        out = {SOCKETIO_FIELD: field}
        out.update(data)
        return out

    def emitted(self, trace: Trace | None) -> int:
        """Record how long the emit took since t_emit (fan-out); returns it in ns."""
        if trace is None or not trace.t_emit:
            return 0
        took = now_ns() - trace.t_emit
        self.hops[HOP_FANOUT].record(took)
        if trace.hops is not None:
            trace.hops[HOP_FANOUT].record(took)
        if _otel_trace is not None:
            _otel_emitted(trace, took)
        return took

    async def emit(self, sio, event: str, data: dict, *, room: str, trace: Trace | None,
                   **kwargs) -> None:
        """`sio.emit` to the room with the trace attached and the fan-out timed."""
        await sio.emit(event, self.event_data(trace, data), room=room, **kwargs)
        self.emitted(trace)

    def received(self, data: object, t_recv: int | None = None) -> DeliveryTrace | None:
        """For a listener (a socket.io client of yours): the delivery and e2e hops of an
        event received now; None, counted, if it carries no valid trace field."""
        t_recv = t_recv or now_ns()
        try:
            if not isinstance(data, Mapping) or SOCKETIO_FIELD not in data:
                raise TraceFormatError(f"no {SOCKETIO_FIELD} field")
            delivery = decode_socketio_field(data[SOCKETIO_FIELD])
        except TraceFormatError as exc:
            self.count_untraced(exc)
            return None
        self.traced += 1
        hops = self.groups.for_group(delivery.group)
        for hop, value in ((HOP_DELIVERY, t_recv - delivery.t_emit),
                           (HOP_E2E, t_recv - delivery.t_pub)):
            self.hops[hop].record(value)
            hops[hop].record(value)
        return delivery

    # -- export ----------------------------------------------------------------------------
    def prometheus_collector(self) -> PrometheusCollector:
        """A collector to register in a prometheus-client registry of the host's."""
        return PrometheusCollector(self)

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this tracer alone, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.prometheus_collector())
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def mount_metrics(self, app, path: str = "/metrics") -> None:
        """Serve the metrics on the host's own aiohttp application, and beside them (at
        `<path>/intervals?since=NS`) the intervals `mqprobe trace` judges with."""
        from aiohttp import web

        async def handler(_request: web.Request) -> web.Response:
            body, content_type = self.metrics_text()
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def intervals(request: web.Request) -> web.Response:
            since = request.query.get("since", "0")
            if not since.isdigit() or len(since) > 20:
                return web.json_response({"error": "since is ns since the epoch, a whole "
                                                   "number"}, status=400)
            return web.json_response(self.intervals(int(since)))

        app.router.add_get(path, handler)
        app.router.add_get(f"{path.rstrip('/')}/intervals", intervals)

    async def serve_metrics(self, port: int, host: str = "127.0.0.1", path: str = "/metrics"):
        """Serve the metrics on a port of their own; returns the aiohttp runner (cleanup()
        stops it). Loopback unless you give the host's address."""
        from aiohttp import web

        app = web.Application()
        self.mount_metrics(app, path)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    def otel_metrics(self, meter=None) -> None:
        """Also publish the figures as OpenTelemetry metrics (the host's meter provider, or
        `meter`); needs opentelemetry-api, and an SDK to record them."""
        from mqprobe.embed.metrics import register_otel_metrics

        register_otel_metrics(self, meter)

    def pause_totals(self, kind: EventKind | str) -> tuple[int, float, float]:
        """GC pauses or loop stalls since watch_pauses(): count, seconds in all, longest s."""
        count, total_ns, longest_ns = self.timeline.totals.get(EventKind(kind), (0, 0, 0))
        return count, total_ns / 1e9, longest_ns / 1e9

    def stats(self) -> dict:
        out = {"node": self.node, "sample": self.sample, "published": self.published,
               "traced": self.traced, "untraced": self.untraced, "unsampled": self.unsampled,
               "seq_gaps": self.seq_gaps, "untraced_reasons": dict(self.untraced_reasons),
               "fanout_ms": self.fanout.summary(),
               "hops_ms": {hop: h.summary() for hop, h in self.hops.items()}}
        if self.timeline.events or self._loop_lag:
            for kind, name in ((EventKind.GC, "gc"), (EventKind.LOOP_STALL, "stalls")):
                count, _seconds, longest_s = self.pause_totals(kind)
                out[name] = {"count": count, "longest_ms": round(longest_s * 1000, 3)}
        return out

    def count_untraced(self, exc: TraceFormatError) -> None:
        """Count a message that goes on without a trace, and why."""
        self.untraced += 1
        self.untraced_reasons.add(str(exc))


def _trace_id_of(headers: object) -> str | None:
    """The trace id of a valid traceparent among these headers, else None."""
    if not isinstance(headers, Mapping) or TRACEPARENT not in headers:
        return None
    try:
        return parse_traceparent(headers[TRACEPARENT])[0]
    except TraceFormatError:
        return None


def _otel_consumed(stamp: PublishStamp, mq_ns: int) -> None:
    """On the host's current OpenTelemetry span, if one records: the mq hop, the group and
    seq, and a link to the producer's context (which the pika/aio-pika instrumentations
    do not make)."""
    span = _otel_trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes({"mqprobe.group": stamp.group, "mqprobe.seq": stamp.seq,
                         "mqprobe.mq_ms": mq_ns / 1e6})
    if stamp.parent_span and hasattr(span, "add_link"):
        producer = _otel_trace.SpanContext(
            int(stamp.trace_id, 16), int(stamp.parent_span, 16), is_remote=True,
            trace_flags=_otel_trace.TraceFlags(_otel_trace.TraceFlags.SAMPLED))
        span.add_link(producer, {"mqprobe.link": "producer"})


def _otel_emitted(trace: Trace, fanout_ns: int) -> None:
    """The server and fan-out hops as an event on the current span, if one records."""
    span = _otel_trace.get_current_span()
    if span.is_recording():
        span.add_event("mqprobe.emitted", {"mqprobe.server_ms": (trace.t_emit - trace.t_deq) / 1e6,
                                           "mqprobe.fanout_ms": fanout_ns / 1e6})

"""The reference node: a python-socketio server on aiohttp that consumes group messages.

Clients connect and `join` a group's room. Each consumed message is stamped t_deq on
arrival at the consumer, emitted to its room with the trace field stamped t_emit, and
the node measures how long its own emit loop took (fan-out), how busy each consumer was,
how many deliveries were unacked against the prefetch window, and its event-loop lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import threading
import time
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import ClassVar

import aio_pika
import socketio
from aiohttp import web

from mqprobe.broker.link import LinkWatch
from mqprobe.broker.topology import Topology
from mqprobe.embed import Tracer
from mqprobe.errors import InputError, within
from mqprobe.figures import HeartbeatFigures
from mqprobe.model import AckMode, ChannelMode, Concurrency, HopName, Layout
from mqprobe.pieces.inject import CpuQuota, Faults
from mqprobe.pieces.process import PieceRuntime
from mqprobe.protocol import (
    LOCAL,
    Command,
    CommandRefused,
    NodeProgress,
    NodeReady,
    NodeResult,
    Reset,
    Settle,
)
from mqprobe.records import Consumer, HopSet
from mqprobe.stamps import (
    SOCKETIO_FIELD,
    TraceFormatError,
    check_id,
    complete_socketio_field,
    decode_socketio_field,
    now_ns,
)
from mqprobe.timeline import EventKind, Recorder, freeze_setup
from mqprobe.watch.connections import PING_UNANSWERED, TRANSPORT_CLOSE, ConnectionWatch, keep_alive
from mqprobe.watch.loop import LoopLagMonitor, short_path
from mqprobe.watch.profile import CONNECTIONS, HEARTBEATS, LoopProfiler, work_here

log = logging.getLogger("mqprobe.pieces.node")
EVENT = "message"


def room_for(group: str) -> str:
    return f"group.{group}"


def oldest_generation(shown: int = 6) -> dict:
    """What the collector's oldest generation held as the run ended (beyond what set-up
    froze): what a full collection walks, by type, the most common first. A full
    collection's length is the objects it walks, so this says whose they were."""
    kinds: Counter[str] = Counter()
    waiting: Counter[str] = Counter()  # coroutines by their code: whose waits they are
    for o in gc.get_objects(generation=2):
        kinds[type(o).__qualname__] += 1
        if isinstance(o, types.CoroutineType):
            waiting[f"{short_path(o.cr_code.co_filename)} in {o.cr_code.co_qualname}"] += 1
    return {"oldest": sum(kinds.values()), "oldest_types": kinds.most_common(shown),
            "oldest_coroutines": waiting.most_common(shown)}


def keep_alive_problems(ping_interval_s: float, ping_timeout_s: float,
                        tcp_keepalive_s: float) -> list[str]:
    """How long a silent client is kept, checked wherever it is given (compare's workload,
    a node's spec): each bound's sentence, or '' where it holds."""
    return [within("--ping-interval", ping_interval_s, 0, 3600, above=True),
            within("--ping-timeout", ping_timeout_s, 0, 3600, above=True),
            within("--tcp-keepalive", tcp_keepalive_s, 0, 7200)]


@dataclass
class NodeConfig:
    node_id: str
    amqp_url: str = field(metadata=LOCAL)
    topology: Topology
    layout: Layout
    groups: list[str]
    prefix: str = "mqprobe."
    host: str = "127.0.0.1"
    port: int = 0
    faults: Faults = field(default_factory=Faults)  # injected on purpose (mqprobe.pieces.inject)
    # how long a silent client is kept: socket.io's ping (python-socketio's defaults), and
    # TCP keepalive on its connections (0: off; watch.connections.keep_alive)
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    tcp_keepalive_s: float = 0.0

    NEEDS_BROKER: ClassVar[bool] = True

    def make(self, amqp_url: str) -> Node:
        """The piece this config is for, on the broker at amqp_url."""
        return Node(replace(self, amqp_url=amqp_url))

    def check(self) -> None:
        """Ids, port and layout usable, before anything listens (by hand, or from a spec)."""
        check_id("node", self.node_id)
        for group in self.groups:
            check_id("group", group)
        for problem in (within("--port", self.port, 0, 65535),
                        *keep_alive_problems(self.ping_interval_s, self.ping_timeout_s,
                                             self.tcp_keepalive_s)):
            if problem:
                raise InputError(problem)
        if self.layout not in self.topology.layouts:
            raise InputError(f"topology {self.topology.name} supports layouts "
                             f"{', '.join(self.topology.layouts)}, not {self.layout!r}")
        if problem := self.topology.names_problem(self.prefix, self.groups, self.layout,
                                                  self.node_id):
            raise InputError(problem)


# What each message waited and its fan-out took is kept for the attribution up to this
# many messages; the per-group histograms count every emit regardless.
MAX_EMIT_RECORDS = 200_000


@dataclass
class NodeStats:
    handled: int = 0
    filtered: int = 0
    stalls: int = 0
    consumers: dict[str, Consumer] = field(default_factory=dict)

    @property
    def unacked_max(self) -> int:
        """The most unacked deliveries any one consumer held (its window is its prefetch)."""
        return max((c.unacked_max for c in self.consumers.values()), default=0)


# benchmarks/footprint.py --bare-nodes: a node without its own instruments (the loop monitor
# and its watchdog, the loop profiler, the link's pings, the GC and connection watches), to
# weigh them by running the node with them and without; its figures are then the stamps alone
BARE = os.environ.get("MQPROBE_BARE_NODE") == "1"


class Node(PieceRuntime):
    """One socket.io node and its consumers; `start()`, then `stop()` returns its stats."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.stats = NodeStats()
        self.tracer = Tracer(config.node_id)
        self.per_group: dict[str, HopSet] = {}
        # group -> [seq, ns waited in our own backlog, fan-out ns]: for the attribution
        self.emits: dict[str, list[list[int]]] = {}
        self._emit_records = 0
        self.timeline = Recorder(config.node_id)
        self.loop_lag = LoopLagMonitor(timeline=self.timeline, watchdog=True)
        self.profiler: LoopProfiler | None = None  # what the loop spends its time on
        self.intake = (ManagerIntake if config.topology.manager else ConsumerIntake)(self)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", client_manager=self.intake.client_manager,
            cors_allowed_origins="*",
            logger=False, engineio_logger=False, max_http_buffer_size=16 * 1024 * 1024,
            ping_interval=config.ping_interval_s, ping_timeout=config.ping_timeout_s,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("join", self._on_join)
        self.sio.on("disconnect", self._on_disconnect)
        self.connections: ConnectionWatch | None = None  # made once the port is known
        self._heartbeats: HeartbeatFigures | None = None  # the profiler's, as it stopped
        self.app = web.Application()
        self.sio.attach(self.app)
        self._runner: web.AppRunner | None = None
        self._workers: list[asyncio.Task] = []
        self.port = config.port
        self.queue_names: list[str] = []  # what this node consumes from, for depth sampling
        self._quota: CpuQuota | None = None  # --inject throttle: the cgroup it runs in
        self.link: LinkWatch | None = None  # its consuming connection's round trips
        self._settled: NodeResult | None = None  # its figures as measuring ended (Settle)

    # -- socket.io side --------------------------------------------------------------------
    async def _on_join(self, sid: str, data: object) -> bool:
        group = str(data.get("group")) if isinstance(data, dict) else None
        if group is None:
            return False
        await self.sio.enter_room(sid, room_for(group))
        return True

    async def _on_connect(self, _sid: str, _environ: dict, _auth: object = None) -> None:
        if self.connections is not None:
            self.connections.on_connect()

    async def _on_disconnect(self, sid: str, reason: str = "") -> None:
        if self.connections is not None:
            self.connections.on_disconnect(self._why_ended(sid, str(reason) or "unknown"))

    def _why_ended(self, sid: str, reason: str) -> str:
        """engine.io's reason, and whether the client had left the server's last ping
        unanswered past the timeout: a websocket whose read timed out ends as `transport
        close` as one its client closed does, and a silent client is told apart only so."""
        if reason != TRANSPORT_CLOSE:
            return reason
        with contextlib.suppress(Exception):  # engine.io's insides, read, never relied on
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
            last_ping = self.sio.eio.sockets[eio_sid].last_ping
            if last_ping and time.time() - last_ping >= self.config.ping_timeout_s:
                return PING_UNANSWERED
        return reason

    def connected_count(self) -> int:
        """The connections its engine.io server holds (joined to a room or not)."""
        return len(self.sio.eio.sockets)

    def client_count(self) -> int:
        return sum(1 for _ in self.sio.manager.get_participants("/", None))

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> NodeReady:
        if self.config.faults.throttle_share:  # before anything runs: all of it is held back
            self._quota = CpuQuota(f"mqprobe-{self.config.node_id}-{os.getpid()}",
                                   self.config.faults.throttle_share)
            self._quota.join()
        if not BARE:
            self.timeline.watch_gc(anatomy=True)
            loop_thread = threading.get_ident()  # start runs on the loop's thread
            self.timeline.gc_began_in = lambda frame: work_here(frame, loop_thread)
            self.loop_lag.start()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if self.config.tcp_keepalive_s:  # a socket of its own, its options inherited
            listening = socket.create_server((self.config.host, self.config.port), backlog=4096,
                                             family=_family(self.config.host))
            keep_alive(listening, self.config.tcp_keepalive_s)
            site: web.BaseSite = web.SockSite(self._runner, listening)
        else:
            site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=4096)
        await site.start()
        # the real port when 0 was asked (aiohttp keeps its server private)
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if not BARE:
            self.connections = ConnectionWatch(self.port, self.connected_count)
            self.connections.start()
        await self.intake.start()
        if self.config.faults.stall_s:
            self._workers.append(asyncio.get_running_loop().create_task(self._stall()))
        return NodeReady(node=self.config.node_id, host=self.config.host, port=self.port,
                         queues=self.queue_names)

    def progress(self) -> NodeProgress:
        return NodeProgress(node=self.config.node_id, handled=self.stats.handled,
                            clients=self.client_count())

    async def _stall(self) -> None:
        """Injected fault: hold the whole event loop now and then, as a sync call (stall) or
        a CPU-bound handler (spin) would."""
        faults = self.config.faults
        while True:
            await asyncio.sleep(faults.stall_every_s)
            if faults.stall_spin:  # computing: the loop is saturated, the CPU busy
                until = time.perf_counter() + faults.stall_s
                while time.perf_counter() < until:
                    pass
            else:  # a synchronous call: the loop is blocked, the CPU idle
                time.sleep(faults.stall_s)
            self.stats.stalls += 1

    async def stop(self) -> NodeResult:
        try:
            # shutting down is not part of the run, nor of its fault: under a quota of 8% a
            # run's stop (samplers joined, the result built and written) once took 25.7 s,
            # past compare's 20 s, and the node's figures were lost
            self._leave_quota()
            if self.link:
                await self.link.stop()
            self.loop_lag.stop()
            if self.profiler is not None:  # nor does it profile (nor a frame read as it goes)
                self.profiler.stop()
            self.timeline.unwatch_gc()
            for worker in self._workers:
                worker.cancel()
            if self.connections:
                self.connections.stop()
            await self.intake.stop()
            result = self._settled or self.result()
            if self._runner:  # thousands of websockets to close: the result is taken already
                await _at_most(self._runner.cleanup(), 5)
            return result
        finally:  # whatever stopping met, the quota's cgroup does not outlive the node
            self._leave_quota()

    def _leave_quota(self) -> None:
        if self._quota:
            self._quota.remove()
            self._quota = None

    def _loop_work(self) -> None:
        """The profiler's spans of connection work and heartbeats onto the node's
        timeline, once; the heartbeats' figures from them first."""
        if self.profiler is not None:
            self.profiler.stop()
            if self._heartbeats is None:
                self._heartbeats = self._heartbeat_figures(self.profiler)
            for kind, event in ((CONNECTIONS, EventKind.CONNECTION_WORK),
                                (HEARTBEATS, EventKind.HEARTBEAT_WORK)):
                spans, self.profiler.spans[kind] = self.profiler.spans[kind], []
                for start, end in spans:
                    self.timeline.add(event, start, end)

    def _heartbeat_figures(self, profiler: LoopProfiler) -> HeartbeatFigures | None:
        """Its loop's time on heartbeats while profiled, by whole second, beside the
        connections its server held meanwhile (their median)."""
        profiled_ns = sum(profiler.kinds.values())
        if not profiled_ns:
            return None
        seconds: Counter[int] = Counter()
        for start, end in profiler.spans[HEARTBEATS]:
            seconds[end // 1_000_000_000] += end - start
        whole = sorted(seconds.get(s, 0) for s in range(
            min(seconds, default=0) + 1, max(seconds, default=0)))  # whole seconds only
        held = sorted(row[2] for row in self.connections.rows) if self.connections else []
        return HeartbeatFigures(
            loop_ms=profiler.kinds[HEARTBEATS] / 1e6, profiled_s=profiled_ns / 1e9,
            connections=held[len(held) // 2] if held else self.connected_count(),
            ping_interval_s=self.config.ping_interval_s,
            busiest_second_ms=(whole[-1] if whole else max(seconds.values(), default=0)) / 1e6,
            median_second_ms=(whole[len(whole) // 2] if whole else 0) / 1e6)

    def result(self) -> NodeResult:
        knobs = self.config.topology.consumer
        self._loop_work()
        out: NodeResult = {
            "node": self.config.node_id,
            "handled": self.stats.handled,
            "untraced": self.tracer.untraced,
            "filtered": self.stats.filtered,
            "stalls": self.stats.stalls,
            "unacked_max": self.stats.unacked_max,
            # received and not yet handled when it was stopped: a backlog, not a loss
            "in_hand_at_end": sum(c.unacked for c in self.stats.consumers.values()),
            "prefetch": knobs.prefetch,
            "busy_ratio": {name: c.busy.ratio() for name, c in self.stats.consumers.items()},
            "loop_lag": self.loop_lag.lag.to_json(),
            "loop_worst": self.loop_lag.worst(),
            "loop_cpu": self.loop_lag.cpu(),
            "fanout": {group: hops.to_json() for group, hops in self.per_group.items()},
            "emits": self.emits,
            "timeline": self.timeline.to_wire(),
            "gc": {"frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold()),
                   **oldest_generation()},
            # the mq hop in RabbitMQ's own stamps, when its message interceptors stamp
            "mq_split": self.tracer.mq_split.to_json(),
            "profile": self._profile(),
            "broker_stamps_unreadable": self.tracer.broker_stamps_unreadable,
            "link": list(self.link.rows) if self.link else [],
            "connections": self.connections.to_json() if self.connections else {},
        }
        if self._heartbeats is not None:
            out["heartbeats"] = self._heartbeats.to_json()
        return out

    def command(self, command: Command) -> None:
        """A command from compare: Reset (measuring starts) or Settle (it ended); anything
        else is refused."""
        if isinstance(command, Reset):
            self.reset_meters()
        elif isinstance(command, Settle):
            self.settle()
        else:
            raise CommandRefused(f"a node knows `reset` and `settle`, not {command.name!r}")

    def settle(self) -> None:
        """Measuring ended: the run's figures (the loop's profile, lag, CPU windows, stalls
        and collections, busy ratios, the link's round trips) are taken now. Clients leaving
        as the run stops would read as a server busy disconnecting them (basic_disconnect
        9% of a profile once, with none gone during the run)."""
        if self._settled is not None:
            return
        self.loop_lag.stop()
        if self.profiler is not None:
            self.profiler.stop()
        self.timeline.unwatch_gc()
        if self.link:
            self.link.halt()
        if self.connections:
            self.connections.stop()
        self._settled = self.result()

    def _profile(self) -> dict:
        if self.profiler is None:
            return {"samples": 0}
        self.profiler.stop()
        return self.profiler.summary()

    def reset_meters(self) -> None:
        """Measure from now on: loop lag, busy ratio, unacked peaks and the timeline of the
        set-up are dropped, and what set-up allocated is frozen (timeline.freeze_setup)."""
        freeze_setup()
        self.loop_lag.reset()
        self.timeline.reset()
        if self.connections:
            self.connections.reset()
        if self.link:
            self.link.reset()
        if self.profiler is not None:
            self.profiler.stop()
        if not BARE:
            self.profiler = LoopProfiler()  # made here, on the loop's thread: the one it samples
            self.profiler.start()
        for consumer in self.stats.consumers.values():
            consumer.busy.reset()
            consumer.unacked_max = consumer.unacked

    def watch_link(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Time the round trips of the connection it consumes on (the deliver leg's)."""
        if self.link is None and not BARE:
            self.link = LinkWatch(connection)
            self.link.start()

    def record_emit(self, group: str, seq: int, wait_ns: int, fanout_ns: int) -> None:
        hops = self.per_group.get(group)
        if hops is None:
            hops = self.per_group[group] = HopSet()
        hops[HopName.FANOUT].record(fanout_ns)
        if self._emit_records < MAX_EMIT_RECORDS:
            self._emit_records += 1
            self.emits.setdefault(group, []).append([seq, wait_ns, fanout_ns])


class Intake:
    """How a node takes group messages off the broker and hands them to its rooms; a
    subclass fills start and stop, and names the socket.io client manager the server runs
    with (None: python-socketio's own, in-process). The node's stamps, counts and emit
    records are the same for every intake."""

    client_manager: socketio.AsyncManager | None = None

    def __init__(self, node: Node) -> None:
        self.node = node

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class ConsumerIntake(Intake):
    """mqprobe's own consumers: the topology's queues (per node or per group), its knobs
    (prefetch, ack, channel, concurrency), the stamp in the AMQP headers."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        node = self.node
        cfg, topo = node.config, node.config.topology
        knobs = topo.consumer
        self._connection = await aio_pika.connect_robust(cfg.amqp_url)
        self.node.watch_link(self._connection)
        shared = None
        for queue_name, groups in topo.queue_plan(cfg.prefix, cfg.layout, cfg.node_id,
                                                  cfg.groups):
            if knobs.channel == ChannelMode.SHARED:
                if shared is None:
                    shared = await self._connection.channel()
                    await shared.set_qos(prefetch_count=knobs.prefetch)
                channel = shared
            else:
                channel = await self._connection.channel()
                await channel.set_qos(prefetch_count=knobs.prefetch)
            # not exclusive: the sampler must be able to read its depth
            declare, consume_arguments = topo.queue_arguments()
            queue = await channel.declare_queue(queue_name, **declare)
            bound: set[tuple[str, str]] = set()
            for group in groups:
                exchange_name = topo.exchange_for(cfg.prefix, group)
                key = topo.binding_key_for(group)
                if (exchange_name, key) in bound:
                    continue
                exchange = await channel.declare_exchange(
                    exchange_name, topo.exchange_type, auto_delete=True)
                await queue.bind(exchange, routing_key=key)
                bound.add((exchange_name, key))
            node.queue_names.append(queue_name)
            consumer = node.stats.consumers[queue_name] = Consumer(
                queue_name, knobs.prefetch, node.timeline, knobs.ack == AckMode.AFTER)
            await queue.consume(self._make_callback(set(groups), consumer),
                                no_ack=knobs.ack == AckMode.AUTO,
                                arguments=consume_arguments or None)

    async def stop(self) -> None:
        if self._connection:
            await _at_most(self._connection.close(), 5)

    def _make_callback(self, groups: set[str], consumer: Consumer):
        knobs = self.node.config.topology.consumer
        if knobs.concurrency == Concurrency.CONCURRENT:
            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                t_deq = now_ns()
                consumer.arrived()
                await self._handle(message, t_deq, groups, consumer)
            return on_message

        backlog: asyncio.Queue = asyncio.Queue()

        async def worker() -> None:
            while True:
                message, t_deq = await backlog.get()
                await self._handle(message, t_deq, groups, consumer)

        self.node._workers.append(asyncio.get_running_loop().create_task(worker()))

        async def enqueue(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            t_deq = now_ns()
            consumer.arrived()  # unacked from here, though it waits in our own backlog
            backlog.put_nowait((message, t_deq))
        return enqueue

    async def _handle(self, message, t_deq: int, groups: set[str], consumer: Consumer) -> None:
        """Stamp, emit to the room, ack as the topology says; never raise into aio-pika."""
        ack = self.node.config.topology.consumer.ack
        consumer.busy.enter()
        try:
            await self._handle_one(message, t_deq, groups, ack, consumer)
        finally:
            consumer.busy.leave()

    async def _handle_one(self, message, t_deq: int, groups: set[str], ack: AckMode,
                          consumer: Consumer) -> None:
        node = self.node
        stats = node.stats
        acked = False
        wait_ns = now_ns() - t_deq  # how long it sat in our own backlog
        try:
            if ack == AckMode.BEFORE:
                await message.ack()
                consumer.acked()
                acked = True
            trace = node.tracer.consumed(message.headers, t_deq)
            if trace is None:
                return  # the reference node serves traced groups only; counted by the tracer
            if trace.group not in groups:
                stats.filtered += 1  # fanout: another queue's (or node's) group
                return
            if node.config.faults.server_delay_s:
                await asyncio.sleep(node.config.faults.server_delay_s)
            data = node.tracer.event_data(
                trace, {"group": trace.group, "body": message.body.decode("latin-1")})
            await node.sio.emit(EVENT, data, room=room_for(trace.group))
            node.record_emit(trace.group, trace.stamp.seq, wait_ns, node.tracer.emitted(trace))
            stats.handled += 1
        except Exception:  # a broken message must not stop the consumer
            log.exception("failed to handle a message")
        finally:
            if ack == AckMode.AFTER:
                with contextlib.suppress(Exception):
                    await message.ack()
            if not acked:  # acked now, or never to be (auto): out of the window either way
                consumer.acked()


class ManagerIntake(Intake):
    """python-socketio's AsyncAioPikaManager as users run it (ObservedManager): its own
    queue, prefetch 1, ack after handling; the stamp in the emitted event's data."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        cfg = node.config
        self.client_manager: ObservedManager = ObservedManager(self, cfg.amqp_url,
                                                               cfg.topology.exchange_for(cfg.prefix, ""))

    async def start(self) -> None:
        """Start the manager now, not on the first client, so its queue exists before
        anything is published."""
        node = self.node
        self._consumer = node.stats.consumers["socketio-manager"] = Consumer(
            "socketio-manager", 1, node.timeline, True)  # prefetch 1, acks after handling
        node.sio.manager_initialized = True
        self.client_manager.initialize()
        await asyncio.wait_for(self.client_manager.queue_bound.wait(), 30)

    async def stop(self) -> None:
        thread = getattr(self.client_manager, "thread", None)  # its listening task
        if thread:
            thread.cancel()

    async def observe_emit(self, message: dict,
                           handle: Callable[[dict], Awaitable[None]]) -> None:
        """One message the manager consumed, on its way to the room: stamp t_deq and t_emit
        into our field, time the emit; the manager acks after this returns."""
        t_deq = now_ns()
        node, consumer = self.node, self._consumer
        consumer.arrived()
        consumer.busy.enter()
        try:
            payload = message.get("data", [None])[0]
            try:
                raw = payload.get(SOCKETIO_FIELD) if isinstance(payload, dict) else None
                trace = decode_socketio_field(raw)
            except TraceFormatError as exc:
                node.tracer.count_untraced(exc)
                await handle(message)
                return
            if node.config.faults.server_delay_s:
                await asyncio.sleep(node.config.faults.server_delay_s)
            t_emit = now_ns()
            complete_socketio_field(raw or [], node.config.node_id, t_deq, t_emit)
            await handle(message)
            node.record_emit(trace.group, trace.seq, 0, now_ns() - t_emit)
            node.stats.handled += 1
        finally:
            consumer.busy.leave()
            consumer.acked()


class ObservedManager(socketio.AsyncAioPikaManager):
    """python-socketio's AsyncAioPikaManager as users run it, observed through the two hooks
    it consumes by, never altered: `_queue`, to learn the queue's name once it is bound (the
    node reports ready truthfully), and `_handle_emit`, where a consumed message becomes a
    room emit (the node stamps and times it). Both are private: pyproject.toml pins
    python-socketio to the versions this was tested on."""

    def __init__(self, intake: ManagerIntake, url: str, channel: str) -> None:
        super().__init__(url, channel=channel)
        self.intake = intake
        self.queue_bound = asyncio.Event()

    async def _queue(self, channel: aio_pika.abc.AbstractChannel,
                     exchange: aio_pika.abc.AbstractExchange) -> aio_pika.abc.AbstractQueue:
        queue = await super()._queue(channel, exchange)
        self.intake.node.queue_names.append(queue.name)
        # the connection it consumes on (aio-pika's channel keeps it private)
        self.intake.node.watch_link(channel._connection)  # type: ignore[attr-defined]
        self.queue_bound.set()
        return queue

    async def _handle_emit(self, message: dict) -> None:
        await self.intake.observe_emit(message, super()._handle_emit)


async def _at_most(work: Coroutine, seconds: float) -> None:
    """Let work run for at most `seconds` and go on: unlike wait_for, never wait for its
    cancellation to finish (closing thousands of connections can take that long too)."""
    task = asyncio.ensure_future(work)
    done, _pending = await asyncio.wait({task}, timeout=seconds)
    if done:
        with contextlib.suppress(Exception):
            task.result()
    else:
        task.cancel()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET

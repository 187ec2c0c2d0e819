"""The publisher: every group's messages on a fixed schedule, with publisher confirms.

Each message carries its planned send time as well as t_pub. A publisher that stalls
(GC, a slow confirm, a full loop) sends late, but e2e measured from the planned time still
shows the wait, so a stall cannot hide latency (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import ClassVar

import aio_pika
import socketio
from aio_pika.abc import ExchangeType

from mqprobe.broker.cleanup import delete_declared
from mqprobe.broker.connect import BrokerError
from mqprobe.broker.link import LinkWatch
from mqprobe.broker.topology import Topology
from mqprobe.errors import InputError, within
from mqprobe.pieces.node import EVENT, room_for
from mqprobe.pieces.process import PieceRuntime
from mqprobe.pieces.websocket import MAX_FRAME
from mqprobe.protocol import (
    LOCAL,
    Command,
    CommandRefused,
    PublisherProgress,
    PublisherResult,
    Reset,
)
from mqprobe.records import Latency
from mqprobe.stamps import (
    SOCKETIO_FIELD,
    PublishStamp,
    check_id,
    encode_amqp_headers,
    new_trace_id,
    now_ns,
    socketio_field,
)
from mqprobe.timeline import Recorder, close_open_intervals, freeze_setup
from mqprobe.watch.loop import LoopLagMonitor

log = logging.getLogger("mqprobe.pieces.publisher")

MAX_RATE = 10_000.0  # messages a second per group
MAX_DURATION_S = 3600.0
MAX_MESSAGES = 2_000_000  # per run: the schedule is planned up front
# One limit for a body, up front: RabbitMQ takes 128 MiB, but every delivery must reach a
# client in one websocket frame the swarm reads (MAX_FRAME, 64 MiB) with its event around it
MAX_SIZE = MAX_FRAME // 2


@dataclass
class PublishConfig:
    amqp_url: str = field(metadata=LOCAL)
    topology: Topology
    groups: list[str]
    rate: float  # messages per second per group
    size: int  # body bytes
    duration_s: float
    prefix: str = "mqprobe."
    max_in_flight: int = 1000
    broker_delay_ms: int = 0  # injected: a TTL queue holds each message this long
    exchange: str | None = None  # an existing exchange to publish into as it is (passively)

    NEEDS_BROKER: ClassVar[bool] = True

    def make(self, amqp_url: str) -> Publisher:
        """The piece this config is for, on the broker at amqp_url."""
        return Publisher(replace(self, amqp_url=amqp_url))

    def check(self) -> None:
        """Every bound, before anything connects (by hand, or from a spec sent to an agent)."""
        problems = [p for p in (within("--rate", self.rate, 0, MAX_RATE, above=True),
                                within("--duration", self.duration_s, 0, MAX_DURATION_S, above=True),
                                within("--size", self.size, 0, MAX_SIZE),
                                within("max_in_flight", self.max_in_flight, 1, 100_000),
                                within("broker_delay_ms", self.broker_delay_ms, 0, 3_600_000)) if p]
        if not problems and len(self.groups) * self.rate * self.duration_s > MAX_MESSAGES:
            problems.append(f"over {MAX_MESSAGES:,} messages (groups x rate x duration)")
        if problems:
            raise InputError("; ".join(problems))
        for group in self.groups:
            check_id("group", group)
        if self.exchange is None and (problem := self.topology.names_problem(self.prefix,
                                                                             self.groups)):
            raise InputError(problem)
        if self.exchange is not None and (self.topology.manager or not self.exchange.strip()
                                          or len(self.exchange) > 255):
            raise InputError("--exchange takes an exchange name of 1 to 255 characters, and does "
                             "not apply to python-socketio's manager topology")


def schedule(groups: list[str], rate: float, duration_s: float) -> list[tuple[int, str, int]]:
    """(offset_ns, group, seq) for every message, groups phase-shifted so sends spread out."""
    if rate <= 0:
        return []
    per_group = max(1, round(rate * duration_s))
    period_ns = 1e9 / rate
    plan = []
    for index, group in enumerate(groups):
        phase = period_ns * index / len(groups)
        plan += [(int(seq * period_ns + phase), group, seq) for seq in range(per_group)]
    plan.sort()
    return plan


class Transport:
    """How the publisher's stamped messages reach the groups' exchanges; a subclass fills
    connect, send and close, as python-socketio's managers fill theirs. The schedule, the
    counts and the stamps are the publisher's, the same for every transport."""

    def __init__(self, config: PublishConfig) -> None:
        self.config = config

    async def connect(self) -> None:
        raise NotImplementedError

    async def send(self, stamp: PublishStamp, body: bytes) -> None:
        """One message, confirmed by the broker when this returns; DeliveryError if nacked."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def connection(self) -> aio_pika.abc.AbstractConnection | None:
        """The AMQP connection it publishes on (its round trips are the publish leg's)."""
        raise NotImplementedError


class AmqpTransport(Transport):
    """mqprobe's own publishing: the stamp in AMQP headers, into the topology's exchanges
    (or one existing exchange, or a delay queue in front of each, as injected)."""

    def __init__(self, config: PublishConfig) -> None:
        super().__init__(config)
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    @property
    def connection(self) -> aio_pika.abc.AbstractConnection | None:
        return self._connection

    async def connect(self) -> None:
        cfg, topo = self.config, self.config.topology
        self._connection = await aio_pika.connect_robust(cfg.amqp_url)
        channel = await self._connection.channel(publisher_confirms=True)
        names = [cfg.exchange] if cfg.exchange else topo.exchanges(cfg.prefix, cfg.groups)
        for name in names:
            exchange: aio_pika.abc.AbstractExchange
            try:
                if cfg.exchange:
                    exchange = await channel.declare_exchange(name, passive=True)
                else:
                    exchange = await channel.declare_exchange(name, topo.exchange_type,
                                                              auto_delete=True)
            except aio_pika.exceptions.ChannelClosed as exc:
                raise _declare_problem(exc, name, topo, passive=bool(cfg.exchange)) from None
            if cfg.broker_delay_ms:
                exchange = await self._delay_in_front_of(channel, name)
            self._exchanges[name] = exchange

    async def _delay_in_front_of(self, channel, target: str) -> aio_pika.abc.AbstractExchange:
        """A real broker-side wait: a fanout exchange into a queue whose messages expire after
        the delay and are dead-lettered, routing key kept, to the target exchange."""
        delay = await channel.declare_exchange(f"{target}.delay", ExchangeType.FANOUT,
                                              auto_delete=True)
        queue = await channel.declare_queue(f"{target}.delay", arguments={
            "x-message-ttl": self.config.broker_delay_ms,
            "x-dead-letter-exchange": target,
            "x-expires": 120_000,  # gone two minutes after the run, never piles up
        })
        await queue.bind(delay)
        return delay

    async def send(self, stamp: PublishStamp, body: bytes) -> None:
        cfg = self.config
        exchange = cfg.exchange or cfg.topology.exchange_for(cfg.prefix, stamp.group)
        message = aio_pika.Message(body, headers=encode_amqp_headers(stamp),
                                   delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT)
        await self._exchanges[exchange].publish(
            message, routing_key=cfg.topology.routing_key_for(stamp.group))

    async def close(self) -> None:
        """Close, and delete the exchanges declared here that nothing is bound to (a typo'd
        --prefix leaves nothing behind; a node's bindings are never touched)."""
        if self._connection and not self._connection.is_closed and not self.config.exchange:
            delay = self.config.broker_delay_ms
            ours = [unused for name in self._exchanges
                    for unused in ((f"{name}.delay", name) if delay else (name,))]
            await delete_declared(self._connection, ours, if_unused=True)
        if self._connection:
            with contextlib.suppress(Exception):
                await self._connection.close()


class ManagerTransport(Transport):
    """python-socketio's own AsyncAioPikaManager, write-only, as a user's external process
    publishes: its JSON emit into the fanout exchange, the stamp in the event's data (the
    node fills in node, t_deq and t_emit when its manager consumes it)."""

    def __init__(self, config: PublishConfig) -> None:
        super().__init__(config)
        self._manager: socketio.AsyncAioPikaManager | None = None

    async def connect(self) -> None:
        """The manager connects on its first emit, and emits that come while it does are
        dropped: the first caller sets `publisher_connection` before the exchange exists,
        so a concurrent one publishes on None, fails twice and 'gives up' (python-socketio
        5.x `_publish`; seq 0 of some groups at 100 msg/s). Connect here, before measuring,
        the way its own first emit would."""
        cfg = self.config
        manager = self._manager = socketio.AsyncAioPikaManager(
            cfg.amqp_url, channel=cfg.topology.exchange_for(cfg.prefix, ""), write_only=True)
        connection = await manager._connection()
        channel = await manager._channel(connection)
        manager.publisher_exchange = await manager._exchange(channel)
        manager.publisher_channel = channel
        manager.publisher_connection = connection

    @property
    def connection(self) -> aio_pika.abc.AbstractConnection | None:
        return self._manager.publisher_connection if self._manager else None

    async def send(self, stamp: PublishStamp, body: bytes) -> None:
        field = socketio_field(stamp, "-", t_deq=0, t_emit=0)
        data = {SOCKETIO_FIELD: field, "group": stamp.group, "body": body.decode()}
        assert self._manager is not None, "connect() makes the manager"
        await self._manager.emit(EVENT, data, room=room_for(stamp.group))

    async def close(self) -> None:
        if self._manager and self._manager.publisher_connection:
            with contextlib.suppress(Exception):
                await self._manager.publisher_connection.close()


class Publisher(PieceRuntime):
    """Sends the schedule once (work), then hands over what it sent (stop); a stop asked
    half-way (halt) ends the schedule early with what was sent. Under a parent it is
    started while the swarms connect (its start-up is not measuring time) and sends from
    the parent's Reset: measuring starts when every piece measures."""

    progress_s = 0.5

    def __init__(self, config: PublishConfig) -> None:
        self.config = config
        self.published = {group: 0 for group in config.groups}
        self.confirmed = 0
        self.nacked = 0
        self.errors = 0
        self.first_error = ""
        self.stop_requested = False  # set by a stop: the schedule ends early
        self.elapsed_s = 0.0
        self.schedule_lag = Latency()  # t_pub - t_plan
        self.timeline = Recorder()
        # its stalls are the instrument's error bar, charged whole: not split by parts
        self.loop_lag = LoopLagMonitor(timeline=self.timeline, counters=False)
        self.t0_ns = 0  # the schedule's start: the run's time zero
        self.body = b"x" * config.size
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._go = asyncio.Event()  # set by the parent's Reset (or a stop): send the schedule
        self._pending: set[asyncio.Task] = set()
        self.transport = (ManagerTransport if config.topology.manager else AmqpTransport)(config)
        self.link: LinkWatch | None = None  # its connection's round trips while it sends

    async def start(self) -> dict:
        await self.connect()
        return {}

    def command(self, command: Command) -> None:
        """Reset from compare: send the schedule now; anything else is refused."""
        if not isinstance(command, Reset):
            raise CommandRefused(f"a publisher knows `reset`, not {command.name!r}")
        self._go.set()

    async def work(self) -> None:
        if self.controlled:
            await self._go.wait()
        await self.run()

    def halt(self) -> None:
        self.stop_requested = True
        self._go.set()  # asked to stop before it began: it ends, having sent nothing

    async def stop(self) -> PublisherResult:
        return self.result(self.elapsed_s)

    async def connect(self) -> None:
        self.timeline.watch_connection_blocked()
        await self.transport.connect()

    async def run(self) -> PublisherResult:
        plan = schedule(self.config.groups, self.config.rate, self.config.duration_s)
        freeze_setup()  # the schedule and the connection are set-up, not garbage to scan
        self.timeline.watch_gc()
        self.loop_lag.start()
        if self.transport.connection is not None:
            self.link = LinkWatch(self.transport.connection)
            self.link.start()
        started = now_ns()
        t0 = self.t0_ns = started + 50_000_000
        loop = asyncio.get_running_loop()
        for offset, group, seq in plan:
            if self.stop_requested:
                break  # asked to stop half-way: report what was sent
            t_plan = t0 + offset
            delay = (t_plan - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            await self._in_flight.acquire()
            self.published[group] += 1
            task = loop.create_task(self._send(group, seq, t_plan))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        if self._pending:
            await asyncio.wait(self._pending, timeout=30)
        if self.link:
            await self.link.stop()
        self.loop_lag.stop()
        self.timeline.unwatch_gc()
        close_open_intervals(self.timeline)
        self.elapsed_s = (now_ns() - started) / 1e9
        return self.result(self.elapsed_s)

    async def _send(self, group: str, seq: int, t_plan: int) -> None:
        try:
            t_pub = now_ns()
            self.schedule_lag.record(t_pub - t_plan)
            stamp = PublishStamp(new_trace_id(), group, seq, t_pub, t_plan)
            await self.transport.send(stamp, self.body)
            self.confirmed += 1
        except aio_pika.exceptions.DeliveryError:
            self.nacked += 1
        except Exception as exc:
            self.errors += 1
            if not self.first_error:
                self.first_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._in_flight.release()

    def progress(self) -> PublisherProgress:
        return PublisherProgress(sent=sum(self.published.values()), confirmed=self.confirmed,
                                 nacked=self.nacked, errors=self.errors)

    def result(self, elapsed_s: float) -> PublisherResult:
        return {**self.progress(), "published": dict(self.published),
                "first_error": self.first_error, "elapsed_s": round(elapsed_s, 3),
                "schedule_lag": self.schedule_lag.to_json(), "t0_ns": self.t0_ns,
                "loop_lag": self.loop_lag.lag.to_json(), "timeline": self.timeline.to_wire(),
                "link": list(self.link.rows) if self.link else []}

    async def close(self) -> None:
        await self.transport.close()


def _declare_problem(exc: Exception, name: str, topology: Topology, passive: bool) -> BrokerError:
    """One sentence for an exchange the broker would not declare."""
    text = str(exc)
    if passive and "NOT_FOUND" in text:
        return BrokerError(f"exchange {name!r} does not exist on this broker's virtual host: "
                           "--exchange publishes into an existing exchange and creates none")
    if "PRECONDITION_FAILED" in text:
        return BrokerError(f"exchange {name!r} already exists with other settings (type, "
                           f"durable, auto-delete) than topology {topology.name} declares: "
                           f"publish into it as it is with --exchange {name}")
    if "ACCESS_REFUSED" in text:
        return BrokerError(f"the broker refused this user access to exchange {name!r}")
    return BrokerError(f"the broker would not declare exchange {name!r}: {text[:200]}")

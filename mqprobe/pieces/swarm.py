"""The client swarm: thousands of socket.io connections in one asyncio process.

A python-socketio AsyncClient costs about 50 KB per connection; these lean members speak
just enough engine.io (mqprobe.pieces.sio_client: open, connect, join with ack, ping/pong, events)
over the lean websocket of mqprobe.pieces.websocket: a socket and a callback per connection, no
task, no thread. One task pings every engine.io 3 connection.

Before its members, each server gets one handshake of its own (`preflight`): it finds the
version a server speaks, and a server that cannot be joined fails all its members at once,
with the reason in one sentence, instead of each member waiting out its own timeout.

A member that was joined and loses its connection comes back, with exponential backoff and
jitter; the time it was down is on the timeline (client-down) and what it missed is lost.

A load swarm (compare's `--inject churn` and `client-stall`: members beside the measured
ones, reported apart) makes the seed's reconnect storm: its members leave and join again at
a rate (`churn_per_s`), or its loop cannot run now and then (`stall_s` every
`stall_every_s`: a load process too busy to answer its server's pings), from Reset to
Settle.

t_recv is the kernel's receive stamp of the frame's last packet (SO_TIMESTAMPNS) where
the kernel gives one, else the moment it was read: the result counts each (`t_recv_source`).
The trace field is read from the first bytes of the frame, never the (large) body; a room
emit arrives as the same frame at every member, so it is decoded once, not once per member. Hops go
into HDR histograms per group on the fly; raw samples are kept only when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from mqprobe.errors import InputError
from mqprobe.model import STAMP_SOURCES
from mqprobe.pieces.process import PieceRuntime
from mqprobe.pieces.sio_client import (
    EIO_CLOSE,
    EIO_PING,
    EIO_PONG,
    SIO_ACK,
    SIO_CONNECT_ERROR,
    SIO_DISCONNECT,
    SIO_EVENT,
    Protocol,
    backoff,
    handshake,
    preflight,
    why_failed,
)
from mqprobe.pieces.websocket import WebSocket
from mqprobe.protocol import (
    LOCAL,
    Command,
    CommandRefused,
    GroupTallyJson,
    Reset,
    SetClock,
    Settle,
    SwarmProgress,
    SwarmReady,
    SwarmResult,
)
from mqprobe.records import HopSet, Latency, Reasons
from mqprobe.stamps import (
    DeliveryTrace,
    TraceFormatError,
    decode_socketio_field,
    field_from_frame,
    now_ns,
)
from mqprobe.timeline import EventKind, Recorder, freeze_setup
from mqprobe.watch.loop import LoopLagMonitor

log = logging.getLogger("mqprobe.pieces.swarm")


@dataclass
class SwarmConfig:
    node_urls: list[str]
    group_sizes: dict[str, int]
    slice_index: int = 0  # this process takes every slice_count-th member
    slice_count: int = 1
    connect_concurrency: int = 200
    connect_timeout_s: float = 120.0  # for all members to join
    handshake_timeout_s: float = 15.0  # for one connection: open, connect, join
    # engine.io protocol: 4 (socket.io 3/4), 3 (socket.io 2); None asks each server
    eio: int | None = None
    kernel_stamps: bool = True  # t_recv from the kernel's receive stamp where it gives one
    samples: int = 0  # raw deliveries to keep, for checking hop arithmetic
    lag_every_s: float = 0.01  # its own loop's lag, sampled this often (a trace's watch: 0.05)
    # per-message records for compare's attribution, and every one of its loop's CPU windows
    # (False: a trace's listeners, which keep their own and only the last two minutes of
    # windows: a watch grew 0.15-0.2 MiB a minute, mostly those windows)
    keep_records: bool = True
    churn_per_s: float = 0.0  # members that leave and join again, a second (0: none)
    stall_s: float = 0.0  # its loop blocked this long (as an overloaded host's) ...
    stall_every_s: float = 0.0  # ... this often
    # called for every traced event a member receives (mqprobe trace prints them)
    on_delivery: Callable[[Member, DeliveryTrace, int], None] | None = field(
        default=None, metadata=LOCAL)

    NEEDS_BROKER: ClassVar[bool] = False

    def make(self, amqp_url: str) -> Swarm:
        """The piece this config is for, on the broker at amqp_url."""
        return Swarm(self)  # it reaches servers, not the broker

    def check(self) -> None:
        """A slice this process can take, a protocol it speaks, members it can plan."""
        if not 0 <= self.slice_index < self.slice_count:
            raise InputError(f"--slice must be i/K with 0 <= i < K, got "
                             f"{self.slice_index}/{self.slice_count}")
        if self.eio not in (None, 3, 4):
            raise InputError(f"--eio must be 3, 4 or auto, got {self.eio!r}")
        if not self.node_urls:
            raise InputError("a swarm needs at least one socket.io server URL")
        if any(size < 0 for size in self.group_sizes.values()) or \
                sum(self.group_sizes.values()) > 10_000_000:
            raise InputError("group sizes must be whole numbers from 0, 10,000,000 in all")


@dataclass
class GroupTally:
    members: int = 0
    delivered: int = 0
    duplicated: int = 0


class Member:
    """One simulated user: its group and which sequence numbers it has seen."""

    __slots__ = ("group", "url", "seen", "highest", "joined", "down_since", "ws")

    def __init__(self, group: str, url: str) -> None:
        self.group = group
        self.url = url
        self.seen = bytearray()
        self.highest = -1  # the highest seq received
        self.joined = False
        self.down_since = 0  # ns: lost its connection then, not back yet (0: up)
        self.ws: WebSocket | None = None


MAX_OUTAGES = 10_000  # member outages kept with their times (all are counted)
DECODED_KEPT = 64  # frames whose decoded trace is kept for the members that follow
# A frame's trace is read from its head alone: the field opens the event's object and holds
# the message's trace id, so the head names the message. Keyed by its head, a 20 KB frame
# costs a 512-character hash, not a 20 KB one per member (5.4 -> 1.3 us a delivery with its
# decode: benchmarks/swarm_frame_key.py). A field longest in every part (64-character ids,
# 20-digit numbers) ends within 341 characters of the frame's start (its marker within the
# first 64).
FIELD_HEAD = 512


# A member's seen-set grows with the sequence numbers it receives; a frame whose seq jumps
# further than this past the highest so far is not one of ours (a foreign server's seq
# 3e8 would otherwise cost 300 MB per member) and is counted as untraced.
SEQ_JUMP_MAX = 1 << 16
# Per-delivery records for the attribution: one per (group, seq, node), bounded.
MAX_MESSAGE_RECORDS = 200_000
WATCH_WINDOWS = 1200  # a trace's listeners keep 2 minutes of their loop's CPU windows
RECEIPTS_KEPT = 32  # beyond this many receipts of one message, keep 32 equal-count buckets


class MessageRecord:
    """One message as one node emitted it, and when each of our members received it."""

    __slots__ = ("t_pub", "t_deq", "t_emit", "receipts")

    def __init__(self, trace: DeliveryTrace) -> None:
        self.t_pub, self.t_deq, self.t_emit = trace.t_pub, trace.t_deq, trace.t_emit
        self.receipts = array("q")  # t_recv - t_emit, ns

    def compact_receipts(self) -> list[list[int]]:
        """[[delivery ns, how many], ...]: exact up to RECEIPTS_KEPT receipts, then the
        mean of each of RECEIPTS_KEPT equal-count slices of the sorted receipts."""
        values = sorted(self.receipts)
        if len(values) <= RECEIPTS_KEPT:
            return [[v, 1] for v in values]
        out, n = [], len(values)
        for i in range(RECEIPTS_KEPT):
            chunk = values[i * n // RECEIPTS_KEPT:(i + 1) * n // RECEIPTS_KEPT]
            out.append([sum(chunk) // len(chunk), len(chunk)])
        return out


def plan_members(config: SwarmConfig) -> list[Member]:
    """Every member of every group, spread round-robin over nodes; this process's slice."""
    members, k, nodes = [], 0, len(config.node_urls)
    for group, size in config.group_sizes.items():
        for _ in range(size):
            if (k // nodes) % config.slice_count == config.slice_index:
                members.append(Member(group, config.node_urls[k % nodes]))
            k += 1
    return members


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@dataclass
class Swarm(PieceRuntime):
    config: SwarmConfig
    members: list[Member] = field(default_factory=list)
    tallies: dict[str, GroupTally] = field(default_factory=dict)
    hops: dict[str, HopSet] = field(default_factory=dict)
    samples: list[list] = field(default_factory=list)  # [group, seq, t_plan, ..., t_recv]
    connected: int = 0
    failed: int = 0
    disconnects: int = 0
    reconnects: int = 0
    down: int = 0  # members whose connection is lost and not back yet (a count, not a scan)
    untraced: int = 0
    untraced_reasons: Reasons = field(default_factory=lambda: Reasons(16, 160))
    misrouted: int = 0
    first_error: str = ""
    reorder_max: int = 0  # the furthest a seq arrived below its member's highest
    churned: int = 0  # members that left on purpose (churn_per_s) while measuring
    stalled_ns: int = 0  # its loop blocked on purpose (stall_s) while measuring
    # from a member's connection lost (or left) to its join acknowledged again
    rejoin: Latency = field(default_factory=Latency)

    def __post_init__(self) -> None:
        self.members = plan_members(self.config)
        for group in self.config.group_sizes:
            self.tallies[group] = GroupTally()
            self.hops[group] = HopSet()
        self.timeline = Recorder()
        # its stalls are the instrument's error bar, charged whole: not split by parts
        self.loop_lag = LoopLagMonitor(self.config.lag_every_s, timeline=self.timeline,
                                       counters=False,
                                       ring=0 if self.config.keep_records else WATCH_WINDOWS)
        self.messages: dict[tuple[str, int, str], MessageRecord] = {}
        self.messages_dropped = 0
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._load_tasks: list[asyncio.Task] = []  # churn and stalls, while measuring
        self._joined = 0
        self._settled = asyncio.Event()
        self._gate = asyncio.Semaphore(self.config.connect_concurrency)
        self.protocols: dict[str, Protocol] = {}  # node URL -> what it speaks
        self._eio3_sockets: set[WebSocket] = set()
        self.stamp_sources = [0, 0, 0]  # event frames by t_recv source (websocket.STAMP_*)
        # the last frames decoded: a room emit reaches every member as the same text
        self._decoded: dict[str, DeliveryTrace | str] = {}
        # (member, down from ns, back at ns) for trace, which names probes lost meanwhile
        self.outages: list[tuple[Member, int, int]] = []
        # node id -> (how far that node's clock, and the publisher's, is ahead of ours) in ns;
        # empty when all share one clock. Set by compare's `clock` command (mqprobe.clocks).
        self.clock_shift: dict[str, tuple[int, int]] = {}

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.tallies.values())

    # compare ends a run's drain on these counts: each half second was a quarter second,
    # on average, of every run waiting for the last deliveries to be reported
    progress_s = 0.2

    async def start(self) -> SwarmReady:
        """Open every connection and join its room; returns when all have joined or failed."""
        self.timeline.watch_gc()
        self.loop_lag.start()
        loop = asyncio.get_running_loop()
        urls = list(dict.fromkeys(m.url for m in self.members))
        found = await asyncio.gather(*(preflight(url, self.config.eio, self.config.handshake_timeout_s)
                                       for url in urls))
        unusable = {url: reason for url, reason in zip(urls, found, strict=True)
                    if isinstance(reason, str)}
        self.protocols = {url: p for url, p in zip(urls, found, strict=True)
                          if isinstance(p, Protocol)}
        for member in self.members:
            if member.url in unusable:
                self._failed(unusable[member.url])
        self._tasks = [loop.create_task(self._client(m)) for m in self.members
                       if m.url not in unusable]
        if any(p.eio == 3 for p in self.protocols.values()):
            self._tasks.append(loop.create_task(self._ping_eio3()))
        self._settle_check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self.config.connect_timeout_s)
        # a connected member needs no task: its socket's callback does the rest
        self._tasks = [task for task in self._tasks if not task.done()]
        return SwarmReady(**self.progress(), rss_bytes=rss_bytes(), first_error=self.first_error)

    async def work(self) -> None:
        if not self.controlled and self.members and not self._joined:
            return  # by hand, with nobody to measure: say why at once
        await super().work()

    def _settle_check(self) -> None:
        if self._joined + self.failed >= len(self.members):
            self._settled.set()

    def _failed(self, reason: str) -> None:
        """A member that never joined: counted, and the first reason kept."""
        self.failed += 1
        if not self.first_error:
            self.first_error = reason

    async def _client(self, member: Member, attempt: int = 0) -> None:
        """Connect one member (again, after `attempt` failures); once it is connected its
        socket's callback takes over and this task ends."""
        while True:
            if attempt:
                await asyncio.sleep(backoff(attempt))
            try:
                async with self._gate:
                    async with asyncio.timeout(self.config.handshake_timeout_s):
                        ws = await handshake(member.url, self.protocols[member.url],
                                             member.group, self.config.kernel_stamps)
            except Exception as exc:
                if not member.joined:  # counted, reported once: one dead node must not hide others
                    self._failed(why_failed(exc, member.url, self.protocols[member.url].eio,
                                            self.config.eio, self.config.handshake_timeout_s))
                    self._settle_check()
                    return
                attempt += 1  # a member that was joined keeps coming back
                continue
            if self._stopping:
                ws.close()
                return
            if not member.joined:
                self.connected += 1
            member.ws = ws
            if self.protocols[member.url].eio == 3:
                self._eio3_sockets.add(ws)
            ws.listen(lambda text, t_recv, source: self._on_frame(member, text, t_recv, source),
                      lambda: self._on_close(member))
            return

    def _on_close(self, member: Member) -> None:
        """The server closed a member's connection (or it broke)."""
        ws, member.ws = member.ws, None
        self._eio3_sockets.discard(ws)
        if self._stopping:
            return
        self.disconnects += 1
        if not member.joined:  # dropped before its join was acknowledged
            self._failed(f"{member.url} closed the connection before the join was acknowledged")
            self._settle_check()
            return
        self._come_back(member, attempt=1)

    def _come_back(self, member: Member, attempt: int) -> None:
        """A joined member whose connection is gone is down from now (if it was not
        already), and connects again (after `attempt` failures' backoff)."""
        if not member.down_since:
            member.down_since = now_ns()
            self.down += 1
        task = asyncio.get_running_loop().create_task(self._client(member, attempt))
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    def _back_up(self, member: Member) -> None:
        """A member that lost its connection has joined again: its outage goes on record."""
        down, member.down_since = member.down_since, 0
        self.down -= 1
        up = now_ns()
        self.reconnects += 1
        self.rejoin.record(up - down)
        self.timeline.add(EventKind.CLIENT_DOWN, down, up, group=member.group)
        if len(self.outages) < MAX_OUTAGES:
            self.outages.append((member, down, up))

    def _leave(self, member: Member) -> None:
        """A member leaves (its connection closed, as a user who goes, a phone that loses
        its network) and joins again at once."""
        ws, member.ws = member.ws, None
        if ws is None:
            return
        self._eio3_sockets.discard(ws)
        ws.close()
        self.disconnects += 1
        self.churned += 1
        self._come_back(member, attempt=0)

    async def _churn(self) -> None:
        """Members leave and join again at churn_per_s, in turn, each one that is up."""
        tick, owed, turn = 0.02, 0.0, 0
        while self.members:
            await asyncio.sleep(tick)
            owed += self.config.churn_per_s * tick
            for _ in range(len(self.members)):
                if owed < 1:
                    break
                member = self.members[turn % len(self.members)]
                turn += 1
                if member.ws is not None and member.joined and not member.down_since:
                    self._leave(member)
                    owed -= 1

    async def _stall(self) -> None:
        """Its loop blocked for stall_s every stall_every_s: nothing is read, no ping
        answered, as in a load process whose host is overloaded."""
        while True:
            await asyncio.sleep(self.config.stall_every_s)
            began = now_ns()
            time.sleep(self.config.stall_s)
            self.stalled_ns += now_ns() - began

    def _unsteady(self) -> None:
        """From Reset: the churn and stalls asked for."""
        loop = asyncio.get_running_loop()
        if self.config.churn_per_s > 0:
            self._load_tasks.append(loop.create_task(self._churn()))
        if self.config.stall_s > 0 and self.config.stall_every_s > self.config.stall_s:
            self._load_tasks.append(loop.create_task(self._stall()))

    def _steady(self) -> None:
        for task in self._load_tasks:
            task.cancel()
        self._load_tasks.clear()

    async def _ping_eio3(self) -> None:
        """Ping every engine.io 3 connection well within its server's ping interval; one
        task for all of them, in slices, so no connection needs a timer of its own."""
        interval = min(p.ping_interval_s for p in self.protocols.values() if p.eio == 3)
        while True:
            await asyncio.sleep(interval / 2)
            for i, ws in enumerate(list(self._eio3_sockets)):
                ws.send_text(EIO_PING)
                if i % 500 == 499:
                    await asyncio.sleep(0)

    def _on_frame(self, member: Member, frame: str, t_recv: int, source: int) -> None:
        """One socket.io packet from a member's server, stamped t_recv (from `source`)."""
        kind = frame[:2]
        if kind == SIO_EVENT:
            self.stamp_sources[source] += 1
            self._on_event(member, frame, t_recv)
        elif frame == EIO_PING:
            if member.ws is not None:
                member.ws.send_text(EIO_PONG)
        elif kind == SIO_ACK:
            if not member.joined:
                member.joined = True
                self._joined += 1
                self.tallies[member.group].members += 1
                self._settle_check()
            elif member.down_since:
                self._back_up(member)
        elif kind in (SIO_DISCONNECT, SIO_CONNECT_ERROR) or frame[:1] == EIO_CLOSE:
            if member.ws is not None:
                member.ws.close()
            self._on_close(member)

    def _on_event(self, member: Member, frame: str, t_recv: int) -> None:
        head = frame[:FIELD_HEAD]
        trace = self._decoded.get(head)
        if trace is None:
            trace = self._decode(head)
        if isinstance(trace, str):
            self._untraced(trace)
            return
        if trace.group != member.group:
            self.misrouted += 1
            return
        if self.clock_shift and trace.node in self.clock_shift:
            trace = trace.on_clock(*self.clock_shift[trace.node])
        if self.config.on_delivery:  # before the seq check: a watcher dedups by trace id
            self.config.on_delivery(member, trace, t_recv)
        seq, seen = trace.seq, member.seen
        if seq >= len(seen):
            if seq - len(seen) > SEQ_JUMP_MAX:  # no publisher of ours skips that far
                self._untraced(f"seq more than {SEQ_JUMP_MAX} ahead of its group's last")
                return
            seen.extend(bytes(seq - len(seen) + 256))
        tally = self.tallies[member.group]
        if seen[seq]:
            tally.duplicated += 1
            return
        seen[seq] = 1
        tally.delivered += 1
        if seq > member.highest:
            member.highest = seq
        elif member.highest - seq > self.reorder_max:
            self.reorder_max = member.highest - seq
        hops = self.hops[member.group]
        for hop, value in trace.hops(t_recv):
            hops[hop].record(value)
        if not trace.server_stamped or not self.config.keep_records:  # nothing to attribute
            return
        key = (trace.group, seq, trace.node)
        record = self.messages.get(key)
        if record is None:
            if len(self.messages) >= MAX_MESSAGE_RECORDS:
                self.messages_dropped += 1
                return
            record = self.messages[key] = MessageRecord(trace)
        record.receipts.append(t_recv - trace.t_emit)
        if len(self.samples) < self.config.samples:
            self.samples.append([int(trace.group) if trace.group.isdigit() else trace.group,
                                 trace.seq, trace.t_plan, trace.t_pub, trace.t_deq,
                                 trace.t_emit, t_recv])

    def _decode(self, head: str) -> DeliveryTrace | str:
        """The trace of an event frame from its head (FIELD_HEAD), or why it has none; kept
        for the next members that receive the same frame (a few frames: a room emit's
        copies arrive together)."""
        raw = field_from_frame(head)
        try:
            if raw is None:
                raise TraceFormatError("no mqprobe list first in the event's object")
            trace: DeliveryTrace | str = decode_socketio_field(raw)
        except TraceFormatError as exc:
            trace = str(exc)
        if len(self._decoded) >= DECODED_KEPT:
            self._decoded.clear()
        self._decoded[head] = trace
        return trace

    def command(self, command: Command) -> None:
        """A command from compare: Reset (measuring starts now), Settle (it ended: its own
        lag and collections stop counting; deliveries still count) or SetClock; anything
        else is refused (CommandRefused)."""
        if isinstance(command, Reset):
            freeze_setup()  # set-up (thousands of connections) out of the collector's reach
            self.loop_lag.reset()
            self.timeline.reset()
            self.churned = self.stalled_ns = 0
            self.rejoin = Latency()
            self._unsteady()
        elif isinstance(command, Settle):
            self._steady()
            self.loop_lag.stop()
            self.timeline.unwatch_gc()
        elif isinstance(command, SetClock):
            self.clock_shift = {node: (ahead, command.publisher_ns)
                                for node, ahead in command.nodes_ns.items()}
        else:
            raise CommandRefused(f"the swarm knows `reset`, `settle` and `clock`, not "
                                 f"{command.name!r}")

    def progress(self) -> SwarmProgress:
        return SwarmProgress(planned=len(self.members), connected=self.connected,
                             joined=self._joined, failed=self.failed,
                             disconnects=self.disconnects, reconnects=self.reconnects,
                             down=self.down,
                             delivered=self.delivered,
                             delivered_by_group={g: t.delivered for g, t in self.tallies.items()})

    async def stop(self) -> SwarmResult:
        # the instrument stops measuring first: tearing down thousands of connections is
        # not a lag of the run
        self.loop_lag.stop()
        self.timeline.unwatch_gc()
        self._steady()
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for member in self.members:
            if member.ws is not None:
                member.ws.close()
                member.ws = None
        return self.result()

    def _untraced(self, reason: str) -> None:
        """Count an event that carried no usable trace, and why."""
        self.untraced += 1
        self.untraced_reasons.add(reason)

    def _group_tallies(self) -> dict[str, GroupTallyJson]:
        """Per group: members, deliveries, duplicates, and how far its live members got:
        `reached`, the sum of each one's highest seq + 1, and `gaps_near_top`, the seqs it
        misses within the deepest reordering this run showed below its highest. What a
        live member misses past its highest, or that near it, may still have been on its
        way when the run stopped; a deeper hole, or anything a member that went down
        missed, will never arrive."""
        out = {g: GroupTallyJson(members=t.members, delivered=t.delivered,
                                 duplicated=t.duplicated, reached=0, gaps_near_top=0, live=0)
               for g, t in self.tallies.items()}
        for member in self.members:
            tally = out.get(member.group)
            if tally is not None and member.joined and not member.down_since:
                top = member.highest + 1
                tally["live"] += 1
                tally["reached"] += top
                tally["gaps_near_top"] += member.seen[max(0, top - self.reorder_max):top].count(0)
        return out

    def result(self) -> SwarmResult:
        return {
            **self.progress(),
            "untraced": self.untraced,
            "untraced_reasons": dict(self.untraced_reasons),
            "misrouted": self.misrouted,
            "reorder_max": self.reorder_max,
            "first_error": self.first_error,
            "protocols": {url: p.eio for url, p in self.protocols.items()},
            "t_recv_source": dict(zip(STAMP_SOURCES, self.stamp_sources, strict=True)),
            "rss_bytes": rss_bytes(),
            "groups": self._group_tallies(),
            "hops": {g: hops.to_json() for g, hops in self.hops.items()},
            "self_lag": self.loop_lag.lag.to_json(),
            "samples": self.samples,
            "timeline": self.timeline.to_wire(),
            "messages": [[group, seq, node, r.t_pub, r.t_deq, r.t_emit, r.compact_receipts()]
                         for (group, seq, node), r in self.messages.items()],
            "messages_dropped": self.messages_dropped,
            "churned": self.churned,
            "stalled_ms": self.stalled_ns / 1e6,
            "rejoin": self.rejoin.to_json(),
        }

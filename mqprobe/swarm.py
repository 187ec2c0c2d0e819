"""The client swarm: thousands of socket.io connections in one asyncio process.

A python-socketio AsyncClient costs about 50 KB per connection; this lean client speaks
just enough engine.io v4 / socket.io v5 over aiohttp websockets (open, connect, join with
ack, ping/pong, events) for a fraction of that. No thread per connection, ever.

t_recv is stamped the moment a frame is handed over, before the payload is decoded; the
trace field is read from the first bytes of the frame, never the (large) body. Hops go
into HDR histograms per group on the fly; raw samples are kept only when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType

from mqprobe.process import emit_event, wait_for_stop
from mqprobe.records import HopSet, LoopLagMonitor, Reasons
from mqprobe.stamps import (
    DeliveryTrace,
    TraceFormatError,
    decode_socketio_field,
    field_from_frame,
    now_ns,
)
from mqprobe.timeline import Recorder, freeze_setup

log = logging.getLogger("mqprobe.swarm")
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


@dataclass
class SwarmConfig:
    node_urls: list[str]
    group_sizes: dict[str, int]
    slice_index: int = 0  # this process takes every slice_count-th member
    slice_count: int = 1
    connect_concurrency: int = 200
    connect_timeout_s: float = 120.0
    samples: int = 0  # raw deliveries to keep, for checking hop arithmetic
    # called for every traced event a member receives (mqprobe trace prints them)
    on_delivery: Callable[[Member, DeliveryTrace, int], None] | None = None


@dataclass
class GroupTally:
    members: int = 0
    delivered: int = 0
    duplicated: int = 0


class Member:
    """One simulated user: its group and which sequence numbers it has seen."""

    __slots__ = ("group", "url", "seen", "joined")

    def __init__(self, group: str, url: str) -> None:
        self.group = group
        self.url = url
        self.seen = bytearray()
        self.joined = False


# A member's seen-set grows with the sequence numbers it receives; a frame whose seq jumps
# further than this past the highest so far is not one of ours (a foreign server's seq
# 3e8 would otherwise cost 300 MB per member) and is counted as untraced.
SEQ_JUMP_MAX = 1 << 16
# Per-delivery records for the attribution: one per (group, seq, node), bounded.
MAX_MESSAGE_RECORDS = 200_000
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
class Swarm:
    config: SwarmConfig
    members: list[Member] = field(default_factory=list)
    tallies: dict[str, GroupTally] = field(default_factory=dict)
    hops: dict[str, HopSet] = field(default_factory=dict)
    samples: list[list[int]] = field(default_factory=list)
    connected: int = 0
    failed: int = 0
    disconnects: int = 0
    untraced: int = 0
    untraced_reasons: Reasons = field(default_factory=lambda: Reasons(16, 160))
    misrouted: int = 0
    first_error: str = ""

    def __post_init__(self) -> None:
        self.members = plan_members(self.config)
        for group in self.config.group_sizes:
            self.tallies[group] = GroupTally()
            self.hops[group] = HopSet()
        self.timeline = Recorder()
        self.loop_lag = LoopLagMonitor(timeline=self.timeline)
        self.messages: dict[tuple[str, int, str], MessageRecord] = {}
        self.messages_dropped = 0
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self._joined = 0
        self._settled = asyncio.Event()
        self._gate = asyncio.Semaphore(self.config.connect_concurrency)
        # node id -> (how far that node's clock, and the publisher's, is ahead of ours) in ns;
        # empty when all share one clock. Set by compare's `clock` command (mqprobe.clocks).
        self.clock_shift: dict[str, tuple[int, int]] = {}

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.tallies.values())

    async def start(self) -> None:
        """Open every connection and join its room; returns when all have joined or failed."""
        self.timeline.watch_gc()
        self.loop_lag.start()
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(m)) for m in self.members]
        if not self.members:
            self._settled.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self.config.connect_timeout_s)

    def _settle_check(self) -> None:
        if self._joined + self.failed >= len(self.members):
            self._settled.set()

    async def _client(self, member: Member) -> None:
        try:
            async with self._gate:
                ws = await self.session.ws_connect(
                    member.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket",
                    max_msg_size=0, autoping=True, compress=0)
                opening = await asyncio.wait_for(ws.receive(), 30)
                if opening.type != WSMsgType.TEXT or not opening.data.startswith("0"):
                    raise ConnectionError(f"no engine.io open packet from {member.url}")
                await ws.send_str("40")
                # socket.io 4 closes a connection that sends events before its connect reply
                reply = await asyncio.wait_for(ws.receive(), 30)
                if reply.type != WSMsgType.TEXT or not reply.data.startswith("40"):
                    text = reply.data[:80] if reply.type == WSMsgType.TEXT else reply.type.name
                    raise ConnectionError(f"{member.url} did not accept the socket.io connect "
                                          f"({text!r})")
                await ws.send_str(f'420["join",{{"group":"{member.group}"}}]')
        except Exception as exc:  # counted, reported once: one dead node must not hide others
            self.failed += 1
            if not self.first_error:
                self.first_error = f"{type(exc).__name__}: {exc}"
            self._settle_check()
            return
        self.connected += 1
        try:
            await self._receive_loop(ws, member)
        finally:
            if not self._stopping:
                self.disconnects += 1
                if not member.joined:  # dropped before its join was acknowledged
                    self.failed += 1
                    if not self.first_error:
                        self.first_error = f"{member.url} closed the connection before the join"
                    self._settle_check()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse, member: Member) -> None:
        receive = ws.receive
        while True:
            message = await receive()
            t_recv = now_ns()
            if message.type is not WSMsgType.TEXT:
                if message.type in _CLOSED:
                    return
                continue
            frame = message.data
            kind = frame[:2]
            if kind == "42":
                self._on_event(member, frame, t_recv)
            elif frame == "2":
                await ws.send_str("3")
            elif kind == "43" and not member.joined:
                member.joined = True
                self._joined += 1
                self.tallies[member.group].members += 1
                self._settle_check()
            elif kind in ("41", "44") or frame[:1] == "1":
                return  # socket.io disconnect / error, engine.io close

    def _on_event(self, member: Member, frame: str, t_recv: int) -> None:
        raw = field_from_frame(frame)
        try:
            if raw is None:
                raise TraceFormatError("no mqprobe list first in the event's object")
            trace = decode_socketio_field(raw)
        except TraceFormatError as exc:
            self._untraced(str(exc))
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
        hops = self.hops[member.group]
        for hop, value in trace.hops(t_recv):
            hops[hop].record(value)
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

    def command(self, line: str) -> None:
        """A control line from compare: `reset` (measuring starts now) or `clock {...}`."""
        if line == "reset":
            freeze_setup()  # set-up (thousands of connections) out of the collector's reach
            self.loop_lag.reset()
            self.timeline.reset()
        elif line.startswith("clock "):
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                table = json.loads(line[6:])
                publisher = int(table["publisher"])
                self.clock_shift = {str(node): (int(ahead), publisher)
                                    for node, ahead in table["nodes"].items()}

    def progress(self) -> dict:
        return {"planned": len(self.members), "connected": self.connected,
                "joined": self._joined, "failed": self.failed,
                "disconnects": self.disconnects, "delivered": self.delivered}

    async def stop(self) -> dict:
        # the instrument stops measuring first: tearing down thousands of connections is
        # not a lag of the run
        self.loop_lag.stop()
        self.timeline.unwatch_gc()
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.session.close()
        return self.result()

    def _untraced(self, reason: str) -> None:
        """Count an event that carried no usable trace, and why."""
        self.untraced += 1
        self.untraced_reasons.add(reason)

    def result(self) -> dict:
        return {
            **self.progress(),
            "untraced": self.untraced,
            "untraced_reasons": dict(self.untraced_reasons),
            "misrouted": self.misrouted,
            "first_error": self.first_error,
            "rss_bytes": rss_bytes(),
            "groups": {g: vars(t) for g, t in self.tallies.items()},
            "hops": {g: hops.to_json() for g, hops in self.hops.items()},
            "self_lag": self.loop_lag.lag.to_json(),
            "samples": self.samples,
            "timeline": self.timeline.to_wire(),
            "messages": [[group, seq, node, r.t_pub, r.t_deq, r.t_emit, r.compact_receipts()]
                         for (group, seq, node), r in self.messages.items()],
            "messages_dropped": self.messages_dropped,
        }


async def run_swarm(config: SwarmConfig, control: bool, progress_s: float = 0.5) -> dict:
    swarm = Swarm(config)
    reporter = None

    async def report() -> None:
        while True:
            await asyncio.sleep(progress_s)
            emit_event("progress", **swarm.progress())

    if control:
        reporter = asyncio.get_running_loop().create_task(report())
    await swarm.start()
    emit_event("ready", **swarm.progress(), rss_bytes=rss_bytes(), first_error=swarm.first_error)
    try:
        await wait_for_stop(control, swarm.command)
    finally:
        if reporter:
            reporter.cancel()
    return await swarm.stop()

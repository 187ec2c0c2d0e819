"""`mqprobe trace --group N`: one group's messages hop by hop, live or from a saved run.

Live, it joins the group as listening client(s) on a running socket.io system and prints
each message as it arrives: its hops and the node that handled it. With `--publish RATE`
it also sends probe messages into the user's exchange (stamped as `mqprobe.embed` does),
so a probe that never arrives is shown as lost, with the last hop it is known to have
reached.

With `via="socketio-manager"` the probes go in python-socketio's own manager format (an
`emit` message, JSON, into the manager's fanout exchange, as AsyncAioPikaManager publishes
them), so a cluster with no mqprobe code emits them to the group's room itself. No server
stamps them: they give publish-to-receive latency per node (the listener's URL) and per
group, labelled e2e only; mq, server and delivery are n/a.

Probes also measure the server's clock against ours (mqprobe.clocks.bound_from_probe): a
probe leaves and comes back on our clock, so its dequeue and emit stamps bound the server's
offset. When the bounds show the clocks differ, hops are corrected and carry +- the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mqprobe.broker.connect import bound_queues
from mqprobe.broker.link import LinkWatch
from mqprobe.broker.sampler import QueueSampler
from mqprobe.clocks import ProbeBounds, bound_from_probe
from mqprobe.embed import Tracer
from mqprobe.errors import InputError, ResultFormatError
from mqprobe.figures import BrokerCpu, BrokerEvidence, Counts, GroupFigures, HopFigures, LoopLag
from mqprobe.model import PieceRole, TraceLine
from mqprobe.pieces.swarm import Member, Swarm, SwarmConfig
from mqprobe.records import HopSet
from mqprobe.result import Comparison, RunRecord
from mqprobe.run.live_verdict import (
    LISTENERS,
    Episode,
    EpisodeWatch,
    LiveFacts,
    fetch_intervals,
    judge_live,
    outside_verdict,
)
from mqprobe.stamps import (
    TRACEPARENT,
    DeliveryTrace,
    PublishStamp,
    check_id,
    new_trace_id,
    now_ns,
    parse_traceparent,
    socketio_field,
)
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.attribution import MessageDeliveries
from mqprobe.watch.footprint import CpuSampler, broker_processes


@dataclass
class TraceConfig:
    group: str
    socketio_urls: list[str]
    clients: int = 1  # listeners per URL
    amqp_url: str | None = None
    exchange: str | None = None
    exchange_type: str = "topic"
    routing_key: str = "group.{group}"
    rate: float = 0.0  # probe messages per second; 0 listens only
    duration_s: float = 10.0
    timeout_s: float = 5.0  # a probe not seen this long after it was sent is lost
    eio: int | None = None  # engine.io protocol; None asks each server
    via: str = "amqp"  # amqp: mqprobe's headers | socketio-manager: python-socketio's format
    room: str = "group.{group}"  # socketio-manager: the room a group's members are in
    event: str = "message"  # socketio-manager: the event the servers emit
    metrics_urls: list[str] = field(default_factory=list)  # embedding servers' /metrics
    queues: list[str] = field(default_factory=list)  # the servers' queues, to read their depth
    management_url: str | None = None  # alarms, flow control, and queues bound to `exchange`
    budget_ms: float = 50.0  # a delivery later than this is late: the verdict's budget

    @property
    def probe_exchange(self) -> str | None:
        """Where probes go: `exchange`, or with via=socketio-manager the manager's default
        channel (python-socketio's `socketio`)."""
        return self.exchange or (MANAGER_CHANNEL if self.via == VIA_MANAGER else None)


VIA_MANAGER = "socketio-manager"
VIA = ("amqp", VIA_MANAGER)
MANAGER_CHANNEL = "socketio"  # AsyncAioPikaManager's default channel: its exchange's name
UNSTAMPED_NODE = "-"  # the node field of a manager-format probe: no server stamps it


MAX_JUDGED = 200_000  # deliveries a trace keeps for its verdict (as a swarm keeps per run)


@dataclass
class Probe:
    seq: int
    t_pub: int
    confirmed: bool = False
    seen: bool = False


Line = Callable[[dict], None]


def hop_line(trace: DeliveryTrace, t_recv: int, kind: TraceLine, clock_ms: float = 0.0,
             node: str = "") -> dict:
    """One arrival; clock_ms is the +- on mq and delivery when the node's clock differs.
    Hops whose stamps were not taken are absent (shown n/a)."""
    return {"kind": kind, "seq": trace.seq, "node": node or trace.node,
            "trace_id": trace.trace_id,
            **{f"{hop}_ms": round(value / 1e6, 3) for hop, value in trace.hops(t_recv)},
            "clock_ms": clock_ms}


def parse_groups(text: str) -> list[str]:
    """`7`, `16,17,18` or `16-18`: the groups to follow, each an id that can travel."""
    groups: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit() and int(low) <= int(high) <= int(low) + 1000:
            groups += [str(g) for g in range(int(low), int(high) + 1)]
        else:
            groups.append(check_id("group", part))
    return list(dict.fromkeys(groups))


Episodes = Callable[[dict], None]
WATCH_KEEP_NS = 120_000_000_000  # a watch keeps this much before now (and before an episode)
EPISODE_LEAD_NS = 5_000_000_000  # an episode is judged from this long before its start


async def live_trace(config: TraceConfig, on_line: Line, on_episode: Episodes | None = None
                     ) -> dict:
    """Listen (and probe) for `duration_s` (0: until cancelled, a watch: each episode over
    budget judged as it ends, to on_episode); every arrival and every loss goes to on_line."""
    groups = parse_groups(config.group)
    if config.via not in VIA:
        raise InputError(f"--via must be {' or '.join(VIA)}, got {config.via!r}")
    tallies = {group: Arrivals({}, on_line) for group in groups}
    listeners = config.clients * len(config.socketio_urls)
    started = now_ns()
    # the servers' intervals now: they say which queues to watch, and a wrong URL fails early
    servers = await asyncio.gather(*(fetch_intervals(url, started) for url in config.metrics_urls))
    watch = BrokerWatch(config, [q for s in servers for q in s.queues],
                        {q: s.node for s in servers for q in s.queues})
    episodes = {group: EpisodeWatch(group, config.budget_ms * 1e6) for group in groups}
    watching = config.duration_s == 0

    def delivered(member: Member, trace: DeliveryTrace, t_recv: int) -> None:
        tally = tallies.get(trace.group)
        if tally is None:
            return
        server = tally.delivered(member, trace, t_recv)
        if watching and server and (began := episodes[trace.group].see(
                trace.t_pub, t_recv, server)):
            (on_episode or on_line)({"kind": TraceLine.LATE, **began.to_json(),
                                     "e2e_ms": round((t_recv - trace.t_pub) / 1e6, 3)})

    # a watch's listeners see its lag every 50 ms: for hours, at a probe a second, their
    # 100 wake-ups a second were most of the watch's CPU
    swarm = Swarm(SwarmConfig(node_urls=config.socketio_urls,
                              group_sizes=dict.fromkeys(groups, listeners),
                              on_delivery=delivered, eio=config.eio,
                              lag_every_s=0.05 if watching else 0.01, keep_records=False))
    await swarm.start()
    if swarm.progress()["joined"] == 0:
        await swarm.stop()
        raise ConnectionError(f"could not join group {', '.join(groups)} at "
                              f"{', '.join(config.socketio_urls)}"
                              + (f" ({swarm.first_error})" if swarm.first_error else ""))
    publisher = None
    logged: list[dict] = []
    await watch.start()
    try:
        if config.rate > 0:
            publisher = await _probe_publisher(config)
            watch.watch_probe_link(publisher[0])
        if watching:  # until Ctrl-C or SIGTERM: the end of the watch, not a failure
            with contextlib.suppress(asyncio.CancelledError):
                await _watch(config, groups, tallies, episodes, swarm, watch, publisher,
                             started, listeners, lambda episode: _log_and_say(
                                 logged, on_episode or on_line, episode))
            if (current := asyncio.current_task()) is not None:
                current.uncancel()
        elif publisher:
            await asyncio.gather(*(_send_probes(config, publisher, tallies[group].probes, group)
                                   for group in groups))
            deadline = asyncio.get_running_loop().time() + config.timeout_s
            while any(not p.seen for t in tallies.values() for p in t.probes.values()):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
        else:
            await asyncio.sleep(config.duration_s)
    finally:
        if watching:  # the episodes still open when the watch ended, judged as they stand
            for group, episode in ((g, e.open) for g, e in episodes.items() if e.open):
                with contextlib.suppress(Exception):
                    judged = await asyncio.shield(_episode(
                        config, tallies[group], swarm, watch, episode, listeners, ongoing=True))
                    logged.append(judged)
                    (on_episode or on_line)(judged)
        # each bounded: a broker that froze as the trace ended must not keep it from ending
        await _within(watch.stop(), STOP_S)
        if publisher:
            with contextlib.suppress(Exception):
                await _within(publisher[0].close(), STOP_S)
        await swarm.stop()
    summaries = {group: await _group_summary(config, group, tallies[group], swarm, watch,
                                             started, listeners, on_line, judge=not watching)
                 for group in groups}
    if watching:
        for summary in summaries.values():
            summary["episodes"] = [e for e in logged if e["group"] == summary["group"]]
    if len(groups) == 1:
        return summaries[groups[0]]
    return {"groups": summaries, "comparison": compare_groups(summaries, config.budget_ms)}


async def _group_summary(config: TraceConfig, group: str, tally: Arrivals, swarm: Swarm,
                         watch: BrokerWatch, started: int, listeners: int, on_line: Line,
                         judge: bool = True) -> dict:
    """One group's summary: its probes, arrivals, hops, clocks and (unless a watch judged
    its episodes already) its verdict."""
    lost = [p for p in tally.probes.values() if not p.seen]
    due_ns = int(config.timeout_s * 1e9)
    for probe in sorted(lost, key=lambda p: p.seq):
        on_line({"kind": TraceLine.LOST, "seq": probe.seq, "group": group,
                 "last_hop": _last_hop(probe, listeners_down(swarm, probe.t_pub,
                                                              probe.t_pub + due_ns), listeners)})
    progress = swarm.progress()
    summary = {"group": group, "listeners": progress["joined"], "received": len(tally.seen_ids),
               "probes_sent": len(tally.probes), "probes_lost": len(lost),
               "untraced": swarm.untraced, "untraced_reasons": dict(swarm.untraced_reasons),
               **{key: progress[key] for key in ("planned", "joined", "failed", "disconnects",
                                                 "reconnects", "down")},
               "first_error": swarm.first_error,
               "protocols": {url: p.eio for url, p in swarm.protocols.items()},
               **tally.to_json()}
    if judge:
        summary |= await _judged(config, tally, tally.deliveries, tally.outside, swarm, watch,
                                 started - 1_000_000_000, listeners)
    return summary


def compare_groups(summaries: dict[str, dict], budget_ms: float) -> str:
    """Several groups side by side: which were late, for what, through which servers, and
    which were on time (`17, 18 late (server: server-stall) through chat-2; 16 on time`)."""
    late: dict[str, list[str]] = {}
    on_time = []
    for group, summary in summaries.items():
        verdict = summary.get("verdict") or {}
        if verdict.get("culprit") in (None, "none"):
            on_time.append(group)
            continue
        slow = sorted(node for node, hops in summary.get("nodes", {}).items()
                      if hops.get("e2e", {}).get("p99_ms", 0) > budget_ms)
        label = (f"({verdict['culprit']}: {verdict['cause'].partition(':')[0]})"
                 + (f" through {', '.join(slow)}" if slow else ""))
        late.setdefault(label, []).append(group)
    parts = [f"{', '.join(groups)} late {label}" for label, groups in late.items()]
    if on_time:
        parts.append(f"{', '.join(on_time)} on time")
    return "; ".join(parts)


async def _watch(config: TraceConfig, groups: list[str], tallies: dict[str, Arrivals],
                 episodes: dict[str, EpisodeWatch], swarm: Swarm, watch: BrokerWatch,
                 publisher, started: int, listeners: int, log: Callable[[dict], None]) -> None:
    """Probe each group (1/s unless asked otherwise) until cancelled; every second, judge
    the episodes that are over and forget what no episode needs (memory stays flat)."""
    rate = config.rate or 1.0
    probing = [asyncio.get_running_loop().create_task(
        _probe_forever(config, publisher, tallies[group].probes, group, rate))
        for group in groups] if publisher else []
    try:
        while True:
            await asyncio.sleep(1.0)
            now = now_ns()
            for group in groups:
                if (episode := episodes[group].ended(now)) is not None:
                    log(await _episode(config, tallies[group], swarm, watch, episode, listeners))
            horizon = min([now - WATCH_KEEP_NS] + [e.open.start_ns - EPISODE_LEAD_NS
                                                  for e in episodes.values() if e.open])
            for tally in tallies.values():
                tally.forget_before(horizon)
            watch.forget_before(horizon)
            # the listeners' own collections and stalls (an hour's watch gathered thousands)
            swarm.timeline.events = [e for e in swarm.timeline.events if e.end_ns >= horizon]
    finally:
        for task in probing:
            task.cancel()


async def _episode(config: TraceConfig, tally: Arrivals, swarm: Swarm, watch: BrokerWatch,
                   episode: Episode, listeners: int, ongoing: bool = False) -> dict:
    """An episode as its log line: when, how bad, through which servers, and its verdict
    from what was measured from a little before it began to its end."""
    since = episode.start_ns - EPISODE_LEAD_NS
    until = (episode.end_ns or now_ns()) + 1_000_000_000
    deliveries = [m for m in tally.deliveries if since <= m.t_pub <= until]
    outside = [o for o in tally.outside if since <= o[0] <= until]
    judged = await _judged(config, tally, deliveries, outside, swarm, watch, since, listeners)
    return {"kind": TraceLine.EPISODE, **episode.to_json(), "ongoing": ongoing,
            "start": _iso(episode.start_ns), "end": _iso(episode.end_ns) if episode.end_ns else None,
            **judged}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


async def _judged(config: TraceConfig, tally: Arrivals, deliveries: list[MessageDeliveries],
                  outside: list[tuple[int, int, str]], swarm: Swarm, watch: BrokerWatch,
                  since: int, listeners: int) -> dict:
    """A group's verdict from what the trace watched: compare's engine where a server
    stamped the messages, what outside the servers shows where none did."""
    budget_ns = config.budget_ms * 1e6
    if deliveries:
        servers = [s.shifted(-tally.offset_ns(s.node)) for s in await asyncio.gather(
            *(fetch_intervals(url, since) for url in config.metrics_urls))]
        facts = LiveFacts(
            deliveries, _counts(tally, deliveries), tally.hop_figures(),
            LoopLag.from_json(swarm.loop_lag.lag.lag_summary()), servers, watch.events(),
            watch.evidence(), [TimedEvent(e.kind, LISTENERS, e.start_ns, e.end_ns, e.detail)
                               for e in swarm.timeline.events],
            watch.probe_rows(), watch.control_rows(), watch.broker_cpu(),
            watch.cpu.used_rows() if watch.cpu else {})
        attribution, verdict = judge_live(facts, config.budget_ms)
        return {"verdict": verdict.to_json(),
                "attribution": attribution.to_json() if attribution else None}
    late = [(t, e2e) for t, e2e, _url in outside if e2e > budget_ns]
    by_url: dict[str, list[int]] = {}
    for _t, e2e, url in outside:
        by_url.setdefault(url, [0, 0])[e2e > budget_ns] += 1
    events = watch.events()
    verdict = outside_verdict(late, len(outside) - len(late),
                              [e for e in events if e.kind == EventKind.QUEUE_BACKLOG],
                              [e for e in events if e.kind in BROKER_FAULTS], config.budget_ms,
                              {url: (late_, on + late_) for url, (on, late_) in by_url.items()})
    return {"verdict": verdict.to_json(), "attribution": None}


BROKER_FAULTS = (EventKind.BROKER_UNAVAILABLE, EventKind.BROKER_ALARM,
                 EventKind.PUBLISHER_BLOCKED)


def _counts(tally: Arrivals, deliveries: list[MessageDeliveries]) -> Counts:
    """The probes' counts (the group's own traffic has no count to miss against)."""
    sent = len(tally.probes)
    seen = sum(1 for p in tally.probes.values() if p.seen)
    delivered = sum(m.count for m in deliveries)
    return Counts(published=max(sent, len({(m.group, m.seq) for m in deliveries})),
                  expected_deliveries=delivered + (sent - seen), delivered=delivered,
                  lost=sent - seen)


class Arrivals:
    """What a live trace has received: each message once per node (every node emits it to
    its own room members), its hops for the group and per node, and what the probes among
    them say of each node's clock."""

    def __init__(self, probes: dict[str, Probe], on_line: Line) -> None:
        self.probes, self.on_line = probes, on_line
        self.hops = HopSet()
        self.by_node: dict[str, HopSet] = {}
        self.seen_ids: set[str] = set()
        self.paths: dict[tuple[str, str], int] = {}  # (trace id, node) counted -> its t_pub
        self.clocks: dict[str, ProbeBounds] = {}
        self.stamped = self.unstamped = 0  # arrivals a server stamped, and not
        # for the verdict: each stamped arrival as the attribution reads it, and each
        # unstamped probe's (t_pub, e2e ns, the listener's URL)
        self.deliveries: list[MessageDeliveries] = []
        self.outside: list[tuple[int, int, str]] = []

    def delivered(self, member: Member, trace: DeliveryTrace, t_recv: int) -> str | None:
        """The swarm's on_delivery: a message no server stamped is known by the URL its
        listener is connected to. Returns the server it counted it for (None: seen already)."""
        node = trace.node if trace.server_stamped else member.url
        if (trace.trace_id, node) in self.paths:
            return None
        self.paths[(trace.trace_id, node)] = trace.t_pub
        self.seen_ids.add(trace.trace_id)
        if trace.server_stamped:
            self.stamped += 1
        else:
            self.unstamped += 1
        probe = self.probes.get(trace.trace_id)
        if probe:
            probe.seen = True
        clock_ms = 0.0
        if trace.server_stamped:
            bounds = self.clocks.setdefault(node, ProbeBounds())
            if probe:
                bounds.add(bound_from_probe(trace.t_pub, trace.t_deq, trace.t_emit, t_recv))
            if bounds.clocks_differ:
                offset = bounds.estimate()
                trace = trace.on_clock(offset.offset_ns, 0)
                clock_ms = round(offset.uncertainty_ns / 1e6, 3)
        node_hops = self.by_node.setdefault(node, HopSet())
        for hop, value in trace.hops(t_recv):
            self.hops[hop].record(value)
            node_hops[hop].record(value)
        if trace.server_stamped and len(self.deliveries) < MAX_JUDGED:
            self.deliveries.append(MessageDeliveries(
                trace.group, trace.seq, node, LISTENERS, trace.t_pub, trace.t_deq,
                trace.t_emit, [(t_recv - trace.t_emit, 1)]))
        elif probe and len(self.outside) < MAX_JUDGED:
            self.outside.append((trace.t_pub, t_recv - trace.t_pub, node))
        self.on_line(hop_line(trace, t_recv, TraceLine.PROBE if probe else TraceLine.LIVE, clock_ms, node))
        return node

    def forget_before(self, t_ns: int) -> None:
        """What was published before t_ns, which no episode needs any more (a watch runs for
        hours in flat memory); the histograms keep counting."""
        self.deliveries = [m for m in self.deliveries if m.t_pub >= t_ns]
        self.outside = [o for o in self.outside if o[0] >= t_ns]
        self.paths = {key: t for key, t in self.paths.items() if t >= t_ns}
        self.seen_ids = {trace_id for trace_id, _node in self.paths}
        for trace_id in [i for i, p in self.probes.items() if p.t_pub < t_ns]:
            del self.probes[trace_id]

    def offset_ns(self, node: str) -> int:
        """How far the node's clock is ahead of ours, where the probes showed they differ."""
        bounds = self.clocks.get(node)
        return bounds.estimate().offset_ns if bounds and bounds.clocks_differ else 0

    def hop_figures(self) -> dict[str, HopFigures]:
        return {hop: HopFigures.from_json(latency.summary()) for hop, latency in self.hops.items()}

    def to_json(self) -> dict:
        return {"hops": {hop: latency.summary() for hop, latency in self.hops.items()},
                "e2e_only": self.unstamped > 0 and self.stamped == 0,
                "nodes": {node: {hop: latency.summary() for hop, latency in node_hops.items()}
                          for node, node_hops in self.by_node.items()},
                "clocks": {node: _clock_json(b) for node, b in self.clocks.items() if b.probes}}


def listeners_down(swarm: Swarm, start_ns: int, end_ns: int) -> int:
    """How many of the swarm's members were disconnected at some time in [start, end]."""
    down = {id(member) for member, since, back in swarm.outages
            if since <= end_ns and back >= start_ns}
    down |= {id(m) for m in swarm.members if m.down_since and m.down_since <= end_ns}
    return len(down)


def _last_hop(probe: Probe, down: int, listeners: int) -> str:
    """Where a lost probe was last known to be, and whether a listener was away for it."""
    if not probe.confirmed:
        return "publisher (the broker did not confirm it)"
    if down:
        return (f"broker (publish confirmed); {down} of {listeners} listener(s) were "
                "disconnected while it was due")
    return "broker (publish confirmed; never reached a listener)"


def _log_and_say(logged: list[dict], say: Callable[[dict], object], episode: dict) -> None:
    logged.append(episode)
    say(episode)


def _clock_json(bounds: ProbeBounds) -> dict:
    """What the probes say about one node's clock against ours."""
    out: dict[str, object] = {"probes": bounds.probes, "consistent": bounds.consistent,
                              "corrected": bounds.clocks_differ}
    if bounds.consistent and bounds.low is not None and bounds.high is not None:
        out |= {"low_ms": round(bounds.low / 1e6, 3), "high_ms": round(bounds.high / 1e6, 3),
                **bounds.estimate().to_json()}
    return out


async def _probe_publisher(config: TraceConfig):
    import aio_pika

    if not (config.amqp_url and config.probe_exchange):
        raise InputError("--publish needs --exchange (and a broker: --amqp-url or the managed one)")
    connection = await aio_pika.connect(config.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    try:  # passive: a probe must never create or change anything in the user's broker
        exchange = await channel.declare_exchange(config.probe_exchange, config.exchange_type,
                                                  passive=True)
    except aio_pika.exceptions.ChannelClosed:
        await connection.close()
        raise InputError(f"exchange {config.probe_exchange!r} does not exist on that broker"
                         ) from None
    return connection, exchange


async def _probe_forever(config: TraceConfig, publisher, probes: dict[str, Probe], group: str,
                         rate: float) -> None:
    """A watch's probes: `rate` a second into the group until cancelled, a round a minute
    (one tracer throughout: its sequence numbers go on counting)."""
    tracer, sent = Tracer("mqprobe-trace"), 0
    while True:
        await _send_probes(replace(config, rate=rate, duration_s=60.0), publisher, probes, group,
                           first_seq=sent, tracer=tracer)
        sent += max(1, round(rate * 60.0))


STOP_S = 10.0  # the longest a trace waits for one of its parts to stop


async def _within(stopping: Awaitable[object], seconds: float) -> None:
    """Wait for a part to stop, at most `seconds`; then go on without it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping, seconds)


async def _send_probes(config: TraceConfig, publisher, probes: dict[str, Probe], group: str,
                       first_seq: int = 0, tracer: Tracer | None = None) -> None:
    import aio_pika

    _connection, exchange = publisher
    tracer = tracer or Tracer("mqprobe-trace")
    count = max(1, round(config.rate * config.duration_s))
    start = now_ns()
    pending = []

    async def send(message: aio_pika.Message, key: str, probe: Probe) -> None:
        with contextlib.suppress(aio_pika.exceptions.DeliveryError):
            await exchange.publish(message, key)
            probe.confirmed = True

    for seq in range(first_seq, first_seq + count):
        delay = (start + (seq - first_seq) * 1e9 / config.rate - now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if config.via == VIA_MANAGER:
            trace_id, t_pub = new_trace_id(), now_ns()
            message, key = manager_probe(config, PublishStamp(trace_id, group, seq,
                                                              t_pub, t_pub)), "*"
        else:
            headers = tracer.publish_headers(group)
            trace_id, t_pub = parse_traceparent(headers[TRACEPARENT])[0], now_ns()
            message = aio_pika.Message(b"mqprobe trace probe", headers=headers)
            key = config.routing_key.format(group=group)
        probe = probes[trace_id] = Probe(seq, t_pub)
        pending.append(asyncio.get_running_loop().create_task(send(message, key, probe)))
    # a confirm RabbitMQ never sends (frozen, gone) leaves its probe unconfirmed, not the
    # trace waiting: the probe's own timeout bounds the wait
    _done, late = await asyncio.wait(pending, timeout=config.timeout_s) if pending else ((), ())
    for task in late:
        task.cancel()


def manager_probe(config: TraceConfig, stamp: PublishStamp):
    """A probe as python-socketio's AsyncAioPikaManager publishes an emit: JSON, persistent,
    routing key `*`; its data starts with the mqprobe field, unstamped by any server."""
    import aio_pika

    message = {"method": "emit", "event": config.event,
               "data": {"mqprobe": socketio_field(stamp, UNSTAMPED_NODE, 0, 0),
                        "probe": "mqprobe trace"},
               "namespace": "/", "room": config.room.format(group=stamp.group),
               "skip_sid": None, "callback": None, "host_id": f"mqprobe-trace-{stamp.trace_id}"}
    return aio_pika.Message(json.dumps(message).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


@dataclass(frozen=True)
class ReplayedGroup:
    """One group of a saved run, as `mqprobe trace --from` shows it: the run, the group's
    figures, and the deliveries sampled in it (group, seq, t_plan, t_pub, t_deq, t_emit,
    t_recv)."""

    run: RunRecord
    figures: GroupFigures
    samples: list[tuple[int, ...]]


def replay(result: Comparison, group: str) -> list[ReplayedGroup]:
    """The traced group of each saved run that has it (load_result read every part)."""
    out = []
    for i, run in enumerate(result.runs, 1):
        found = run.groups.get(group)
        if found is None:
            continue
        samples = run.samples or ()
        if not all(len(s) == 7 and all(type(v) is int for v in s[1:]) for s in samples):
            raise ResultFormatError(f"run {i}'s samples are not [group, seq, t_plan, t_pub, "
                                    "t_deq, t_emit, t_recv] rows of integers")
        mine = [s for s in samples if str(s[0]) == group]
        if len(mine) > found.figures.counts.delivered:  # samples are of what was delivered
            raise ResultFormatError(
                f"run {i}'s group {group} counts {found.figures.counts.delivered} deliveries "
                f"yet holds {len(mine)} samples of them: the file was changed after mqprobe "
                "wrote it")
        out.append(ReplayedGroup(run, found.figures, mine))
    return out


class BrokerWatch:
    """What trace sees of the broker while it watches: the servers' queues' depth, alarms
    and flow control (QueueSampler, whose depth reads are also trace's own control link to
    the broker), the probe publisher's link, and a local broker's own counters (a CPU
    sampler of its processes). Nothing, without a broker URL."""

    def __init__(self, config: TraceConfig, queues: list[str], owners: dict[str, str]) -> None:
        self.config = config
        self.names = list(dict.fromkeys([*config.queues, *queues]))
        self.owners = owners
        self.sampler: QueueSampler | None = None
        self.cpu: CpuSampler | None = None
        self.link: LinkWatch | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        config = self.config
        if not config.amqp_url:
            return
        if not self.names and config.management_url and config.probe_exchange:
            # no server named its queues (no mqprobe code in them): those bound to the
            # group's exchange are theirs
            self.names = await asyncio.to_thread(bound_queues, config.management_url,
                                                 config.amqp_url, config.probe_exchange)
        # a trace watches a handful of queues: their depth 10 times a second catches a
        # backlog a 300 ms stall leaves; a watch for hours, probing once a second, reads
        # them 4 times a second, the broker's CPU twice and its APIs every 5 s (as a trace
        # reads them, it cost 4% of a core)
        watching = config.duration_s == 0
        self.sampler = QueueSampler(config.amqp_url, self.names, config.management_url,
                                    interval_s=0.25 if watching else 0.1, owners=self.owners,
                                    api_every_s=5.0 if watching else 1.0)
        pids = broker_processes(config.amqp_url)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.sampler.run()))
        if pids:
            self.cpu = CpuSampler({PieceRole.BROKER: pids})
            self._tasks.append(loop.create_task(self.cpu.run(0.5 if watching else 0.1)))

    def watch_probe_link(self, connection) -> None:
        self.link = LinkWatch(connection)
        self.link.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.link:
            await self.link.stop()

    def forget_before(self, t_ns: int) -> None:
        """What the broker went through before t_ns, which no episode needs any more: its
        depth samples, intervals, links and CPU windows (a watch runs for hours in flat
        memory). The open intervals and the latest depth of each queue are kept."""
        sampler = self.sampler
        if sampler:
            after_s = (t_ns - sampler.started_ns) / 1e9
            for name, points in sampler.series.items():
                sampler.series[name] = [p for p in points[:-1] if p[0] >= after_s] + points[-1:]
            sampler.link[:] = [row for row in sampler.link if row[0] >= t_ns]
            sampler.events.events = [e for e in sampler.events.events if e.end_ns >= t_ns]
        if self.link:
            rows = [row for row in self.link.rows if row[0] >= t_ns]
            self.link.rows.clear()
            self.link.rows.extend(rows)
        if self.cpu:
            self.cpu.forget_before(t_ns)

    def events(self) -> list[TimedEvent]:
        cpu = self.broker_cpu()
        return [*(self.sampler.timeline() if self.sampler else []),
                *(cpu.stopped_events() if cpu else [])]

    def evidence(self) -> BrokerEvidence:
        return self.sampler.summary() if self.sampler else BrokerEvidence.not_measured()

    def probe_rows(self) -> list[list[int]]:
        return [list(row) for row in self.link.rows] if self.link else []

    def control_rows(self) -> list[list[int]]:
        return [list(row) for row in self.sampler.link] if self.sampler else []

    def broker_cpu(self) -> BrokerCpu | None:
        return self.cpu.broker_cpu() if self.cpu else None

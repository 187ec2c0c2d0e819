"""One topology x layout on a workload, pieces as processes, phase by phase: start the
nodes, join the swarms, set the clocks, measure; then, whatever happened, stop every piece,
keep what each measured and remove what the run declared.

Nodes, swarm and publisher run as separate processes (sharing one event loop would make
each one's delay the others').
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mqprobe.broker.cleanup import remove_declared
from mqprobe.broker.connect import default_management_url
from mqprobe.broker.prometheus import RUNTIME_SOURCE
from mqprobe.broker.sampler import QueueSampler
from mqprobe.broker.topology import Topology
from mqprobe.clocks import ClockOffset
from mqprobe.model import LOAD_PIECE, Layout, PieceRole, QueueType, RunPhase
from mqprobe.pieces.inject import FREEZE_AFTER_S, CpuQuota, DelayingProxy, Faults, freeze, proxied_url
from mqprobe.pieces.node import NodeConfig
from mqprobe.pieces.process import Piece, RunError, RunInterrupted, run_to_the_end
from mqprobe.pieces.publisher import PublishConfig, schedule
from mqprobe.pieces.swarm import SwarmConfig, plan_members
from mqprobe.protocol import (
    EventName,
    NodeResult,
    PublisherResult,
    Reset,
    Settle,
    SwarmResult,
)
from mqprobe.records import Latency
from mqprobe.result import Comparison, RunRecord
from mqprobe.run.assemble import PieceResults, assemble
from mqprobe.run.placement import Placement, clock_command
from mqprobe.run.workload import Workload
from mqprobe.verdict.analysis import Failure
from mqprobe.watch.footprint import CpuSampler, Reported, broker_processes

if TYPE_CHECKING:
    from mqprobe.pieces.piece import PieceConfig


@dataclass
class Phase:
    """What the caller's progress display is told."""

    run: str
    phase: RunPhase
    done: int = 0
    total: int = 0
    note: str = ""


Observer = Callable[[Phase], None]


LOAD_ROOM = "load"  # the group its members join: nothing is published to it
STOP_S = 20.0  # for a piece to hand over its result once asked to stop...
STOP_S_PER_CLIENT = 0.002  # ...and for each client a node was serving (it sees each one go)


async def _stop_all(children: list[Piece], timeout: float = STOP_S) -> list[dict | None]:
    return list(await asyncio.gather(*(c.stop(timeout) for c in children)))


async def run_one(topology: Topology, layout: Layout, workload: Workload, amqp_url: str,
                  run_dir: Path, label: str, observe: Observer,
                  management_url: str | None = None, placement: Placement | None = None,
                  prometheus_url: str = "") -> RunRecord:
    """One topology x layout on the workload; returns its result. The phases
    are OneRun's; whatever happens in them, every piece is stopped, what each measured is
    kept, and what the run declared is removed."""
    run = OneRun(topology, layout, workload, amqp_url, run_dir / label, label, observe,
                 management_url, placement or Placement(listen_host=workload.listen_host),
                 prometheus_url)
    try:
        for phase, step in (("start", run.start_nodes), ("join", run.connect_swarms),
                            ("clocks", run.set_clocks), ("measure", run.measure)):
            with run.timed(phase):
                await step()
    except RunError as exc:
        run.fail(exc.piece or "run", str(exc))
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: stop the pieces, keep what they have
        run.interrupt()
    finally:
        for sampling in (run.sampling, run.cpu_sampling):
            if sampling:
                sampling.cancel()
        # a Ctrl-C while the pieces stop waits for them: none is left running
        with run.timed("stop"):
            cleanup, cancelled = await run_to_the_end(run.stop_and_clean())
        if cancelled:
            run.interrupt()
    return run.result(cleanup)


INTERRUPTED_PROSE = "interrupted: stopped before it finished"


class OneRun:
    """The pieces of one run and what they gave, phase by phase: start_nodes,
    connect_swarms, set_clocks, measure, then (always) stop_and_clean and result."""

    def __init__(self, topology: Topology, layout: Layout, workload: Workload, amqp_url: str,
                 log_dir: Path, label: str, observe: Observer, management_url: str | None,
                 placement: Placement, prometheus_url: str = "") -> None:
        self.topology, self.layout, self.workload = topology, layout, workload
        self.amqp_url, self.management_url, self.placement = amqp_url, management_url, placement
        self.prometheus_url = prometheus_url
        self.phases_s: dict[str, float] = {}
        self.log_dir, self.label, self.observe = log_dir, label, observe
        self.prefix = f"mqprobe.{uuid.uuid4().hex[:8]}."
        self.env = dict(os.environ, MQPROBE_AMQP_URL=amqp_url)
        self.nodes: list[Piece] = []
        self.ready: list[dict] = []  # each node's ready event: its address and queues
        self.swarms: list[Piece] = []
        self.load: Piece | None = None  # --inject churn, client-stall: members apart
        self.publisher: Piece | None = None
        self.clocks: dict[str, ClockOffset] = {}
        self.clocks_differ = False
        self.results = PieceResults(nodes=[], swarms=[], publisher=None, load=None)
        self.failure: Failure | None = None
        self.error = ""  # set by fail(): what stopped the run before it finished
        self.sampler: QueueSampler | None = None  # made once the nodes have named their queues
        self.sampling: asyncio.Task | None = None
        self.cpu: CpuSampler | None = None  # every local piece's CPU, while measuring
        self.broker_processes: list[int] = []  # found before measuring (a scan of /proc)
        self.cpu_sampling: asyncio.Task | None = None
        self.proxy: DelayingProxy | None = None  # --inject link-delay
        self.proxied_env = self.env  # for the pieces whose link it delays
        self.broker_quota: CpuQuota | None = None  # --inject broker-throttle
        self.freezing: asyncio.Task | None = None  # --inject broker-freeze
        log_dir.mkdir(parents=True, exist_ok=True)

    def _piece(self, role: PieceRole, index: int, name: str, config: PieceConfig) -> Piece:
        delayed = self.proxy is not None and (
            not self.workload.faults.link_pieces or
            (f"n{index + 1}" if role == PieceRole.NODE else role.value) in self.workload.faults.link_pieces)
        return self.placement.make(role, index, name, config, self.log_dir,
                                   self.proxied_env if delayed else self.env, self.label)

    def _delay_links(self) -> None:
        """--inject link-delay: a delaying proxy on loopback in front of the broker, for the
        pieces it names (all by default); compare's own sampler keeps the direct link."""
        faults = self.workload.faults
        if not faults.link_delay_s or self.proxy is not None:
            return
        parts = urllib.parse.urlsplit(self.amqp_url)
        self.proxy = DelayingProxy(parts.hostname or "127.0.0.1", parts.port or 5672,
                                   faults.link_delay_s, faults.link_jitter_s)
        self.proxied_env = dict(self.env,
                                MQPROBE_AMQP_URL=proxied_url(self.amqp_url, self.proxy.start()))

    def _upset_broker(self) -> None:
        """--inject broker-throttle and broker-freeze, on the broker's processes here."""
        faults = self.workload.faults
        if faults.on_the_broker and not self.broker_processes:
            raise RunError(f"--inject {', '.join(faults.on_the_broker)} needs the broker's "
                           "processes on this host (the managed broker)")
        if faults.broker_throttle_share:
            self.broker_quota = CpuQuota(f"mqprobe-broker-{os.getpid()}",
                                         faults.broker_throttle_share)
            self.broker_quota.join(self.broker_processes)
        if faults.broker_freeze_s:
            self.freezing = asyncio.get_running_loop().create_task(
                freeze(self.broker_processes, FREEZE_AFTER_S, faults.broker_freeze_s))

    async def _calm_broker(self) -> None:
        """Undo what _upset_broker did, whatever happened meanwhile."""
        if self.freezing:
            self.freezing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.freezing
        if self.broker_quota:
            self.broker_quota.remove()
            self.broker_quota = None

    def fail(self, piece: str, message: str) -> None:
        """The run stopped on an error: the first one seen (or a signal) is the one the
        verdict names, and the progress shows the run as failed."""
        if self.failure is None:
            self.failure = Failure(piece, message, time.time_ns())
            self.error = message

    def interrupt(self) -> None:
        """A signal stopped the run (Ctrl-C, SIGTERM, SIGHUP), unless an error came first."""
        if self.failure is None:
            self.failure = Failure.interruption(INTERRUPTED_PROSE, time.time_ns())
            self.error = INTERRUPTED_PROSE

    async def start_nodes(self) -> None:
        """The nodes, ready, with the queues they consume (the sampler watches those)."""
        workload, topology = self.workload, self.topology
        self.observe(Phase(self.label, RunPhase.STARTING, note=f"{workload.nodes} nodes"))
        faults = workload.faults
        self._delay_links()
        every_node = Faults(server_delay_s=faults.server_delay_s)
        # only node n1 stalls: a stall on every node would hide which one the verdict names
        first_node = replace(every_node, stall_s=faults.stall_s,
                             stall_every_s=faults.stall_every_s, stall_spin=faults.stall_spin,
                             throttle_share=faults.throttle_share)
        self.nodes = [self._piece(PieceRole.NODE, i, f"node{i + 1}", NodeConfig(
            node_id=f"n{i + 1}", amqp_url="", topology=topology, layout=self.layout,
            groups=workload.groups, prefix=self.prefix, port=0,
            faults=first_node if i == 0 else every_node,
            ping_interval_s=workload.ping_interval_s, ping_timeout_s=workload.ping_timeout_s,
            tcp_keepalive_s=workload.tcp_keepalive_s))
            for i in range(workload.nodes)]
        await asyncio.gather(*(n.start() for n in self.nodes))
        self.broker_processes = broker_processes(self.amqp_url)
        self.ready = await asyncio.gather(*(n.wait_for(EventName.READY, 60) for n in self.nodes))
        owners = {name: event["node"] for event in self.ready for name in event.get("queues", [])}
        # a stream's message count is its length, not what waits: no backlog to read in it
        stream = topology.queue_type == QueueType.STREAM
        queues = [] if stream else list(owners)
        if workload.faults.broker_delay_ms:
            queues += [f"{name}.delay" for name in topology.exchanges(self.prefix, workload.groups)]
        self.sampler = QueueSampler(
            self.amqp_url, queues, self.management_url or default_management_url(self.amqp_url),
            owners=owners, management_given=self.management_url is not None,
            not_sampled="stream queues: a stream's count is its length, not a backlog"
            if stream else "", prometheus_url=self.prometheus_url)

    async def connect_swarms(self) -> None:
        """Every client joined, or RunError; the publisher started meanwhile (it sends from
        its Reset, in measure)."""
        workload = self.workload
        urls = [f"http://{event['host']}:{event['port']}" for event in self.ready]
        sizes = dict(zip(workload.groups, workload.group_sizes, strict=True))
        self.swarms = [self._piece(PieceRole.SWARM, i, f"swarm{i + 1}", SwarmConfig(
            node_urls=urls, group_sizes=sizes, slice_index=i, slice_count=workload.swarms,
            samples=workload.samples)) for i in range(workload.swarms)]
        await asyncio.gather(*(s.start() for s in self.swarms))
        # the publisher starts meanwhile (a process, a connection): it sends from its Reset
        self.publisher = self._piece(PieceRole.PUBLISHER, 0, "publisher", PublishConfig(
            amqp_url="", topology=self.topology, groups=workload.groups, rate=workload.rate,
            size=workload.size, duration_s=workload.duration_s, prefix=self.prefix,
            broker_delay_ms=workload.faults.broker_delay_ms))
        await self.publisher.start()
        clients = sum(workload.group_sizes)
        await _follow([*self.swarms, *self.nodes, self.publisher], RunPhase.CONNECTING,
                      self.label, self.observe,
                      lambda: _latest(self.swarms, EventName.PROGRESS, "joined"), clients,
                      lambda: all(EventName.READY in s.latest for s in self.swarms), timeout=180,
                      late=f"{RunPhase.CONNECTING} did not finish within 180 s")
        joined = sum(s.latest[EventName.READY]["joined"] for s in self.swarms)
        if joined < clients:
            first = next((s.latest[EventName.READY].get("first_error") for s in self.swarms
                          if s.latest[EventName.READY].get("first_error")), "")
            raise RunError(f"only {joined} of {clients} clients joined their group"
                           + (f" ({first})" if first else ""))
        await self._load()

    async def _load(self) -> None:
        """--inject churn or client-stall: a load process beside the swarms (on the last
        swarm's host), with as many members as they have (the seed's fourth load process
        beside three of its size), joined before measuring to a room nothing is published to:
        they cost the servers their connections alone, not fan-out, so what the measured
        members' tail shows of them is their connections' cost. Its members churn or stall
        from Reset, and are reported apart (figures.ChurnFigures)."""
        workload, faults = self.workload, self.workload.faults
        if not faults.load:
            return
        sizes = {LOAD_ROOM: sum(workload.group_sizes)}
        urls = [f"http://{event['host']}:{event['port']}" for event in self.ready]
        self.load = self._piece(PieceRole.SWARM, workload.swarms - 1, LOAD_PIECE, SwarmConfig(
            node_urls=urls, group_sizes=sizes, keep_records=False,
            churn_per_s=faults.churn_per_s, stall_s=faults.client_stall_s,
            stall_every_s=faults.client_stall_every_s))
        await self.load.start()
        ready = await self.load.wait_for(EventName.READY, 180)
        if ready.get("joined", 0) < sum(sizes.values()):
            raise RunError(f"only {ready.get('joined', 0)} of the load process's "
                           f"{sum(sizes.values())} members joined their group"
                           + (f" ({ready['first_error']})" if ready.get("first_error") else ""))

    @property
    def _clients(self) -> list[Piece]:
        """Every process holding socket.io members: the swarms, and the load process."""
        return self.swarms + ([self.load] if self.load else [])

    async def set_clocks(self) -> None:
        """Hops whose ends were stamped on different hosts are put onto the swarm's clock:
        applied by every swarm, or the run fails (never a silent `±`)."""
        self.clocks = await self.placement.clocks(self.workload.nodes, len(self.swarms))
        self.clocks_differ = any(not offset.same_clock for offset in self.clocks.values())
        if self.clocks_differ:
            await asyncio.gather(*(s.command(clock_command(self.clocks, f"swarm{i + 1}"))
                                   for i, s in enumerate(self.swarms)))
            if self.load:  # it is on the last swarm's host
                await self.load.command(clock_command(self.clocks, f"swarm{len(self.swarms)}"))

    async def measure(self) -> None:
        """Measuring starts (reset), the publisher sends, the swarms drain."""
        workload, publisher, sampler = self.workload, self.publisher, self.sampler
        assert publisher is not None and sampler is not None, "made by connect_swarms"
        # Loop lag and busy ratios count from here: connecting thousands of clients is
        # set-up, not part of what is measured.
        await asyncio.gather(*(c.command(Reset()) for c in self._clients + self.nodes))
        await publisher.wait_for(EventName.READY, 60)
        self.sampling = asyncio.get_running_loop().create_task(sampler.run())
        self._upset_broker()  # before the CPU sampler reads the broker's cgroup and quota
        self.cpu = self._cpu_sampler()
        self.cpu_sampling = asyncio.get_running_loop().create_task(self.cpu.run())
        await publisher.command(Reset())  # it sends from here
        total = len(workload.group_sizes) * max(1, round(workload.rate * workload.duration_s))
        limit = workload.duration_s + 120
        await _follow([publisher, *self.nodes, *self.swarms], RunPhase.PUBLISHING, self.label,
                      self.observe, lambda: _latest([publisher], EventName.PROGRESS, "sent"), total,
                      lambda: EventName.RESULT in publisher.latest, timeout=limit,
                      late=f"{RunPhase.PUBLISHING} did not finish within {limit:.0f} s")
        sent = self.results["publisher"] = cast("PublisherResult | None", publisher.result_data())
        members = dict(zip(workload.groups, workload.group_sizes, strict=True))
        published = sent.get("published", {}) if sent else {}
        expected = sum(n * members[g] for g, n in published.items())
        # after the last send, the swarms receive it all, or stop moving for 3 s: what is
        # missing then is lost, not late
        with self.timed("drain"):
            await _follow(self.swarms, RunPhase.DRAINING, self.label, self.observe,
                          lambda: _latest(self.swarms, EventName.PROGRESS, "delivered"),
                          expected,
                          lambda: _latest(self.swarms, EventName.PROGRESS, "delivered")
                          >= expected, timeout=workload.drain_s, still_s=3.0)
        # measuring ends here: stopping (the swarms first, thousands of clients leaving the
        # nodes) is not the run's, nor in its figures
        await asyncio.gather(*(c.command(Settle()) for c in self._clients + self.nodes))
        if self.clocks_differ:
            later = await self.placement.clocks(workload.nodes, len(self.swarms))
            self.clocks = {piece: offset.widened_by(later[piece])
                           for piece, offset in self.clocks.items()}

    def _cpu_sampler(self) -> CpuSampler:
        """Every piece on this host by its pid, the broker by the process listening on its
        port when it is local, and compare itself; the others named as not seen."""
        pids: dict[str, list[int]] = {}
        not_seen: dict[str, str] = {}
        named: list[tuple[str, Piece | None]] = [(f"n{i + 1}", n)
                                                  for i, n in enumerate(self.nodes)]
        named += [(s.name, s) for s in self._clients] + [("publisher", self.publisher)]
        for name, piece in named:
            if piece is not None and piece.pid:
                pids[name] = [piece.pid]
            else:
                not_seen[name] = "runs on another host (an agent)"
        reported: dict[str, Reported] = {}
        if self.broker_processes:
            pids["broker"] = self.broker_processes
        elif self.prometheus_url:  # a broker elsewhere: its CPU as its endpoint reports it
            not_seen["broker"] = "not a process on this host"
            reported["broker"] = Reported(RUNTIME_SOURCE,
                                          self.sampler.runtime if self.sampler else [])
        else:
            not_seen["broker"] = ("not a process on this host, and no --prometheus-url to read "
                                  "its CPU from (the management API reports none)")
        pids["compare"] = [os.getpid()]
        return CpuSampler(pids, not_seen, reported=reported)

    async def stop_and_clean(self) -> dict:
        """Stop every piece, keep what each gave, and remove what the run declared."""
        workload, swarms, nodes = self.workload, self.swarms, self.nodes
        await self._calm_broker()
        others = nodes + ([self.publisher] if self.publisher else [])
        # swarms first: a node closing its sockets must not count as a swarm disconnect
        # the load process first of all (its figures are apart, but one that died changed the
        # run, and fails it as any piece does)
        loaded = [self.load] if self.load else []
        stopped_load = await _stop_all(loaded)
        if self.load:
            self.results["load"] = cast("SwarmResult | None", stopped_load[0])
        stopped = await _stop_all(swarms)
        per_node = sum(workload.group_sizes) / workload.nodes
        stopped += await _stop_all(others, STOP_S + per_node * STOP_S_PER_CLIENT)
        every, gave = loaded + swarms + others, stopped_load + stopped
        # a piece that ended before it was asked to (killed, crashed) fails the run
        for piece, got in zip(every, gave, strict=True):
            if self.failure is None and got is None and piece.died_early:
                self.failure = Failure(piece.name, piece.failure() or f"{piece.name} exited early",
                                       piece.latest[EventName.EXIT].get("at_ns", 0))
        # one that ran to the end but whose figures never came: the verdict must not read
        # their absence as idle consumers or a quiet publisher
        for piece, got in zip(every, gave, strict=True):
            if self.failure is None and got is None and not piece.died_early:
                # it ended without one (how, and its log's last line, say why), or never answered
                self.failure = Failure(piece.name, f"{piece.name} gave no result when asked to "
                                       f"stop: its figures are missing{piece.how_it_ended()}",
                                       time.time_ns(), gave_no_result=True)
        # a swarm that gave no result still had members: they received nothing we can show
        self.results["swarms"] = [
            cast(SwarmResult, got)
            or silent_swarm(workload, i, len(swarms), swarms[i].latest.get(EventName.PROGRESS),
                            swarms[i].last_heard_ns())
            for i, got in enumerate(stopped[:len(swarms)])]
        self.results["nodes"] = [cast(NodeResult, r)
                                 for r in stopped[len(swarms):len(swarms) + len(nodes)] if r]
        if self.results["publisher"] is None and self.publisher:
            self.results["publisher"] = (cast(PublisherResult, stopped[-1])
                                         or silent_publisher(workload, self.publisher))
        # nothing a run declared outlives it on the broker (yours, with --amqp-url), not
        # even the queues of a node that failed before it said their names
        exchanges = self.topology.exchanges(self.prefix, workload.groups)
        delays = [f"{name}.delay" for name in exchanges] if workload.faults.broker_delay_ms else []
        planned = [name for i in range(workload.nodes)
                   for name, _groups in self.topology.queue_plan(self.prefix, self.layout,
                                                                 f"n{i + 1}", workload.groups)]
        queues = list(dict.fromkeys([*(self.sampler.names if self.sampler else []), *planned,
                                     *delays]))
        if self.proxy:
            self.proxy.stop()
        return await remove_declared(self.amqp_url, exchanges + delays, queues)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Where a run's wall time goes (issue: a default compare is mostly not measuring):
        seconds per phase, in the result as `phases_s`."""
        began = time.monotonic()
        try:
            yield
        finally:
            self.phases_s[phase] = round(self.phases_s.get(phase, 0.0)
                                         + time.monotonic() - began, 3)

    def result(self, cleanup: dict) -> RunRecord:
        """The run's result, with its verdict; RunInterrupted carries it on a Ctrl-C."""
        with self.timed("assemble"):
            run = assemble(self.topology, self.layout, self.workload, self.results,
                           self.sampler, self.clocks, self.failure, self.cpu)
        phases = dict(self.phases_s)
        if "drain" in phases and "measure" in phases:  # measure's own time, drain apart
            phases["measure"] = round(phases["measure"] - phases["drain"], 3)
        run = replace(run, declared={"prefix": self.prefix, **cleanup}, phases_s=phases)
        self.observe(Phase(self.label, RunPhase.FAILED if self.error else RunPhase.DONE,
                           note=self.error or run.verdict.culprit))
        if self.failure and self.failure.interrupted:
            raise RunInterrupted(Comparison((run,)))
        return run


def silent_swarm(workload: Workload, index: int, count: int,
                 last: dict | None = None, heard_ns: int = 0) -> SwarmResult:
    """What a swarm that gave no result (killed, crashed, its host gone) stands for: its
    planned members, with what they had received by its last progress report (a lower
    bound; its hop figures are gone), so what they missed counts as lost, not as nothing;
    and when it (its host) was last heard, from which the nodes' connections to it that
    outlived it are told (verdict.connections)."""
    sizes = dict(zip(workload.groups, workload.group_sizes, strict=True))
    members = plan_members(SwarmConfig([""] * workload.nodes, sizes, index, count))
    reported = (last or {}).get("delivered_by_group") or {}
    groups = {g: {"members": 0, "delivered": int(reported.get(g, 0)), "duplicated": 0}
              for g in sizes}
    for member in members:
        groups[member.group]["members"] += 1
    return cast(SwarmResult, {
        "planned": len(members), "joined": (last or {}).get("joined", 0), "failed": 0,
        "disconnects": 0, "groups": groups, "self_lag": Latency().to_json(), "silent": True,
        "silent_since_ns": heard_ns})


def silent_publisher(workload: Workload, publisher: Piece) -> PublisherResult:
    """What a publisher that gave no result had sent, from its last progress report: the
    schedule is fixed, so the first `sent` entries of it say which groups (at least)."""
    sent = publisher.latest.get(EventName.PROGRESS, {}).get("sent", 0)
    published = dict.fromkeys(workload.groups, 0)
    for _offset, group, _seq in schedule(workload.groups, workload.rate,
                                         workload.duration_s)[:sent]:
        published[group] += 1
    return cast(PublisherResult, {
        "sent": sent, "published": published, "silent": True,
        "first_error": "gave no result: counts are from its last progress report"})


async def _follow(watched: list[Piece], phase: RunPhase, label: str, observe: Observer,
                  count: Callable[[], int], total: int, done: Callable[[], bool], timeout: float,
                  *, late: str = "", still_s: float = 0.0) -> None:
    """Report a phase's progress (count() of total) every 0.2 s until done(). A failure of
    any watched piece ends it with RunError; so does the timeout, when `late` says why (else
    the phase just ends there), and, with still_s, a count that stopped moving that long."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while not done():
        for piece in watched:
            if problem := piece.failure():
                raise RunError(problem, piece.name)
        now = time.monotonic()
        if now > deadline:
            if late:
                raise RunError(late)
            return
        counted = count()
        observe(Phase(label, phase, min(counted, total), total))
        if counted != last:
            last, last_change = counted, now
        elif still_s and now - last_change > still_s:
            return
        await asyncio.sleep(0.2)
    observe(Phase(label, phase, total, total))


def _latest(pieces: list[Piece], kind: str, field: str) -> int:
    """The sum of one field of the pieces' latest `kind` events."""
    return sum(p.latest.get(kind, {}).get(field, 0) for p in pieces)



"""A run's verdict, from its facts (its typed figures, timeline and faults), and what its
repeats agreed on. (What the pieces recorded becomes those figures in merge, and its
timeline on one clock in run_timeline.)

The verdict rests on the attribution (mqprobe.verdict.attribution): the
culprit whose causes together explain the largest share of the tail's excess, its largest
cause, and the next ones with their shares. Faults of the whole run (the broker gone, a
piece dead, messages refused, lost deliveries) come first, and lost deliveries are never
`none`. The verdict names only evidence that was measured in this run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from mqprobe.figures import (
    Attribution,
    BrokerCpu,
    BrokerEvidence,
    ChurnFigures,
    Counts,
    CpuUse,
    GroupFigures,
    HeldAtEnd,
    HopFigures,
    LinkFigures,
    LoopLag,
    MqLegs,
    NodeFigures,
    PublisherFigures,
    SwarmFigures,
    Verdict,
)
from mqprobe.model import (
    HOST_CPU,
    INSTRUMENT_ROLES,
    PATH_HOPS,
    PROSE,
    Cause,
    Culprit,
    HopName,
    PieceRole,
    Tail,
    is_node_piece,
    role_of,
)
from mqprobe.result import RunRecord
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.attribution import (
    BROKER,
    BROKER_BUSY,
    CONTROL_LINK,
    PAUSED_WITH,
    PUBLISHER,
    Charger,
    Intervals,
    MessageDeliveries,
    Timeline,
    attribute,
    mq_legs,
    stall_cause,
)
from mqprobe.verdict.connections import churn_lines, connection_cause, heartbeat_lines
from mqprobe.watch.profile import busy_line
from mqprobe.windows import Windows

SATURATED_CPU_SHARE = 0.7  # CPU share of a core through a stall above which it computed


# -- the verdict ---------------------------------------------------------------------------
@dataclass
class Failure:
    """A run that ended early: which piece, and its one sentence; or `interrupted`, a
    signal (Ctrl-C, SIGTERM, SIGHUP) stopped it, no piece at fault."""

    piece: str
    message: str
    at_ns: int = 0  # when it was seen to end, on our clock (0: not known)
    gave_no_result: bool = False  # it ran to the end but its figures never arrived
    interrupted: bool = False

    @classmethod
    def interruption(cls, message: str, at_ns: int) -> Failure:
        return cls("", message, at_ns, interrupted=True)

    @property
    def role(self) -> PieceRole | str:
        return role_of(self.piece)


@dataclass
class RunFacts:
    """What a verdict may rest on, beyond the attribution: the run's typed parts as they
    were built (assemble), or read once from a run's JSON (`of`: a saved result, a test)."""

    counts: Counts  # the run's, or the group's judged
    hops: dict[str, HopFigures] = field(default_factory=dict)
    self_lag: LoopLag = field(default_factory=lambda: LoopLag(0.0, 0.0, 0.0))  # the swarms'
    swarm: SwarmFigures = field(default_factory=SwarmFigures)
    publisher: PublisherFigures = field(default_factory=PublisherFigures)
    nodes: tuple[NodeFigures, ...] = ()
    broker: BrokerEvidence = field(default_factory=BrokerEvidence.not_measured)
    cpu_use: CpuUse = field(default_factory=lambda: CpuUse(False, "not sampled"))
    groups: dict[str, GroupFigures] = field(default_factory=dict)
    bounds: tuple[str, ...] = ()  # counts that are lower bounds, and why
    lost_at_most: bool = False  # `lost` is an upper bound: a swarm died before it reported
    held_at_end: HeldAtEnd = field(default_factory=HeldAtEnd)
    e2e_rows: list[list[float]] = field(default_factory=list)  # the timeline's e2e rows
    events: list[TimedEvent] = field(default_factory=list)
    t0_ns: int = 0
    failure: Failure | None = None
    cpu: dict[str, list[list[int]]] = field(default_factory=dict)  # cpu_series
    # every local piece's CPU per sample window ([start_ns, wall_ns, on_cpu_ns]), and the
    # host's busy CPU (HOST_CPU): CpuSampler.used_rows, the data, not the sampler
    used: dict[str, list[list[int]]] = field(default_factory=dict)
    broker_cpu: BrokerCpu | None = None  # a local broker's own counters (None: not local)
    links: dict[str, list[list[int]]] = field(default_factory=dict)  # AMQP links' round trips
    # the servers' pieces by the names they gave (a live trace's embedding servers), beside
    # compare's nodes (n1, n2...)
    servers: frozenset[str] = frozenset()
    churning: ChurnFigures | None = None  # --inject churn, client-stall: the load's members

    def is_server(self, piece: str) -> bool:
        return is_node_piece(piece) or piece in self.servers

    @classmethod
    def of(cls, run: RunRecord, events: list[TimedEvent] | None = None, t0_ns: int = 0,
           failure: Failure | None = None, **given: Any) -> RunFacts:
        """The facts of a run read back (a saved result, a test's run); `given` are parts
        as built."""
        e2e = run.timeline.e2e
        parts: dict[str, Any] = dict(
            counts=run.counts, hops=run.hops, self_lag=run.self_lag, swarm=run.swarm,
            publisher=run.publisher, nodes=run.nodes, broker=run.broker, cpu_use=run.cpu,
            groups={group: g.figures for group, g in run.groups.items()},
            bounds=run.bounds or (), lost_at_most=run.lost_at_most,
            held_at_end=run.held_at_end or HeldAtEnd(),
            e2e_rows=e2e.rows if e2e else [], churning=run.churning)
        return cls(**(parts | given), events=events or [], t0_ns=t0_ns, failure=failure)


def verdict(facts: RunFacts, attribution: Attribution | None, budget_ms: float) -> Verdict:
    """Which part of the path the tail belongs to, and why, from this run's evidence."""
    counts = facts.counts
    hops, swarm = facts.hops, facts.swarm
    count_lines = _count_evidence(facts, counts)
    # a broker that refused connections is a fault of the whole run; one that was slow to
    # answer (paused, overloaded) is charged by the attribution, like any other interval
    if any(not e.detail.get("unresponsive") for e in _outages(facts)):
        return Verdict.of(Cause.BROKER_UNAVAILABLE, _outage_prose(facts),
                          _failure_evidence(facts) + count_lines)
    if facts.failure and facts.failure.interrupted:
        return Verdict.of(Cause.INTERRUPTED, f"stopped by the user "
                          f"{_at(facts.failure.at_ns, facts)} into the run: the figures cover "
                          "what was measured until then; deliveries still on their way count as "
                          "not delivered", count_lines)
    if facts.failure:
        role = facts.failure.role
        cause = (Cause.NODE_DIED if role == PieceRole.NODE and not facts.failure.gave_no_result
                 else Cause.INSTRUMENT_FAILED)
        when = f" ({_at(facts.failure.at_ns, facts)} into the run)" if facts.failure.at_ns else ""
        return Verdict.of(cause, f"{PROSE[cause]}{when}: {facts.failure.message}",
                          _failure_evidence(facts) + count_lines)
    refused = facts.publisher.refused
    if refused:
        first = facts.publisher.first_error or "nacked by the broker"
        return Verdict.of(Cause.PUBLISH_REJECTED, f"{refused} of {counts.published} messages "
                          f"were refused or failed at publish ({first})", count_lines)
    if swarm.failed or swarm.disconnects:
        return Verdict.of(Cause.INSTRUMENT_FAILED,
                          f"{swarm.failed} clients failed to connect and {swarm.disconnects}"
                          f" disconnected during the run ({swarm.reconnects} came back; "
                          "the server may have dropped them: see its log); counts and figures "
                          "are not to be trusted", count_lines)
    if attribution is None:
        if counts.lost:
            return _lost(counts, facts.nodes, count_lines)
        if counts.published == 0:
            return Verdict.of(Cause.INSTRUMENT_FAILED, "nothing was published", count_lines)
        return Verdict.of(Cause.NOTHING_MEASURED, evidence=count_lines)
    evidence = count_lines + [
        f"e2e p99 {hops[HopName.E2E].p99_ms} ms (budget {budget_ms:g} ms); p99 by hop: "
        + ", ".join(f"{hop} {hops[hop].p99_ms} ms" for hop in PATH_HOPS),
        _tail_line(attribution, budget_ms)]
    if attribution.shares:
        evidence.append("tail excess by cause: " + "; ".join(
            f"{s.culprit.value}: {s.cause.value} {s.share:.0%} ({s.mean_ms:.2f} ms a delivery)"
            for s in attribution.shares if s.share >= 0.005))
    evidence.append(_self_lag_line(facts.self_lag, swarm, attribution))
    evidence += footprint_lines(facts.cpu_use)
    evidence += [line for node in facts.nodes
                 if (line := busy_line(node.node, node.profile or {}))]
    if attribution.tail == Tail.P99 or not attribution.shares:  # the budget is met
        if counts.lost:  # ...by what arrived: the loss is the story, never `none`
            return _lost(counts, facts.nodes, evidence)
        return Verdict.of(Cause.WITHIN_BUDGET, evidence=evidence, shares=attribution.shares)
    culprit, together = top_culprit(attribution)
    top = next(s for s in attribution.shares if s.culprit == culprit)
    evidence += _cause_evidence(top.cause, facts)
    prose = f"{_cause_prose(top.cause, facts)} ({top.share:.0%} of the tail excess"
    prose += (f"; {culprit.value} causes {together:.0%} in all)" if together - top.share >= 0.005
              else ")")
    after = [s.label() for s in attribution.shares if s is not top and s.share >= 0.005][:2]
    if after:
        prose += "; then " + ", ".join(after)
    return Verdict(top.culprit, top.cause, prose, evidence, attribution.shares)


def top_culprit(attribution: Attribution) -> tuple[Culprit, float]:
    """The culprit whose causes together explain the largest share of the tail's excess
    (its largest single cause need not be the largest of all), and that share."""
    sums: dict[Culprit, float] = {}
    for share in attribution.shares:
        sums[share.culprit] = sums.get(share.culprit, 0.0) + share.share
    culprit = max(sums, key=sums.__getitem__)
    return culprit, sums[culprit]


def charged_events(swarm: SwarmFigures, events: list[TimedEvent]) -> list[TimedEvent]:
    """The intervals the attribution may charge a delivery to: all of them, but the swarm's
    own stalls and collections when its receive stamps are the kernel's."""
    if not swarm.kernel_stamped:
        return list(events)
    return [e for e in events if not (e.piece.startswith("swarm")
                                      and e.kind in (EventKind.GC, EventKind.LOOP_STALL))]


def _self_lag_line(lag: LoopLag, swarm: SwarmFigures, attribution: Attribution) -> str:
    """The swarm's own loop lag, and what it means for this run's receive stamps."""
    head = f"swarm loop lag p99 {lag.p99} ms, max {lag.max} ms"
    if swarm.kernel_stamped:
        source = swarm.t_recv_source
        return (f"{head}; receive stamps are the kernel's ({sum(source.values())} deliveries, "
                f"{source.get('kernel_shared', 0)} sharing a read), so it is not in delivery")
    return (f"{head}: the error bar of every receive stamp; it explains "
            f"{attribution.share_of(Cause.SWARM_SATURATED):.0%} of the tail excess")


def _outages(facts: RunFacts) -> list[TimedEvent]:
    return [e for e in facts.events if e.kind == EventKind.BROKER_UNAVAILABLE]


def _outage_prose(facts: RunFacts) -> str:
    """When and how long the broker could not be reached (or did not answer)."""
    down = _outages(facts)
    last = max(down, key=lambda e: e.end_ns)
    until = ("until the run ended" if last.detail.get("until_end") else
             f"to {_at(last.end_ns, facts)} of the run")
    how = ("could not be reached" if any(not e.detail.get("unresponsive") for e in down)
           else "did not answer")
    spans = Intervals((e.start_ns, e.end_ns) for e in down)
    text = (f"RabbitMQ {how} from {_at(spans.starts[0], facts)} {until} "
            f"({sum(e - s for s, e in zip(spans.starts, spans.ends, strict=True)) / 1e9:.1f} s "
            f"in all, {len(spans.starts)} time(s))")
    stopped = [e for e in down if e.detail.get("stopped")]
    if stopped:
        text += (f": its process was stopped (SIGSTOP, a debugger or a frozen container) "
                 f"{sum(e.duration_ns for e in stopped) / 1e9:.1f} s, not slow")
    return text


def _at(t_ns: int, facts: RunFacts) -> str:
    return f"{(t_ns - facts.t0_ns) / 1e9:.1f} s" if facts.t0_ns else "?"


def _count_evidence(facts: RunFacts, counts: Counts) -> list[str]:
    """The counts a verdict must mention (`counts`: the run's or a group's; the bounds on
    them and what was held at the end are the run's)."""
    out = list(facts.bounds)
    if counts.lost and facts.lost_at_most:  # what a dead swarm's members got, unreported
        out.append(f"at most {counts.lost} of {counts.expected_deliveries} deliveries lost: "
                   "only these were never reported, and some may have arrived")
    elif counts.lost:
        out.append(f"lost {counts.lost} of {counts.expected_deliveries} deliveries")
    if counts.not_delivered:
        held = facts.held_at_end
        out.append(f"fell behind: {counts.not_delivered} of {counts.expected_deliveries} "
                   "deliveries were still on their way when the run stopped (RabbitMQ held "
                   f"{held.broker_ready} ready messages, the nodes "
                   f"{held.nodes_in_hand} unhandled): late, not lost")
    if counts.duplicated:
        out.append(f"{counts.duplicated} duplicate deliveries")
    return out


def _failure_evidence(facts: RunFacts) -> list[str]:
    return [f"run failed: {facts.failure.message}"] if facts.failure else []


def _lost(counts: Counts, nodes: tuple[NodeFigures, ...], evidence: list[str]) -> Verdict:
    """Where deliveries were lost: before a node's handler, or after its emit."""
    short = [(n.node, n.handled) for n in nodes if n.handled < counts.published]
    if short:
        detail = ", ".join(f"{node} handled {handled} of {counts.published}"
                           for node, handled in short)
        return Verdict.of(Cause.LOST_BEFORE_NODE, f"{counts.lost} deliveries lost: messages "
                          f"never reached a node's handler ({detail})", evidence)
    return Verdict.of(Cause.LOST, f"{counts.lost} deliveries lost: every node emitted every "
                      "message, yet members never received some", evidence)


def _tail_line(attribution: Attribution, budget_ms: float) -> str:
    floors = ", ".join(f"{hop} {value:g}" for hop, value in attribution.floors_ms.items())
    which = (f"{attribution.tail_deliveries} of {attribution.deliveries} deliveries over the "
             f"{budget_ms:g} ms budget" if attribution.tail == Tail.OVER_BUDGET else
             f"the p99 tail ({attribution.tail_deliveries} of {attribution.deliveries} "
             "deliveries; the budget is met)")
    return (f"tail: {which}, {attribution.excess_ms:.2f} ms each beyond the floor "
            f"(ms: {floors})")


def _cause_prose(cause: Cause, facts: RunFacts) -> str:
    if cause == Cause.SERVER_STALL:
        return _stall_cause(facts)
    if cause in (Cause.CPU_STARVED, Cause.CPU_THROTTLED):
        return _cpu_cause(cause, facts)
    if cause == Cause.HOST_PAUSE:
        return _host_pause(facts)
    if cause == Cause.BROKER_STARVED:
        return _broker_starved(facts)
    if cause == Cause.BROKER_THROTTLED:
        return _broker_throttled(facts)
    if cause == Cause.NETWORK:
        return _network(facts)
    if cause == Cause.BROKER_BUSY:
        return _broker_busy(facts)
    if cause == Cause.BROKER_UNAVAILABLE and _outages(facts):
        return _outage_prose(facts)
    if cause == Cause.GC_PAUSE:
        gcs = [e for e in facts.events if e.kind == EventKind.GC and facts.is_server(e.piece)]
        if gcs:
            worst = max(gcs, key=lambda e: e.duration_ns)
            return (f"a node's garbage collector stopped its event loop ({len(gcs)} "
                    f"collections over 1 ms, the longest {worst.duration_ns / 1e6:.1f} ms, "
                    f"gen {worst.detail.get('generation', '?')} on {worst.piece})")
    return PROSE[cause]


def gc_began_lines(facts: RunFacts, shown: int = 3) -> list[str]:
    """Per node, what its loop was doing when an allocation began each collection over
    1 ms (the node's collector callback reads its own thread's stack): the work that
    allocated the most is the likeliest to cross the threshold. Said, never charged: a
    collection's length is what it finds alive, not who allocated last."""
    began: dict[str, dict[str, list[int]]] = {}
    for event in facts.events:
        if event.kind == EventKind.GC and facts.is_server(event.piece) \
                and (kind := event.detail.get("began_in")):
            tally = began.setdefault(event.piece, {}).setdefault(str(kind), [0, 0])
            tally[0] += 1
            tally[1] += event.duration_ns
    return [f"{node}'s {sum(n for n, _ns in kinds.values())} collections over 1 ms began "
            "in (its loop's work as an allocation crossed the collector's threshold): "
            + ", ".join(f"{kind} {n} ({ns / 1e6:.0f} ms)" for kind, (n, ns) in
                        sorted(kinds.items(), key=lambda item: -item[1][1])[:shown])
            for node, kinds in sorted(began.items())]


def gc_held_lines(facts: RunFacts, shown: int = 3) -> list[str]:
    """Per node, what its collector's oldest generation held as the run ended, beyond what
    set-up froze: what each full collection walked, by type, and its coroutines by code
    (whose waits they are: at 27,000 connections, engine.io's per-connection ping and
    pong waits were most of them)."""
    lines = []
    for node in facts.nodes:
        held = node.gc or {}
        if not held.get("oldest"):
            continue
        types_ = ", ".join(f"{kind} {n:,}" for kind, n in held.get("oldest_types", [])[:shown])
        waits = ", ".join(f"{code} {n:,}" for code, n in
                          held.get("oldest_coroutines", [])[:shown])
        lines.append(f"{node.node}'s collector's oldest generation held {held['oldest']:,} "
                     f"objects as the run ended, beyond the {held.get('frozen', 0):,} set-up "
                     f"froze (what each full collection walks): {types_}"
                     + (f"; its coroutines, by code: {waits}" if waits else ""))
    return lines


def node_stalls(facts: RunFacts, cause: Cause | None = None) -> list[TimedEvent]:
    """The nodes' loop stalls (of one cause, by attribution.stall_cause), longest first."""
    return sorted((e for e in facts.events if e.kind == EventKind.LOOP_STALL
                   and facts.is_server(e.piece) and (cause is None or stall_cause(e.detail) == cause)),
                  key=lambda e: -e.duration_ns)


def anatomy_text(detail: dict[str, Any]) -> str:
    """`120 ms computing, 80 ms waiting for a CPU`: a stall's parts, the ones over 0.5 ms."""
    parts = [(detail.get("on_cpu_ms", 0), "computing"), (detail.get("waiting_ms", 0),
             "waiting for a CPU"), (detail.get("throttled_ms", 0), "throttled by its CPU quota"),
             (detail.get("off_cpu_ms", 0), "off the CPU")]
    return ", ".join(f"{ms:.0f} ms {what}" for ms, what in parts if ms >= 0.5)


def _stall_cause(facts: RunFacts) -> str:
    """Blocked or computing, from the longest stall charged to the node's own code: off the
    CPU (or, without Linux's counters, a low CPU share) is blocked, else it computed; the
    code the watchdog saw hold the loop, when it saw one."""
    stalls = node_stalls(facts, Cause.SERVER_STALL)
    if not stalls:
        return "a node's event loop could not run"
    worst = stalls[0]
    detail, ms = worst.detail, f"{worst.duration_ns / 1e6:.0f}"
    where = f" in {detail['held_by']}" if detail.get("held_by") else ""
    if "off_cpu_ms" in detail:
        # its wait for a CPU is charged apart (cpu-starved): held off the CPU, or computing
        blocked = detail["off_cpu_ms"] > detail.get("on_cpu_ms", 0)
        parts = f" ({anatomy_text(detail)})"
    else:
        blocked = detail.get("cpu_share", 0.0) < SATURATED_CPU_SHARE
        parts = f" ({detail.get('cpu_share', 0.0):.0%} of a core; Linux's thread counters unread)"
    if blocked:
        return (f"a node's event loop was blocked: {worst.piece}'s loop was held {ms} ms"
                f"{where}{parts}; "
                "off the CPU, so a synchronous call (sleep, file or network I/O, a lock) held "
                "it, not computing")
    return (f"a node's event loop was saturated: {worst.piece} computed through its longest "
            f"stall of {ms} ms{where}{parts}")


def _host_pause(facts: RunFacts) -> str:
    """Which processes stopped together, when and how long, what the longest node stall
    was spent on, and what the hypervisor took."""
    paused = node_stalls(facts, Cause.HOST_PAUSE)
    if not paused:
        return PROSE[Cause.HOST_PAUSE]
    worst = paused[0]
    together = [e for e in facts.events if e.kind == EventKind.LOOP_STALL
                and (e is worst or e.piece in worst.detail[PAUSED_WITH])
                and e.start_ns < worst.end_ns and e.end_ns > worst.start_ns]
    lengths = sorted(e.duration_ns / 1e6 for e in together)
    text = (f"every process on this machine stopped at once: "
            f"{', '.join(sorted({e.piece for e in together}))} together "
            f"{_at(worst.start_ns, facts)} into the run for {lengths[0]:.0f}-{lengths[-1]:.0f} ms "
            f"({worst.piece}: {anatomy_text(worst.detail)}), mqprobe's own pieces with the "
            "nodes: the machine paused them (a hypervisor taking its CPUs, the kernel), not "
            "the code; the figures of that moment measured the machine")
    host = facts.cpu_use.host
    stolen = host.stolen_ms if host else 0
    if stolen:
        text += f"; the hypervisor took {stolen:.0f} ms of this machine's CPUs in the run (steal)"
    return text


def _cpu_cause(cause: Cause, facts: RunFacts) -> str:
    """Starved or throttled: how long the nodes' loops waited, in their stalls and through
    the run, and (from compare's sampler) who had the CPU meanwhile."""
    stalls = node_stalls(facts, cause)
    starved = cause == Cause.CPU_STARVED
    part = "waiting_ms" if starved else "throttled_ms"
    nodes = [(n.loop_cpu.waiting if starved else n.loop_cpu.throttled, n)
             for n in facts.nodes if n.loop_cpu]
    worst_share, worst = max(((s, n) for s, n in nodes if s), key=lambda pair: pair[0],
                             default=(0.0, None))
    what = ("was ready to run and waited for a CPU" if starved else
            "was ready to run and held back by its cgroup's CPU quota")
    text = f"a node {what}"
    if worst:
        text = (f"{worst.node} {what} {worst_share:.0%} of the run (its loop "
                f"computed {worst.loop_cpu.on_cpu if worst.loop_cpu else 0:.0%})")
    if stalls:
        text += (f"; {len(stalls)} stalls, {sum(e.detail.get(part, 0) for e in stalls):.0f} ms "
                 f"of it, the longest {stalls[0].duration_ns / 1e6:.0f} ms on {stalls[0].piece} "
                 f"({anatomy_text(stalls[0].detail)})")
    rows = next((rows for piece, rows in facts.used.items() if piece != HOST_CPU and rows), [])
    if starved and rows:
        # who had the CPU through the starved stalls, or through the run when none was long
        spans = ([(e.start_ns, e.end_ns) for e in stalls]
                 or [(rows[0][0], rows[-1][0] + rows[-1][1])])
        text += who_had_the_cpu(facts.used, spans)
    return text


STARVED_WINDOW = 0.1  # of a window one scheduler waited: the windows who_had_the_cpu reads


def broker_counter_lines(facts: RunFacts) -> list[str]:
    """What a local broker's own counters measured through the run: its schedulers'
    waits for a CPU, its cgroup's throttling and quota, the spans its process was stopped;
    for a broker elsewhere, that they cannot be seen from here."""
    broker = facts.broker_cpu
    if broker is None:
        return ["RabbitMQ is not a process on this host: its CPU quota and its waits for a "
                "CPU cannot be seen from here (run mqprobe on the broker's host to read them)"]
    most = max(broker.rows, key=lambda row: row[4])
    lines = [f"{_scheduler_waits(broker)}, one of them at most {most[4] / 1e6:.1f} ms of any "
             f"{most[1] / 1e6:.0f} ms (no message in RabbitMQ is charged more of a window "
             "than that)"]
    throttled = broker.throttled_ns()
    quota = (f"its cgroup's CPU quota is {broker.quota:.0%} of a CPU" if broker.quota
             else "its cgroup has no CPU quota")
    if not broker.cgroup_read:
        lines.append("RabbitMQ's cgroup counters could not be read: a CPU quota would not be seen")
    elif throttled:
        lines.append(f"{quota}, and held it back {throttled / 1e6:.0f} ms in the run")
    else:
        lines.append(f"{quota}; it never held RabbitMQ back")
    for start, end in broker.stopped:
        lines.append(f"RabbitMQ's process was stopped (SIGSTOP, a debugger or a frozen "
                     f"container) from {_at(start, facts)} to {_at(end, facts)} of the run")
    return lines


def _scheduler_waits(broker: BrokerCpu) -> str:
    on, waited = sum(row[2] for row in broker.rows), broker.waited_ns()
    return (f"RabbitMQ's schedulers waited for a CPU {waited / 1e6:.0f} ms in the run "
            f"({waited / (on + waited) if on + waited else 0:.0%} of the time they were ready "
            "to run)")


def _broker_starved(facts: RunFacts) -> str:
    """RabbitMQ short of a CPU: how long its schedulers waited, and who had the CPU in the
    windows they waited most."""
    broker = facts.broker_cpu
    text = PROSE[Cause.BROKER_STARVED]
    if broker is None:
        return text
    text += f": {_scheduler_waits(broker)}"
    spans = [(row[0], row[0] + row[1]) for row in broker.rows
             if row[4] >= STARVED_WINDOW * row[1]]
    if facts.used and spans:
        text += who_had_the_cpu(facts.used, spans, BROKER)
    return text


def _link_figures(facts: RunFacts) -> list[LinkFigures]:
    return [f for name, rows in facts.links.items() if (f := LinkFigures.of(name, rows))]


def _link_name(link: str) -> str:
    return {PUBLISHER: "publisher -> RabbitMQ", CONTROL_LINK: "compare -> RabbitMQ (a control)"
            }.get(link, f"RabbitMQ -> {link}")


def link_lines(facts: RunFacts) -> list[str]:
    """Each AMQP link's round trip through the run, against its quietest, and the kernel's
    round trip of its socket: what the path to and from RabbitMQ measured."""
    figures = _link_figures(facts)
    if not figures:
        return ["the links' round trips to RabbitMQ were not measured"]
    lines = []
    for f in figures:
        kernel = (f"; the kernel's {f.tcp_p50_ms:g} ms" if f.tcp_p50_ms is not None
                  else "; the kernel's unread")
        lines.append(f"{_link_name(f.link)}: round trip p50 {f.rtt_p50_ms:g} ms, p99 "
                     f"{f.rtt_p99_ms:g} ms, quietest {f.rtt_min_ms:g} ms{kernel}")
    return lines


def _network(facts: RunFacts) -> str:
    """The time on the way to and from RabbitMQ: each link's round trip, where the kernel
    puts it (on the network, or beyond its first hop), and what RabbitMQ took to answer."""
    pieces = [f for f in _link_figures(facts) if f.link != CONTROL_LINK]
    if not pieces:
        return PROSE[Cause.NETWORK]
    slowest = max(pieces, key=lambda f: f.rtt_p50_ms)
    text = ("the time was on the way to or from RabbitMQ: round trips (p50) "
            + ", ".join(f"{_link_name(f.link)} {f.rtt_p50_ms:.3g} ms" for f in pieces))
    control = next((f for f in _link_figures(facts) if f.link == CONTROL_LINK), None)
    if control:
        beyond = control.rtt_p50_ms - (control.tcp_p50_ms or 0.0)
        text += f", while RabbitMQ answered compare's own link in {beyond:.2g} ms"
    if slowest.tcp_p50_ms is not None and slowest.tcp_p50_ms >= slowest.rtt_p50_ms / 2:
        text += (f"; the kernel measured {slowest.tcp_p50_ms:.3g} ms of it on the network: put "
                 "the broker near its clients (the same zone)")
    elif slowest.tcp_p50_ms is not None:
        text += (f"; the kernel's round trip is {slowest.tcp_p50_ms:.3g} ms, so the time is "
                 "beyond the first hop (a proxy or load balancer that holds the data): take "
                 "it out of the path, or find what slows it")
    return text


def _busy_windows(broker: BrokerCpu) -> list[tuple[int, ...]]:
    return [row for row in broker.rows if row[6] >= BROKER_BUSY * row[1]]


def _broker_busy(facts: RunFacts) -> str:
    """RabbitMQ held messages behind its own work: how often a scheduler computed through
    a window, and which queue and rate kept it so."""
    broker, evidence = facts.broker_cpu, facts.broker
    busy = _busy_windows(broker) if broker else []
    if not busy or broker is None:
        return PROSE[Cause.BROKER_BUSY]
    text = (f"RabbitMQ's own work held the messages: one of its schedulers computed through "
            f"{len(busy)} of the run's {len(broker.rows)} windows of "
            f"{busy[0][1] / 1e6:.0f} ms")
    if evidence.available and evidence.max_ready:
        text += f"; its deepest queue, {evidence.max_ready_queue}, held {evidence.max_ready} ready"
    rate = facts.counts.published / facts.publisher.elapsed_s if facts.publisher.elapsed_s else 0
    if rate:
        text += f", at {rate:.0f} messages a second published"
    return (text + ": a queue is one process on one scheduler, so spread a hot queue's load "
            "over more queues, or give RabbitMQ more CPU (and find what else uses it)")


def quiet_lines(facts: RunFacts) -> list[str]:
    """For a wait nothing measured explains (broker-side): which of RabbitMQ's signals
    were quiet, so the operator knows what was ruled out and what was not seen."""
    quiet, unseen = [], []
    broker = facts.broker_cpu
    if broker is None:
        unseen.append("its quota, its waits for a CPU and its own work (not on this host)")
    else:
        if broker.cgroup_read and not broker.throttled_ns():
            quiet.append("its quota never held it back")
        most = max((row[4] for row in broker.rows), default=0)
        quiet.append(f"no scheduler waited more than {most / 1e6:.1f} ms of any window")
        if not _busy_windows(broker):
            quiet.append("none computed through a window")
    pieces = [f for f in _link_figures(facts) if f.link != CONTROL_LINK]
    if pieces:
        quiet.append("the links' round trips stayed near their quietest (p99 at most "
                     f"{max(f.rtt_p99_ms for f in pieces):.3g} ms)")
    else:
        unseen.append("the links' round trips")
    if facts.broker.alarms == () and facts.broker.blocked_connections_max == 0:
        quiet.append("no alarm, no flow control")
    text = "quiet in RabbitMQ meanwhile: " + "; ".join(quiet) if quiet else ""
    return [text] * bool(text) + (["not seen: " + "; ".join(unseen)] if unseen else [])


def _broker_throttled(facts: RunFacts) -> str:
    """RabbitMQ held back by its own CPU quota: how long, the quota, what to raise."""
    broker = facts.broker_cpu
    if broker is None or not broker.throttled_ns():
        return PROSE[Cause.BROKER_THROTTLED]
    quota = f"{broker.quota:.0%} of a CPU" if broker.quota else "its quota"
    return (f"RabbitMQ was held back by its cgroup's CPU quota ({quota}) "
            f"{broker.throttled_ns() / 1e6:.0f} ms in the run, and messages it held waited "
            "meanwhile: raise the broker's CPU limit (a pod's resources.limits.cpu, "
            "cpu.max), not the host's CPU")


INSTRUMENT_HEAVY = 0.25  # of the CPU others used while a node waited: the run measured the host
OTHER_PROCESSES = "other processes"  # the host's busy CPU that no piece of the run used


def who_had_the_cpu(used_rows: dict[str, list[list[int]]], spans: list[tuple[int, int]],
                    starved: str = "") -> str:
    """Who used the CPU while the nodes (or the `starved` piece) waited for one, largest
    first (mqprobe's own pieces among them), and what to do when the instrument had much
    of it."""
    during = {piece: Windows(rows).within(spans) for piece, rows in used_rows.items()
              if piece != HOST_CPU}
    used = {piece: ns for piece, ns in during.items() if piece != starved}
    wall = sum(b - a for a, b in spans)
    if not wall or not any(used.values()):
        return ""
    # the host's busy CPU beyond every piece's: processes that are not the run's (a hog)
    host = used_rows.get(HOST_CPU)
    others = Windows(host).within(spans) - sum(during.values()) if host else 0.0
    if others >= 0.05 * wall:
        used[OTHER_PROCESSES] = others
    ranked = sorted(((ns, piece) for piece, ns in used.items() if ns > 0), reverse=True)
    text = "; meanwhile the CPU went to " + ", ".join(
        f"{piece} {ns / wall:.0%}" for ns, piece in ranked[:6]) + " (of one core)"
    instrument = [(ns, piece) for ns, piece in ranked if role_of(piece) in INSTRUMENT_ROLES]
    ours, total = sum(ns for ns, _ in instrument), sum(ns for ns, _ in ranked)
    if ours >= INSTRUMENT_HEAVY * total:
        names = ", ".join(piece for _ns, piece in instrument)
        text += (f". mqprobe's own pieces ({names}) had {ours / total:.0%}"
                 " of it: this run measured the host as much as the topology; put the swarms "
                 "on other hosts (--place), or lower the load")
    return text


def footprint_lines(cpu: CpuUse) -> list[str]:
    """The CPU each piece used (cores), the system's apart from the instrument's, and the
    host's busy share and CPU pressure: every figure's context (nothing, for a run that
    recorded none)."""
    if not cpu.available:
        return [f"CPU per piece not measured: {cpu.reason}"] if cpu.reason else []
    pieces = cpu.pieces
    system = [f"{p} {v.core_share:.2f}" for p, v in pieces.items() if not v.instrument]
    ours = [f"{p} {v.core_share:.2f}" for p, v in pieces.items() if v.instrument]
    host = cpu.host
    line = f"CPU in cores: {', '.join(system)}; mqprobe's own: {', '.join(ours)}"
    if host and host.busy_share is not None:
        line += f"; host {host.busy_share:.0%} busy of {cpu.cores or '?'} cores"
    if host and host.pressure_share is not None:
        line += f", runnable tasks waited for a CPU {host.pressure_share:.0%} of the time (PSI)"
    if host and host.stolen_ms:
        line += (f"; the hypervisor held this machine's CPUs {host.stolen_ms:.0f} ms (steal: "
                 "every piece paused, asleep or not)")
    out = [line]
    waited = {p: share for p, v in pieces.items() if (share := v.ready_wait_share)}
    if waited:
        out.append("of the time each was ready to run, it waited for a CPU: " + ", ".join(
            f"{p} {share:.0%}" for p, share in sorted(waited.items(), key=lambda kv: -kv[1])))
    reported = [f"{p} from {v.source}" for p, v in pieces.items() if v.source]
    if reported:
        out.append("read elsewhere, not from /proc: " + "; ".join(reported))
    if cpu.not_seen:
        out.append("not seen: " + "; ".join(f"{p} ({why})" for p, why in cpu.not_seen.items()))
    return out


def _cause_evidence(cause: Cause, facts: RunFacts) -> list[str]:
    """The measurements behind the top cause."""
    nodes = facts.nodes
    broker = facts.broker
    busy, busiest = max(((n.consumer_busy, n.node) for n in nodes), default=(0.0, "-"))
    full = [n for n in nodes if n.prefetch and n.unacked_max >= n.prefetch]
    windows = [e for e in facts.events if e.kind == EventKind.WINDOW_FULL]
    if cause == Cause.CONSUMER_SATURATED:
        out = [f"consumer busy ratio {busy:.2f} on {busiest}", *_loop_cpu_evidence(nodes)]
        out += [f"{n.node} unacked reached its prefetch window ({n.prefetch})" for n in full]
        if windows:
            out.append(f"prefetch windows were full {len(windows)} times, "
                       f"{sum(e.duration_ns for e in windows) / 1e6:.0f} ms in all")
        return out + _queue_evidence(broker)
    if cause in (Cause.BROKER_STARVED, Cause.BROKER_THROTTLED, Cause.BROKER_BUSY):
        return [*_queue_evidence(broker), *broker_counter_lines(facts), *link_lines(facts)]
    if cause == Cause.NETWORK:
        return [*link_lines(facts), *broker_counter_lines(facts), *_queue_evidence(broker)]
    if cause == Cause.BROKER_SIDE:
        loop, loop_node = max(((n.loop_cpu.busy if n.loop_cpu else 0.0, n.node) for n in nodes),
                              default=(0.0, "-"))
        idle = ("consumers mostly idle" if loop < LOOP_BUSY_SHARE else
                f"consumer callbacks mostly idle, though {loop_node}'s loop was busy "
                f"{loop:.0%} of the run (computing or waiting for a CPU: the emits and writes "
                "its messages caused)")
        return [f"{idle} (busy ratio max {busy:.2f}) and prefetch windows "
                f"{'full only ' + str(len(windows)) + ' times' if windows else 'never full'}, "
                "yet messages waited before reaching them", *_loop_cpu_evidence(nodes),
                *_queue_evidence(broker), *broker_counter_lines(facts), *link_lines(facts),
                *quiet_lines(facts)]
    if cause in (Cause.SERVER_STALL, Cause.GC_PAUSE, Cause.CPU_STARVED, Cause.CPU_THROTTLED):
        worst = max(nodes, key=lambda n: n.loop_lag_ms.max, default=None)
        if worst:
            return [f"{worst.node} event loop could not run for up to "
                    f"{worst.loop_lag_ms.max} ms (loop lag p99 "
                    f"{worst.loop_lag_ms.p99} ms): meanwhile nothing is consumed, "
                    "emitted or acked", *_loop_cpu_evidence(nodes),
                    *(gc_began_lines(facts) + gc_held_lines(facts)
                      if cause == Cause.GC_PAUSE else [])]
    if cause == Cause.FANOUT_BOUND:
        return [f"the nodes' room emit loop (fanout) p99 {facts.hops[HopName.FANOUT].p99_ms} ms"]
    if cause == Cause.SLOW_HANDLER:
        return [f"consumer busy ratio {busy:.2f} on {busiest}"]
    if cause in (Cause.BROKER_BLOCKED, Cause.BROKER_ALARM):
        return _queue_evidence(broker)
    return []


LOOP_BUSY_SHARE = 0.5  # a loop busy this share of the run is no idle consumer


def _loop_cpu_evidence(nodes: tuple[NodeFigures, ...]) -> list[str]:
    """Each node's loop thread through the run: computing, waiting for a CPU, throttled
    (Linux's counters), or why they were not read."""
    out = []
    for node in nodes:
        cpu = node.loop_cpu
        if not cpu:
            continue
        if not cpu.read:
            out.append(f"{node.node} loop CPU not split: {cpu.source}")
            continue
        text = (f"{node.node} loop computed {cpu.on_cpu:.0%} of the run and "
                f"waited for a CPU {cpu.waiting:.0%}")
        if cpu.throttled:
            text += f", throttled {cpu.throttled:.0%}"
        out.append(text)
    return out


def _queue_evidence(broker: BrokerEvidence) -> list[str]:
    if not broker.available:
        return [broker.reason or "queue depth not measured"]
    out = [f"deepest queue {broker.max_ready_queue or '-'} held {broker.max_ready} ready "
           "messages"]
    growth = broker.backlog_growth
    if growth and growth.net_in_per_s > 0:
        out.append(f"its backlog grew {growth.net_in_per_s:g} msg/s faster than it drained "
                   f"(from {growth.from_s:g} s to {growth.to_s:g} s of the run)")
    if not broker.management_api:
        checked = ("flow control was not checked" if broker.prometheus else
                   "alarms and flow control were not checked")
        out.append(f"management API not reachable: {checked}"
                   + (f" ({broker.management_reason})" if broker.management_reason else ""))
    if broker.prometheus_reason:
        out.append(broker.prometheus_reason)
    if broker.alarms:
        source = " (its Prometheus endpoint)" if broker.prometheus else ""
        out.append("broker alarms" + source + ": " + ", ".join(broker.alarms))
    if (broker.erlang_run_queue_max or 0) >= 1:
        out.append(f"RabbitMQ's Erlang run queue reached {broker.erlang_run_queue_max:g} "
                   "(its processes ready to run, waiting for a scheduler)")
    if broker.blocked_connections_max:
        out.append(f"{broker.blocked_connections_max} connections in flow control or blocked")
    return out


@dataclass(frozen=True)
class Judgement:
    """What analysis concludes of a run: the attribution of its tail, its verdict, and each
    group's verdict. It reads the run; the caller writes the judgement into the result."""

    attribution: Attribution | None
    verdict: Verdict
    groups: dict[str, Verdict]
    mq_legs: MqLegs | None = None


def judge(facts: RunFacts, messages: list[MessageDeliveries], budget_ms: float) -> Judgement:
    """Attribute the run and each group, and give their verdicts."""
    # one index of the intervals, and of the nodes' backlogs, for the run and its groups
    used = facts.used or None  # who had the CPU
    charger = Charger(Timeline(charged_events(facts.swarm, facts.events), facts.cpu, used,
                               facts.broker_cpu, facts.links), messages, budget_ms * 1e6,
                      {node.node: connection_cause(node) for node in facts.nodes})
    attribution = attribute(messages, charger, budget_ms)
    by_group: dict[str, list[MessageDeliveries]] = {}
    for message in messages:
        by_group.setdefault(message.group, []).append(message)
    groups = {}
    for group_id, group in facts.groups.items():
        # the group's own counts and hops, over the run's: what its verdict reads
        own = replace(facts, counts=group.counts, hops={**facts.hops, **group.hops})
        groups[group_id] = verdict(own, attribute(by_group.get(group_id, []), charger, budget_ms),
                                   budget_ms)
    said = verdict(facts, attribution, budget_ms)
    if attribution and said.cause in (Cause.SERVER_STALL, Cause.GC_PAUSE):
        said = replace(said, evidence=[*said.evidence, *charger.catch_up_lines()])
    # what the nodes' loops spent on connections coming and going, where they did: charged,
    # or (a collection that freed closed connections' cycles, say) only beside the verdict
    if (attribution and any(s.cause in (Cause.CONNECTION_CHURN, Cause.CLIENTS_UNRESPONSIVE)
                            for s in attribution.shares)) \
            or any(n.connections and n.connections.began for n in facts.nodes):
        said = replace(said, evidence=[*said.evidence, *churn_lines(facts.nodes, facts.events)])
    # what keeping the connections alive cost the nodes' loops (their pings' waves)
    said = replace(said, evidence=[*said.evidence, *heartbeat_lines(
        facts.nodes, bool(attribution and attribution.share_of(Cause.HEARTBEATS) >= 0.005))])
    if facts.churning is not None:
        said = replace(said, evidence=[*said.evidence, facts.churning.line()])
    return Judgement(attribution, said, groups, mq_legs(messages, charger.timeline.legs))


# -- repeats -------------------------------------------------------------------------------
def agreement(runs: list[RunRecord]) -> dict[str, int]:
    """How many repeats named each culprit, the most common first."""
    counts: dict[str, int] = {}
    for run in runs:
        culprit = run.verdict.culprit.value
        counts[culprit] = counts.get(culprit, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def agreement_text(counts: dict[str, int]) -> str:
    """`none 5/5`, `mq 4/5 + server 1/5`."""
    total = sum(counts.values())
    return " + ".join(f"{culprit} {n}/{total}" for culprit, n in counts.items())


def representative(runs: list[RunRecord]) -> RunRecord:
    """The repeat whose e2e p99 is the median: the one a table shows."""
    ordered = sorted(runs, key=lambda r: r.e2e.p99_ms)
    return ordered[(len(ordered) - 1) // 2]


K = TypeVar("K")


def by_point(runs: list[RunRecord], key: Callable[[RunRecord], K]) -> dict[K, list[RunRecord]]:
    """Runs grouped by key(run), in first-seen order."""
    groups: dict[K, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups

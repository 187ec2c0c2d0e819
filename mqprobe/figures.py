"""The parts of a run's result, typed and frozen: built once by what measured them (the
broker sampler, merge from the pieces' results, the attribution and the verdict), held
together by result.RunRecord, read by the verdict, the sweep and the outputs as
attributes, and written as the result JSON's sub-documents by `to_json`;
`from_json` reads a saved result back (one from before a figure existed: absent is
unmeasured). Each keeps the JSON's shape key for key (tests/test_figures.py reads the saved
results in tests/data back and writes them again)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mqprobe.cpu import ms_of
from mqprobe.errors import ResultFormatError
from mqprobe.model import (
    CULPRIT_OF,
    PROSE,
    Cause,
    Culprit,
    Layout,
    PieceRole,
    ShareJson,
    SweepAxis,
    Tail,
    VerdictJson,
)
from mqprobe.shapes import (
    Check,
    cause_text,
    each,
    fields,
    number,
    one_of,
    or_none,
    rows,
    safe_name,
    text,
    values,
)
from mqprobe.timeline import EventKind, TimedEvent

QUEUE_COLUMNS = ("t_s", "ready", "consumers")  # a queue's depth samples, in evidence.broker.queues


@dataclass(frozen=True, slots=True)
class BacklogGrowth:
    """How the deepest queue's backlog built up: from its last empty sample to its peak."""

    from_s: float
    to_s: float
    ready: int
    net_in_per_s: float  # messages a second that came in beyond what its consumer took

    def to_json(self) -> dict[str, Any]:
        return {"from_s": self.from_s, "to_s": self.to_s, "ready": self.ready,
                "net_in_per_s": self.net_in_per_s}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BacklogGrowth:
        return cls(doc["from_s"], doc["to_s"], doc["ready"], doc["net_in_per_s"])


@dataclass(frozen=True, slots=True)
class BrokerEvidence:
    """What a run saw of the broker (QueueSampler.summary; the result's evidence.broker):
    built once, read by the verdict and the sweep's knee. Its JSON keeps the keys it had
    as a dict: an optional figure's key is absent when it was not measured."""

    available: bool
    reason: str = ""  # why not, when not available
    interval_s: float = 0.0
    max_ready: int = 0
    max_ready_queue: str = ""
    backlog_growth: BacklogGrowth | None = None
    management_api: bool = False
    alarms: tuple[str, ...] | None = ()  # None: neither source of alarms answered
    blocked_connections_max: int | None = 0  # None: the management API did not answer
    sample_errors: int = 0
    queues: dict[str, list[list[float]]] = field(default_factory=dict)  # name -> rows
    management_reason: str = ""
    unavailable_reason: str = ""
    depth_not_sampled: str = ""
    sources: tuple[str, ...] = ()
    prometheus: bool | None = None  # None: no Prometheus endpoint was tried
    erlang_run_queue_max: float | None = 0.0  # None: the endpoint was not tried or silent
    prometheus_reason: str = ""
    states_recorded: bool = True  # False: read from a result written before source_states

    @classmethod
    def not_measured(cls, reason: str = "queue depth not measured") -> BrokerEvidence:
        return cls(available=False, reason=reason)

    def to_json(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, **({"reason": self.reason} if self.reason else {})}
        out: dict[str, Any] = {
            "available": True, "interval_s": self.interval_s, "max_ready": self.max_ready,
            "max_ready_queue": self.max_ready_queue,
            "backlog_growth": self.backlog_growth.to_json() if self.backlog_growth else None,
            "management_api": self.management_api,
            "alarms": None if self.alarms is None else list(self.alarms),
            "blocked_connections_max": self.blocked_connections_max,
            "sample_errors": self.sample_errors,
            "queues": {"columns": list(QUEUE_COLUMNS), **self.queues}}
        if self.states_recorded:
            out["source_states"] = self.source_states()
        for key in ("management_reason", "unavailable_reason", "depth_not_sampled"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.sources:  # (absent from results before it was recorded)
            out["sources"] = list(self.sources)
        if self.prometheus is not None:
            out["prometheus"] = self.prometheus
            out["erlang_run_queue_max"] = self.erlang_run_queue_max
            if self.prometheus_reason:
                out["prometheus_reason"] = self.prometheus_reason
        return out

    def source_states(self) -> dict[str, str]:
        """Each of the broker's interfaces: `answered`, `not asked` or `no answer` (why: its
        `*_reason`)."""
        def state(answered: bool | None) -> str:
            return "not asked" if answered is None else "answered" if answered else "no answer"

        management = True if self.management_api else (False if self.management_reason
                                                        else None)
        return {"amqp": "answered", "management": state(management),
                "prometheus": state(self.prometheus)}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> BrokerEvidence:
        """Read back (a saved result, or one from before a field existed: absent is unmeasured)."""
        doc = doc or {}
        if not doc.get("available"):
            return cls.not_measured(doc.get("reason") or "queue depth not measured")
        growth = doc.get("backlog_growth")
        return cls(
            available=True, interval_s=doc.get("interval_s", 0.0),
            max_ready=doc.get("max_ready", 0), max_ready_queue=doc.get("max_ready_queue", ""),
            backlog_growth=BacklogGrowth.from_json(growth) if growth else None,
            management_api=bool(doc.get("management_api")),
            alarms=None if doc.get("alarms", ()) is None else tuple(doc.get("alarms", ())),
            blocked_connections_max=doc.get("blocked_connections_max", 0),
            sample_errors=doc.get("sample_errors", 0),
            queues={k: v for k, v in (doc.get("queues") or {}).items() if k != "columns"},
            management_reason=doc.get("management_reason", ""),
            unavailable_reason=doc.get("unavailable_reason", ""),
            depth_not_sampled=doc.get("depth_not_sampled", ""),
            sources=tuple(doc.get("sources", ())), prometheus=doc.get("prometheus"),
            erlang_run_queue_max=doc.get("erlang_run_queue_max", 0.0),
            prometheus_reason=doc.get("prometheus_reason", ""),
            states_recorded="source_states" in doc)


@dataclass(frozen=True, slots=True)
class HopFigures:
    """One hop's latency in ms (records.Latency.summary: the contract's hop shape), and the
    stamps that came out of order (clock skew) with the most negative of them."""

    # what a saved hop must hold (mqprobe.shapes)
    SHAPE: ClassVar[Check] = fields({k: number for k in ("count", "p50_ms", "p99_ms", "max_ms")})

    count: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    negative: int = 0
    min_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms, "p999_ms": self.p999_ms, "max_ms": self.max_ms,
                **({"negative": self.negative, "min_ms": self.min_ms} if self.negative else {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HopFigures:
        """A saved hop's figures, each its own type (a count an int, a latency a float)."""
        values: dict[str, Any] = {name: (int if name in ("count", "negative") else float)(doc[name])
                                  for name in cls.__dataclass_fields__ if name in doc}
        return cls(**values)

    @classmethod
    def by_hop(cls, doc: dict[str, Any] | None) -> dict[str, HopFigures]:
        """A result's `hops` (hop name -> its figures), typed."""
        return {hop: cls.from_json(figures) for hop, figures in (doc or {}).items()}


@dataclass(frozen=True, slots=True)
class Counts:
    """Deliveries counted, for a run or one of its groups (the contract's run fields, at the
    top of a run's JSON and in each group's): what was published, what its members should
    have received, what arrived, and what did not: lost (it never will) or still on its way
    when the run stopped (`not_delivered`, late, not lost)."""

    published: int = 0
    expected_deliveries: int = 0
    delivered: int = 0
    lost: int = 0
    not_delivered: int = 0
    duplicated: int = 0

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Counts:
        """From a run's (or a group's) JSON, whatever else it holds; absent is 0."""
        return cls(**{name: int(doc.get(name, 0)) for name in cls.__dataclass_fields__})

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        parts = list(parts)
        return cls(**{name: sum(getattr(part, name) for part in parts)
                      for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group of a run (the result's `groups.<id>`, but its verdict, which analysis
    gives afterwards): its members, its counts, its hops (fan-out among them)."""

    members: int
    counts: Counts
    hops: dict[str, HopFigures] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, **self.counts.to_json(),
                "hops": {hop: figures.to_json() for hop, figures in self.hops.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GroupFigures:
        return cls(int(doc.get("members", 0)), Counts.from_json(doc), HopFigures.by_hop(doc.get("hops")))


@dataclass(frozen=True, slots=True)
class LoopLag:
    """How late a loop woke, in ms (records.Latency.lag_summary)."""

    SHAPE: ClassVar[Check] = fields({k: number for k in ("p50", "p99", "max")})

    p50: float
    p99: float
    max: float

    def to_json(self) -> dict[str, Any]:
        return {"p50": self.p50, "p99": self.p99, "max": self.max}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LoopLag:
        return cls(doc.get("p50", 0.0), doc.get("p99", 0.0), doc.get("max", 0.0))


@dataclass(frozen=True, slots=True)
class LoopCpu:
    """A node's loop thread through the run, as shares of it (Linux's counters), and where
    they came from (`unavailable: why`, where they could not be read)."""

    source: str
    on_cpu: float = 0.0
    waiting: float = 0.0
    throttled: float = 0.0
    failed_ticks: int = 0  # ticks the loop monitor lost to an error of its own

    @property
    def read(self) -> bool:
        return not self.source.startswith("unavailable")

    @property
    def busy(self) -> float:
        """The share of the run it computed or waited for a CPU: it had work."""
        return self.on_cpu + self.waiting + self.throttled

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "on_cpu": self.on_cpu, "waiting": self.waiting,
                "throttled": self.throttled,
                **({"failed_ticks": self.failed_ticks} if self.failed_ticks else {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LoopCpu:
        return cls(str(doc.get("source", "")), float(doc.get("on_cpu", 0)),
                   float(doc.get("waiting", 0)), float(doc.get("throttled", 0)),
                   int(doc.get("failed_ticks", 0)))


@dataclass(frozen=True, slots=True)
class ConnectionFigures:
    """A node's connections through a run (watch.connections): rows of [t_ns, established
    in its kernel (None: unread), connected in its socket.io server] once every `every_s`,
    how many ended in each second, by engine.io's reason: [t_ns, reason, count], and how
    many began in each second: [t_ns, count]."""

    every_s: float
    rows: tuple[tuple[int, int | None, int], ...]
    ended: tuple[tuple[int, str, int], ...]
    began: tuple[tuple[int, int], ...] = ()

    def ended_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _t, reason, n in self.ended:
            out[reason] = out.get(reason, 0) + n
        return out

    def to_json(self) -> dict[str, Any]:
        return {"every_s": self.every_s, "rows": [list(r) for r in self.rows],
                "ended": [list(e) for e in self.ended]} | (
                    {"began": [list(b) for b in self.began]} if self.began else {})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ConnectionFigures:
        return cls(float(doc.get("every_s", 1.0)),
                   tuple((int(t), None if held is None else int(held), int(connected))
                         for t, held, connected in doc.get("rows", [])),
                   tuple((int(t), str(reason), int(n)) for t, reason, n in doc.get("ended", [])),
                   tuple((int(t), int(n)) for t, n in doc.get("began", [])))


@dataclass(frozen=True, slots=True)
class HeartbeatFigures:
    """A node's loop time on socket.io's heartbeats while measuring (its profiler's samples:
    the pings it wrote, the pongs it read, engine.io's walk over its sockets' last pongs),
    beside the connections it kept: where a server's CPU goes with many quiet connections
    (the seed's question 2). Loop time: the loop thread's, on the CPU or waiting for it."""

    loop_ms: float  # in all, while profiled
    profiled_s: float
    connections: int  # the median its socket.io server held meanwhile
    ping_interval_s: float
    busiest_second_ms: float  # of its whole seconds: a wave of pings shows as a peak
    median_second_ms: float

    @property
    def per_1k_ms(self) -> float | None:
        """Its loop's ms on heartbeats per 1,000 connections per ping interval (None:
        no connections, or not profiled)."""
        intervals = self.profiled_s / self.ping_interval_s if self.ping_interval_s else 0.0
        if not self.connections or intervals <= 0:
            return None
        return self.loop_ms / (self.connections / 1000) / intervals

    def line(self, node: str) -> str:
        """`n1's loop spent 540 ms of 8.1 s on socket.io's heartbeats (...)`, for evidence."""
        per_1k = self.per_1k_ms
        return (f"{node}'s loop spent {self.loop_ms:.0f} ms of {self.profiled_s:.1f} s on "
                f"socket.io's heartbeats (pings written, pongs read, the liveness walk; its "
                f"profiler's samples) for {self.connections} connections, a ping every "
                f"{self.ping_interval_s:g} s"
                + (f": {per_1k:.1f} ms per 1,000 connections a ping interval" if per_1k else "")
                + f"; its busiest second {self.busiest_second_ms:.0f} ms, the median one "
                f"{self.median_second_ms:.0f} ms")

    def to_json(self) -> dict[str, Any]:
        per_1k = self.per_1k_ms
        return {"loop_ms": round(self.loop_ms, 1), "profiled_s": round(self.profiled_s, 2),
                "connections": self.connections, "ping_interval_s": self.ping_interval_s,
                "busiest_second_ms": round(self.busiest_second_ms, 1),
                "median_second_ms": round(self.median_second_ms, 1),
                "per_1k_ms": None if per_1k is None else round(per_1k, 2)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HeartbeatFigures:
        return cls(float(doc["loop_ms"]), float(doc["profiled_s"]), int(doc["connections"]),
                   float(doc["ping_interval_s"]), float(doc.get("busiest_second_ms", 0.0)),
                   float(doc.get("median_second_ms", 0.0)))


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One node through a run (the result's `nodes[]`), from its result event."""

    node: str
    handled: int
    untraced: int
    filtered: int
    unacked_max: int
    prefetch: int
    busy_ratio: dict[str, float]  # consumer -> share of the run inside its callback
    loop_lag_ms: LoopLag
    stalls: int = 0
    in_hand_at_end: int = 0  # received, not yet handled, when it was stopped
    gc: dict[str, Any] = field(default_factory=dict)  # loop.GcWatch's summary
    loop_worst: dict[str, Any] = field(default_factory=dict)  # its longest stall, and its CPU share then
    loop_cpu: LoopCpu | None = None  # None: not measured
    profile: dict[str, Any] | None = None  # profile.LoopProfiler.summary (None: before it was recorded)
    mq_split: dict[str, Any] | None = None  # before-broker, in-broker, after-broker (embed's), if any
    connections: ConnectionFigures | None = None  # None: not watched (before it was)
    heartbeats: HeartbeatFigures | None = None  # None: not profiled (before it was)

    @property
    def consumer_busy(self) -> float:
        """The busiest of its consumers' share of the run inside the callback."""
        return max(self.busy_ratio.values(), default=0.0)

    def to_json(self) -> dict[str, Any]:
        out = {"node": self.node, "handled": self.handled, "untraced": self.untraced,
               "filtered": self.filtered, "stalls": self.stalls, "gc": self.gc,
               "unacked_max": self.unacked_max, "in_hand_at_end": self.in_hand_at_end,
               "prefetch": self.prefetch, "busy_ratio": self.busy_ratio,
               "loop_lag_ms": self.loop_lag_ms.to_json(), "loop_worst": self.loop_worst,
               "loop_cpu": self.loop_cpu.to_json() if self.loop_cpu else {}}
        if self.profile is not None:
            out["profile"] = self.profile
        if self.mq_split is not None:
            out["mq_split"] = self.mq_split
        if self.connections is not None:
            out["connections"] = self.connections.to_json()
        if self.heartbeats is not None:
            out["heartbeats"] = self.heartbeats.to_json()
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NodeFigures:
        return cls(
            node=doc["node"], handled=doc["handled"], untraced=doc.get("untraced", 0),
            filtered=doc.get("filtered", 0), unacked_max=doc.get("unacked_max", 0),
            prefetch=doc.get("prefetch", 0), busy_ratio=dict(doc.get("busy_ratio", {})),
            loop_lag_ms=LoopLag.from_json(doc["loop_lag_ms"]), stalls=doc.get("stalls", 0),
            in_hand_at_end=doc.get("in_hand_at_end", 0), gc=doc.get("gc", {}),
            loop_worst=doc.get("loop_worst", {}),
            loop_cpu=LoopCpu.from_json(doc["loop_cpu"]) if doc.get("loop_cpu") else None,
            profile=doc.get("profile"), mq_split=doc.get("mq_split"),
            connections=ConnectionFigures.from_json(doc["connections"])
            if doc.get("connections") else None,
            heartbeats=HeartbeatFigures.from_json(doc["heartbeats"])
            if doc.get("heartbeats") else None)


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """One AMQP connection's round trips through a run (broker.link.LinkWatch): `link`
    names whose it is (publisher, n1..., compare: the coordinator's own, a control), the
    AMQP round trip's p50, p99 and quietest (ms), and the kernel's TCP round trip's p50 and
    p99 where it was read (None where it was not)."""

    link: str
    pings: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    rtt_min_ms: float
    tcp_p50_ms: float | None = None
    tcp_p99_ms: float | None = None

    @classmethod
    def of(cls, link: str, rows: list[list[int]]) -> LinkFigures | None:
        """From a LinkWatch's rows ([t_send, amqp rtt, tcp rtt] in ns); None with none."""
        if not rows:
            return None
        rtts = sorted(row[1] for row in rows)
        kernel = sorted(row[2] for row in rows if row[2] >= 0)
        return cls(link, len(rows), ms_of(_pct(rtts, 50)), ms_of(_pct(rtts, 99)), ms_of(rtts[0]),
                   ms_of(_pct(kernel, 50)) if kernel else None,
                   ms_of(_pct(kernel, 99)) if kernel else None)

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link, "pings": self.pings,
                "rtt_ms": {"p50": self.rtt_p50_ms, "p99": self.rtt_p99_ms, "min": self.rtt_min_ms},
                "tcp_rtt_ms": ({"p50": self.tcp_p50_ms, "p99": self.tcp_p99_ms}
                               if self.tcp_p50_ms is not None else None)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LinkFigures:
        rtt, tcp = doc["rtt_ms"], doc.get("tcp_rtt_ms")
        return cls(str(doc["link"]), int(doc["pings"]), float(rtt["p50"]), float(rtt["p99"]),
                   float(rtt["min"]), float(tcp["p50"]) if tcp else None,
                   float(tcp["p99"]) if tcp else None)


def _pct(values: list[int], pct: float) -> int:
    """The value at `pct` of sorted values (nearest rank)."""
    return values[min(len(values) - 1, max(0, int(-(-len(values) * pct // 100)) - 1))] \
        if values else 0


@dataclass(frozen=True, slots=True)
class MqLegs:
    """The mq hop split into its publish leg, its time in RabbitMQ and its deliver leg, as
    far as the links' round trips allow (`how` says how it was made): each part's p50, p99
    and max over the run's messages (ms)."""

    publish: tuple[float, float, float]
    rabbitmq: tuple[float, float, float]
    deliver: tuple[float, float, float]
    how: str

    def to_json(self) -> dict[str, Any]:
        return {part: dict(zip(("p50", "p99", "max"), getattr(self, part), strict=True))
                for part in ("publish", "rabbitmq", "deliver")} | {"how": self.how}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MqLegs:
        def three(part: dict[str, Any]) -> tuple[float, float, float]:
            return float(part["p50"]), float(part["p99"]), float(part["max"])
        return cls(three(doc["publish"]), three(doc["rabbitmq"]), three(doc["deliver"]),
                   str(doc["how"]))


@dataclass(frozen=True, slots=True)
class PieceCpu:
    """What one process of the run used of the CPU (footprint.CpuSampler)."""

    role: str  # a model.PieceRole, or an agent's own name
    cpu_ms: float
    core_share: float  # cores, over the sampled wall
    instrument: bool  # mqprobe's own (swarm, publisher, compare), not the system measured
    waited_ms: float | None = None  # its threads' waits for a CPU; None: not read
    source: str = ""  # where it was read when not from /proc (a Prometheus endpoint)

    @property
    def ready_wait_share(self) -> float | None:
        """Of the time its threads were ready to run (computing or waiting), the share they
        waited for a CPU; None where their waits were not read."""
        if self.waited_ms is None or self.waited_ms + self.cpu_ms <= 0:
            return None
        return self.waited_ms / (self.waited_ms + self.cpu_ms)

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "cpu_ms": self.cpu_ms, "core_share": self.core_share,
                "instrument": self.instrument,
                **({"waited_ms": self.waited_ms} if self.waited_ms is not None else {}),
                **({"source": self.source} if self.source else {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PieceCpu:
        return cls(doc.get("role", ""), doc.get("cpu_ms", 0.0), doc.get("core_share", 0.0),
                   bool(doc.get("instrument")), doc.get("waited_ms"), doc.get("source", ""))


@dataclass(frozen=True, slots=True)
class BrokerCpu:
    """What a local broker's own counters measured, per compare sample window (ns):
    `rows` of (start, wall, on a CPU, waited for one, the longest one thread waited,
    throttled, the most one thread computed): its threads a message's path runs on (an
    Erlang VM's schedulers and pollers), their waits beyond its cgroup's throttling, and
    that cgroup's throttled time. Also its CPU quota as a share of one CPU (None: none),
    whether its cgroup's counters were read, and the spans its process was stopped."""

    rows: tuple[tuple[int, int, int, int, int, int, int], ...]
    quota: float | None = None
    cgroup_read: bool = False
    stopped: tuple[tuple[int, int], ...] = ()

    def throttled_ns(self) -> int:
        return sum(row[5] for row in self.rows)

    def stopped_events(self) -> list[TimedEvent]:
        """Its stopped spans on the timeline: it could not answer, however long it was asked."""
        return [TimedEvent(EventKind.BROKER_UNAVAILABLE, PieceRole.BROKER, start, end,
                           {"unresponsive": True, "stopped": True}) for start, end in self.stopped]

    def waited_ns(self) -> int:
        return sum(row[3] for row in self.rows)


@dataclass(frozen=True, slots=True)
class HostCpu:
    """The host through the run: its busy share, the hypervisor's steal, and how long
    runnable tasks waited for a CPU (PSI); None where Linux did not say."""

    busy_share: float | None
    stolen_ms: float
    pressure_share: float | None

    def to_json(self) -> dict[str, Any]:
        return {"busy_share": self.busy_share, "stolen_ms": self.stolen_ms,
                "pressure_share": self.pressure_share}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HostCpu:
        return cls(doc.get("busy_share"), doc.get("stolen_ms", 0.0), doc.get("pressure_share"))


@dataclass(frozen=True, slots=True)
class CpuUse:
    """The CPU each piece on compare's host used through the run, and the host's (the
    result's `cpu`): every figure's context, and the verdict's evidence of a host short
    of CPU."""

    SHAPE: ClassVar[Check] = fields({}, {
        "pieces": values(fields({"cpu_ms": number}, {"role": text, "source": text})),
        "series": fields({}, {"columns": each(text), "rows": each(each(number))})})

    available: bool
    reason: str = ""  # why not, when not available ("": nothing was recorded)
    wall_s: float = 0.0
    cores: int = 0
    pieces: dict[str, PieceCpu] = field(default_factory=dict)
    not_seen: dict[str, str] = field(default_factory=dict)  # piece -> why it was not read
    host: HostCpu | None = None
    series: dict[str, Any] = field(default_factory=dict)  # ms of CPU per window (footprint.CpuSampler)

    def to_json(self) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.reason,
                    **({"not_seen": self.not_seen} if self.not_seen else {})}
        return {"available": True, "wall_s": self.wall_s, "cores": self.cores,
                "pieces": {name: piece.to_json() for name, piece in self.pieces.items()},
                "not_seen": self.not_seen, "host": self.host.to_json() if self.host else {},
                "series": self.series}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> CpuUse:
        doc = doc or {}
        if not doc.get("available"):
            return cls(False, doc.get("reason", ""), not_seen=doc.get("not_seen", {}))
        host = doc.get("host")
        return cls(True, wall_s=doc.get("wall_s", 0.0), cores=doc.get("cores", 0),
                   pieces={name: PieceCpu.from_json(piece)
                           for name, piece in (doc.get("pieces") or {}).items()},
                   not_seen=doc.get("not_seen", {}),
                   host=HostCpu.from_json(host) if host else None, series=doc.get("series", {}))


@dataclass(frozen=True, slots=True)
class SwarmFigures:
    """The swarm processes of a run together (the result's `swarm`): its clients, what
    became of them, and where its receive stamps came from."""

    clients: int = 0
    joined: int = 0
    failed: int = 0
    disconnects: int = 0
    reconnects: int = 0
    t_recv_source: dict[str, int] = field(default_factory=dict)  # model.STAMP_SOURCES -> n
    rss_bytes: int = 0
    processes: int = 0

    @property
    def kernel_stamped(self) -> bool:
        """Whether the run's receive stamps are the kernel's: on every delivery, and at most
        1% shared by frames that queued in one read. Then the swarm's loop stalls and GC
        pauses delayed its reading, not t_recv, and are no cause of `delivery`."""
        source = self.t_recv_source
        total = sum(source.values())
        return bool(total) and not source.get("read") and source.get("kernel_shared", 0) * 100 <= total

    def to_json(self) -> dict[str, Any]:
        return {"clients": self.clients, "joined": self.joined, "failed": self.failed,
                "disconnects": self.disconnects, "reconnects": self.reconnects,
                "t_recv_source": self.t_recv_source, "rss_bytes": self.rss_bytes,
                "processes": self.processes}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> SwarmFigures:
        doc = doc or {}
        return cls(**{name: doc[name] for name in cls.__dataclass_fields__ if name in doc})


@dataclass(frozen=True, slots=True)
class ChurnFigures:
    """The load process of `--inject churn` or `client-stall` (the result's `churning`):
    members beside the measured ones, joined to a room nothing is published to (they cost
    the servers their connections, not fan-out), reported apart. `left`: left on purpose
    (churn); `dropped`: connections the servers closed (a ping timeout after a stall);
    `rejoin`: from a connection lost to joined again (the whole handshake, and a stall's
    wait before it)."""

    members: int = 0
    joined: int = 0
    left: int = 0
    dropped: int = 0
    rejoined: int = 0
    rejoin: HopFigures = field(default_factory=HopFigures)
    stalled_ms: float = 0.0  # its loop blocked on purpose, while measuring

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, "joined": self.joined, "left": self.left,
                "dropped": self.dropped, "rejoined": self.rejoined,
                "rejoin": self.rejoin.to_json(), "stalled_ms": self.stalled_ms}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ChurnFigures:
        counts = {name: int(doc.get(name, 0)) for name in
                  ("members", "joined", "left", "dropped", "rejoined")}
        return cls(**counts, rejoin=HopFigures.from_json(doc.get("rejoin") or {}),
                   stalled_ms=float(doc.get("stalled_ms", 0.0)))

    def line(self) -> str:
        """For the evidence: what the load process's members did and got."""
        what = []
        if self.left:
            what.append(f"{self.left} left and joined again on purpose")
        if self.stalled_ms:
            what.append(f"its loop was blocked {self.stalled_ms / 1000:.1f} s in all")
        if self.dropped:
            what.append(f"the servers closed {self.dropped} of its connections")
        rejoin = (f"; {self.rejoined} joined again, {self.rejoin.p50_ms:.0f} ms p50 and "
                  f"{self.rejoin.p99_ms:.0f} ms p99 from connection lost to joined"
                  if self.rejoined else "")
        return (f"the load process beside the swarm ({self.joined} of {self.members} members "
                f"joined to a room nothing is published to, reported apart): "
                + (", ".join(what) or "steady") + rejoin)


# -- the verdict's parts: what the tail was charged to, and what is said of it --------


@dataclass(frozen=True, slots=True)
class Share:
    """One cause's part of the tail's excess, and what it added to a tail delivery on average."""

    cause: Cause
    share: float  # of the tail's excess
    mean_ms: float  # per tail delivery

    @property
    def culprit(self) -> Culprit:
        return CULPRIT_OF[self.cause]

    def label(self) -> str:
        return f"{self.culprit.value}: {self.cause.value} ({self.share:.0%})"

    def to_json(self) -> ShareJson:
        return {"culprit": self.culprit.value, "cause": self.cause.value,
                "share": round(self.share, 4), "mean_ms": round(self.mean_ms, 3)}

    @classmethod
    def from_json(cls, doc: ShareJson) -> Share:
        return cls(Cause(doc["cause"]), float(doc["share"]), float(doc.get("mean_ms", 0.0)))


@dataclass(frozen=True, slots=True)
class Attribution:
    """What the tail's excess was charged to, largest first."""

    floors_ms: dict[str, float]
    tail: Tail
    tail_deliveries: int
    deliveries: int
    excess_ms: float  # mean excess per tail delivery
    shares: list[Share] = field(default_factory=list)
    hop_shares: dict[str, float] = field(default_factory=dict)

    def share_of(self, cause: Cause) -> float:
        return next((s.share for s in self.shares if s.cause == cause), 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"floor_ms": self.floors_ms, "tail": self.tail,
                "tail_deliveries": self.tail_deliveries, "deliveries": self.deliveries,
                "excess_ms_mean": round(self.excess_ms, 3),
                "by_hop": {hop: round(v, 4) for hop, v in self.hop_shares.items()},
                "shares": [s.to_json() for s in self.shares]}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> Attribution | None:
        """A saved result's `attribution` (None where the run had none)."""
        if not doc:
            return None
        return cls(dict(doc.get("floor_ms", {})), Tail(str(doc.get("tail", Tail.P99))),
                   int(doc.get("tail_deliveries", 0)), int(doc.get("deliveries", 0)),
                   float(doc.get("excess_ms_mean", 0.0)),
                   [Share.from_json(s) for s in doc.get("shares", [])],
                   dict(doc.get("by_hop", {})))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Which part of the path the tail belongs to, why, and the evidence measured."""

    SHAPE: ClassVar[Check] = fields(
        {"culprit": one_of(Culprit), "cause": cause_text},
        {"evidence": each(text),
         "shares": each(fields({"cause": one_of(Cause), "share": number}, {"mean_ms": number}))})

    culprit: Culprit
    cause: Cause
    prose: str
    evidence: list[str] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)

    @property
    def cause_text(self) -> str:
        """The contract's `cause`: the code first, then the sentence."""
        return f"{self.cause.value}: {self.prose}"

    def to_json(self) -> VerdictJson:
        return {"culprit": self.culprit.value, "cause": self.cause_text,
                "evidence": self.evidence, "shares": [s.to_json() for s in self.shares]}

    @classmethod
    def from_json(cls, doc: VerdictJson) -> Verdict:
        """A verdict from a result's JSON (report, sweep and the tests read it this way)."""
        cause = Cause.of(doc.get("cause", ""))
        if cause is None:
            raise ResultFormatError(f"a verdict's cause opens with no cause mqprobe knows: "
                                    f"{str(doc.get('cause', ''))[:60]!r}")
        return cls(Culprit(doc.get("culprit", CULPRIT_OF[cause])), cause,
                   str(doc["cause"]).partition(":")[2].strip(), list(doc.get("evidence", [])),
                   [Share.from_json(s) for s in doc.get("shares", [])])

    @classmethod
    def of(cls, cause: Cause, prose: str = "", evidence: list[str] | None = None,
           shares: list[Share] | None = None) -> Verdict:
        return cls(CULPRIT_OF[cause], cause, prose or PROSE[cause], evidence or [],
                   shares or [])


@dataclass(frozen=True, slots=True)
class Cost:
    """CPU milliseconds per 1,000 deliveries (and per 1,000 published messages) of a run's
    pieces on compare's host: the broker, the nodes, and mqprobe's own (swarms, publisher,
    compare); None where a piece was not measured (another host, a broker it cannot see)."""

    broker_per_1k_deliveries: float | None
    nodes_per_1k_deliveries: float | None
    instrument_per_1k_deliveries: float | None
    broker_per_1k_published: float | None
    nodes_per_1k_published: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> Cost | None:
        """A saved result's `cost` (None where the run had none)."""
        if not doc:
            return None
        return cls(**{name: doc.get(name) for name in cls.__dataclass_fields__})


# -- a sweep's parts -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Knee:
    """Where a topology's sweep left its baseline: the load, why, and that run's verdict."""

    SHAPE: ClassVar[Check] = fields({"load": number, "reasons": each(text), "culprit": text,
                                        "cause": text, "evidence": each(text)})

    load: float
    reasons: tuple[str, ...]
    culprit: str
    cause: str
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"load": self.load, "reasons": list(self.reasons), "culprit": self.culprit,
                "cause": self.cause, "evidence": list(self.evidence)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Knee:
        return cls(_number(doc["load"]), tuple(str(r) for r in doc.get("reasons", ())),
                   str(doc.get("culprit", "")), str(doc.get("cause", "")),
                   tuple(str(e) for e in doc.get("evidence", ())))


@dataclass(frozen=True, slots=True)
class Sweep:
    """A sweep's section of its result: the axis, its values, the layout swept, and each
    topology's knee (None: none within the range; absent: its sweep did not finish)."""

    SHAPE: ClassVar[Check] = fields(
        {"axis": safe_name, "layout": safe_name, "values": each(number, at_least=1)},
        {"knees": values(or_none(Knee.SHAPE))})

    axis: SweepAxis
    values: tuple[float, ...]
    layout: Layout
    knees: dict[str, Knee | None]

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "values": list(self.values), "layout": self.layout,
                "knees": {name: knee.to_json() if knee else None
                          for name, knee in self.knees.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Sweep:
        """A saved sweep section (a wrong part: ResultFormatError, naming it)."""
        try:
            return cls(SweepAxis(doc["axis"]), tuple(_number(v) for v in doc["values"]),
                       Layout(doc.get("layout", Layout.PER_NODE)),
                       {str(name): Knee.from_json(knee) if knee else None
                        for name, knee in (doc.get("knees") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ResultFormatError(f"the sweep section is not what mqprobe writes "
                                    f"({type(exc).__name__}: {str(exc)[:80]})") from None


@dataclass(frozen=True, slots=True)
class RankedPoint:
    """One topology x layout as a comparison's conclusion weighs it (verdict.conclusion)."""

    point: str  # "single-topic/per-node"
    e2e_p99_ms: float  # the median repeat's
    low_ms: float  # the range it is told apart by (verdict.conclusion's docstring)
    high_ms: float
    repeats: int
    within_budget: bool
    ranked: bool  # False: failed or lost deliveries
    why_not_ranked: str
    cost: Cost

    def to_json(self) -> dict[str, Any]:
        return {"point": self.point, "e2e_p99_ms": self.e2e_p99_ms, "low_ms": self.low_ms,
                "high_ms": self.high_ms, "repeats": self.repeats,
                "within_budget": self.within_budget, "ranked": self.ranked,
                "why_not_ranked": self.why_not_ranked, "cost": self.cost.to_json()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RankedPoint:
        return cls(str(doc["point"]), float(doc["e2e_p99_ms"]), float(doc["low_ms"]),
                   float(doc["high_ms"]), int(doc["repeats"]), bool(doc["within_budget"]),
                   bool(doc["ranked"]), str(doc.get("why_not_ranked", "")),
                   Cost.from_json(doc.get("cost")) or Cost(None, None, None, None, None))


@dataclass(frozen=True, slots=True)
class Conclusion:
    """The ranking (best first, unranked last), the winner if one stands apart, and the
    sentence that says it with the figures behind it (a result's `conclusion`)."""

    SHAPE: ClassVar[Check] = fields({"sentence": text})

    rows: tuple[RankedPoint, ...]
    winner: str | None
    sentence: str

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "sentence": self.sentence,
                "ranking": [row.to_json() for row in self.rows]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Conclusion:
        winner = doc.get("winner")
        return cls(tuple(RankedPoint.from_json(row) for row in doc.get("ranking") or []),
                   str(winner) if winner is not None else None, str(doc.get("sentence", "")))


def _number(value: object) -> float:
    """A saved load as it was written (an int stays an int: the JSON keeps its keys and
    values as they were)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return value


# -- reading a saved part, and the parts a run's assembly adds ------------------------------
def text_of(value: object) -> str:
    """A saved string, or TypeError (read_part names the part)."""
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def read_part(name: str, parse: Callable[[], Any], whose: str = "a run's") -> Any:
    """One part of a saved run (or result), read by `parse`, or one sentence naming the
    part that is not what mqprobe writes."""
    try:
        return parse()
    except ResultFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, IndexError) as exc:
        raise ResultFormatError(f"{whose} {name} is not what mqprobe writes "
                                f"({type(exc).__name__}: {str(exc)[:80]})") from None


@dataclass(frozen=True, slots=True)
class PublisherFigures:
    """What the publisher sent and how the broker took it (its result, less what the
    timeline and the loop's figures carry elsewhere); `silent`: it gave no result, these
    are from its last progress report."""

    sent: int = 0
    confirmed: int | None = None
    nacked: int = 0
    errors: int = 0
    published: dict[str, int] = field(default_factory=dict)  # group -> messages sent
    first_error: str | None = None
    elapsed_s: float | None = None
    t0_ns: int | None = None
    schedule_lag: HopFigures | None = None  # t_pub - t_plan
    silent: bool = False

    @property
    def refused(self) -> int:
        """Messages the broker nacked or that failed at publish."""
        return self.nacked + self.errors

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"sent": self.sent}
        if self.confirmed is not None:
            doc["confirmed"] = self.confirmed
        doc |= {"nacked": self.nacked, "errors": self.errors, "published": self.published}
        for name in ("first_error", "elapsed_s", "t0_ns"):
            if (value := getattr(self, name)) is not None:
                doc[name] = value
        if self.schedule_lag is not None:
            doc["schedule_lag_ms"] = self.schedule_lag.to_json()
        if self.silent:
            doc["silent"] = True
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> PublisherFigures:
        doc = doc or {}
        lag = doc.get("schedule_lag_ms")
        return cls(int(doc.get("sent", 0)), doc.get("confirmed"), int(doc.get("nacked", 0)),
                   int(doc.get("errors", 0)), dict(doc.get("published", {})),
                   doc.get("first_error"), doc.get("elapsed_s"), doc.get("t0_ns"),
                   HopFigures.from_json(lag) if lag is not None else None,
                   bool(doc.get("silent", False)))


@dataclass(frozen=True, slots=True)
class HeldAtEnd:
    """What was still on its way when the run stopped: ready in the broker's queues, and
    received but not yet handled by the nodes."""

    broker_ready: int = 0
    nodes_in_hand: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"broker_ready": self.broker_ready, "nodes_in_hand": self.nodes_in_hand}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> HeldAtEnd:
        doc = doc or {}
        return cls(int(doc.get("broker_ready", 0)), int(doc.get("nodes_in_hand", 0)))


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One interval on the run's timeline: its kind (an EventKind's value), the piece it
    happened in, when (ms since the first publish), and what else was recorded of it."""

    SHAPE: ClassVar[Check] = fields({"kind": text, "start_ms": number, "end_ms": number},
                                        {"piece": text})

    kind: str
    piece: str
    start_ms: float
    end_ms: float
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, event: TimedEvent, t0_ns: int) -> TimelineEvent:
        return cls(event.kind.value, event.piece, round((event.start_ns - t0_ns) / 1e6, 3),
                   round((event.end_ns - t0_ns) / 1e6, 3), dict(event.detail))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "piece": self.piece, "start_ms": self.start_ms,
                "end_ms": self.end_ms, **self.detail}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TimelineEvent:
        detail = {k: v for k, v in doc.items() if k not in ("kind", "piece", "start_ms", "end_ms")}
        return cls(text_of(doc["kind"]), text_of(doc.get("piece", "")), float(doc["start_ms"]),
                   float(doc["end_ms"]), detail)


@dataclass(frozen=True, slots=True)
class Series:
    """Rows under named columns, the first of them ms since the first publish; `bucket_ms`:
    the width of a row's bucket, where rows are buckets."""

    columns: tuple[str, ...]
    rows: list[list[float]] = field(default_factory=list)
    bucket_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return ({"bucket_ms": self.bucket_ms} if self.bucket_ms is not None else {}) | {
            "columns": list(self.columns), "rows": self.rows}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Series:
        return cls(tuple(text_of(c) for c in doc.get("columns", [])), list(doc.get("rows", [])),
                   doc.get("bucket_ms"))


@dataclass(frozen=True, slots=True)
class NodeSeries:
    """One Series per piece under the same columns (each node's loop CPU windows, each
    AMQP link's round trips)."""

    columns: tuple[str, ...]
    nodes: dict[str, list[list[float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "nodes": self.nodes}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NodeSeries:
        return cls(tuple(text_of(c) for c in doc.get("columns", [])), dict(doc.get("nodes", {})))


@dataclass(frozen=True, slots=True)
class RunTimeline:
    """The run on one time axis: every piece's intervals on the coordinator's clock, each
    piece's clock error, and the series drawn under them (e2e by publish time, the broker's
    ready messages, each node's loop CPU). `t0_ns`: the first publish, the axis' zero."""

    SHAPE: ClassVar[Check] = fields({}, {"events": each(TimelineEvent.SHAPE),
                                            "e2e": fields({}, {"rows": rows(5)}),
                                            "queue_ready": fields({}, {"rows": rows(2)})})

    t0_ns: int = 0
    events: tuple[TimelineEvent, ...] = ()
    dropped: int = 0  # events the pieces' bounded recorders had no room for
    clock_uncertainty_ms: dict[str, float] | None = None
    e2e: Series | None = None
    queue_ready: Series | None = None
    loop_cpu: NodeSeries | None = None
    links: NodeSeries | None = None  # each AMQP link's round trips: t_ms, rtt_ms, tcp_rtt_ms

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"t0_ns": self.t0_ns, "events": [e.to_json() for e in self.events],
                     "dropped": self.dropped}
        if self.clock_uncertainty_ms is not None:
            doc["clock_uncertainty_ms"] = self.clock_uncertainty_ms
        for name in ("e2e", "queue_ready", "loop_cpu", "links"):
            if (part := getattr(self, name)) is not None:
                doc[name] = part.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> RunTimeline:
        doc = doc or {}
        e2e, ready, cpu = doc.get("e2e"), doc.get("queue_ready"), doc.get("loop_cpu")
        links = doc.get("links")
        return cls(int(doc.get("t0_ns", 0)),
                   tuple(TimelineEvent.from_json(e) for e in doc.get("events", [])),
                   int(doc.get("dropped", 0)), doc.get("clock_uncertainty_ms"),
                   Series.from_json(e2e) if e2e is not None else None,
                   Series.from_json(ready) if ready is not None else None,
                   NodeSeries.from_json(cpu) if cpu is not None else None,
                   NodeSeries.from_json(links) if links is not None else None)


@dataclass(frozen=True, slots=True)
class GroupResult:
    """One group of a run: its figures, and the verdict its own deliveries were given."""

    figures: GroupFigures
    verdict: Verdict | None = None

    def to_json(self) -> dict[str, Any]:
        return self.figures.to_json() | ({"verdict": self.verdict.to_json()} if self.verdict else {})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GroupResult:
        return cls(GroupFigures.from_json(doc),
                   Verdict.from_json(doc["verdict"]) if doc.get("verdict") else None)

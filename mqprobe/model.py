"""mqprobe's shared vocabulary, defined once: the hops, the culprits and causes a verdict
names, the layouts and consumer modes a topology takes, the phases of a run.

Like aio-pika's `abc.py`, this module holds nouns, not behaviour: every other module
derives its lists from here (records its histograms, clocks which clocks a hop compares,
report its columns, pictures its colours, attribution the hops it charges), so a new hop
or cause is added in one place. The enums are `StrEnum`s: in JSON and on the command line
they are the plain strings they always were. What travels between the pieces (specs,
commands, events, results) is typed in mqprobe.protocol; a run's verdict reads back as
figures.Verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NotRequired, TypedDict


class HopName(StrEnum):
    """The spans a message's path is measured in (docs/reference.md, "The contract")."""

    MQ = "mq"  # publish, routing, queue wait, delivery to the node's consumer
    SERVER = "server"  # the node's own work before it starts emitting
    DELIVERY = "delivery"  # the room fan-out writes, the socket, the network, up to the client
    E2E = "e2e"  # exactly mq + server + delivery
    E2E_PLANNED = "e2e_planned"  # e2e from when it should have been sent: no coordinated omission
    FANOUT = "fanout"  # per message and node: the node's emit loop (charged to the server)


# The same names as plain strings, for the hot paths (the swarm per delivery, the embed per
# message): a dict finds a str key in 16 ns here, an enum member in 40.
HOP_MQ, HOP_SERVER, HOP_DELIVERY, HOP_E2E, HOP_E2E_PLANNED, HOP_FANOUT = (h.value for h in HopName)


@dataclass(frozen=True)
class Hop:
    """One measured span of a message's path: from stamp `start` to stamp `end`, each
    taken on the clock of one kind of piece."""

    name: HopName
    start: str  # the stamp it starts at: t_pub, t_deq, t_emit, t_plan
    end: str  # the stamp it ends at: t_deq, t_emit, t_recv, t_emit_done
    start_clock: str  # which piece's clock stamped `start`: publisher | node | swarm
    end_clock: str
    colour: str = ""  # in pictures; "" for hops that are not drawn
    on_path: bool = False  # one of the consecutive hops that add up to e2e


HOP_REGISTRY: tuple[Hop, ...] = (
    Hop(HopName.MQ, "t_pub", "t_deq", "publisher", "node", "#d9534f", True),
    Hop(HopName.SERVER, "t_deq", "t_emit", "node", "node", "#f0ad4e", True),
    Hop(HopName.DELIVERY, "t_emit", "t_recv", "node", "swarm", "#5bc0de", True),
    Hop(HopName.E2E, "t_pub", "t_recv", "publisher", "swarm", "#333333", False),
    Hop(HopName.E2E_PLANNED, "t_plan", "t_recv", "publisher", "swarm", "", False),
    Hop(HopName.FANOUT, "t_emit", "t_emit_done", "node", "node", "", False),
)

PATH_HOPS = tuple(h.name for h in HOP_REGISTRY if h.on_path)  # mq, server, delivery
HOPS = PATH_HOPS + (HopName.E2E,)  # the table's columns
RUN_HOPS = tuple(h.name for h in HOP_REGISTRY)  # what a run reports
# (hop, clock that stamped its end, clock of its start)
HOP_CLOCKS = {h.name: (h.end_clock, h.start_clock) for h in HOP_REGISTRY
              if h.name != HopName.E2E_PLANNED}
HOP_COLOURS = {h.name: h.colour for h in HOP_REGISTRY if h.colour}


def is_node_piece(piece: str) -> bool:
    """n1, n2...: the node ids compare gives, in the trace, on the timeline, in the CPU
    footprint."""
    return piece.startswith("n") and piece[1:].isdigit()


class PieceRole(StrEnum):
    """What a process of a run is, in its CPU footprint and its failures: the system
    measured (broker, nodes) or mqprobe's own instrument (swarm, publisher, compare)."""

    NODE = "node"
    BROKER = "broker"
    SWARM = "swarm"
    PUBLISHER = "publisher"
    COMPARE = "compare"


# the load process of --inject churn and client-stall: members that only come and go (they
# join a room nothing is published to), so all its CPU is connection work
LOAD_PIECE = "swarm-load"
HOST_CPU = "host"  # the host's busy CPU, all cores, beside the pieces' (CpuSampler.used_rows)

PLACED_ROLES = (PieceRole.NODE, PieceRole.SWARM, PieceRole.PUBLISHER)  # what a spec starts,
# and what `--place` puts on agents
INSTRUMENT_ROLES = frozenset((PieceRole.SWARM, PieceRole.PUBLISHER, PieceRole.COMPARE))


def role_of(piece: str) -> PieceRole | str:
    """A piece's role from its name: n1 or node1 (a node's id, its process), swarm2,
    broker, publisher, compare; a name of no role (an agent's) as it is."""
    if piece.startswith("swarm"):
        return PieceRole.SWARM
    if is_node_piece(piece) or (piece.startswith("node") and piece[4:].isdigit()):
        return PieceRole.NODE
    return PieceRole(piece) if piece in PieceRole._value2member_map_ else piece


class Culprit(StrEnum):
    """Which part of the path a delay belongs to (docs/reference.md, "The contract")."""

    MQ = "mq"
    SERVER = "server"
    DELIVERY = "delivery"
    CLIENT = "client"  # the measuring instrument itself: its figures are not to be trusted
    NONE = "none"


class Cause(StrEnum):
    """Why; each belongs to one culprit (CULPRIT_OF)."""

    BROKER_SIDE = "broker-side"
    NETWORK = "network"
    BROKER_THROTTLED = "broker-throttled"
    BROKER_BUSY = "broker-busy"
    BROKER_STARVED = "broker-starved"
    BROKER_BLOCKED = "broker-blocked"
    BROKER_ALARM = "broker-alarm"
    BROKER_UNAVAILABLE = "broker-unavailable"
    PUBLISH_REJECTED = "publish-rejected"
    CONSUMER_SATURATED = "consumer-saturated"
    GC_PAUSE = "gc-pause"
    SERVER_STALL = "server-stall"
    CPU_STARVED = "cpu-starved"
    CPU_THROTTLED = "cpu-throttled"
    HOST_PAUSE = "host-pause"
    SLOW_HANDLER = "slow-handler"
    FANOUT_BOUND = "fanout-bound"
    NODE_DIED = "node-died"
    CONNECTION_CHURN = "connection-churn"
    CLIENTS_UNRESPONSIVE = "clients-unresponsive"
    HEARTBEATS = "heartbeats"
    DELIVERY = "delivery"
    LOST_BEFORE_NODE = "lost-before-node"
    LOST = "lost-deliveries"
    SWARM_SATURATED = "swarm-saturated"
    INSTRUMENT_FAILED = "instrument-failed"
    PUBLISHER_STALL = "publisher-stall"
    INTERRUPTED = "interrupted"
    WITHIN_BUDGET = "within-budget"
    NOTHING_MEASURED = "nothing-measured"
    SPLIT_UNKNOWN = "split-unknown"  # late, and what outside the servers saw cannot split it

    @classmethod
    def of(cls, text: str) -> Cause | None:
        """The code that opens the contract's `cause` text (`broker-side: the broker held...`);
        None when the text opens with none we know (a result from another version)."""
        code = str(text).partition(":")[0].strip()
        return cls(code) if code in cls._value2member_map_ else None


# which culprit each cause belongs to
CULPRIT_OF = {
    Cause.BROKER_SIDE: Culprit.MQ, Cause.BROKER_STARVED: Culprit.MQ,
    Cause.NETWORK: Culprit.MQ, Cause.BROKER_THROTTLED: Culprit.MQ, Cause.BROKER_BUSY: Culprit.MQ,
    Cause.BROKER_BLOCKED: Culprit.MQ,
    Cause.BROKER_ALARM: Culprit.MQ, Cause.BROKER_UNAVAILABLE: Culprit.MQ,
    Cause.PUBLISH_REJECTED: Culprit.MQ,
    Cause.CONSUMER_SATURATED: Culprit.SERVER, Cause.GC_PAUSE: Culprit.SERVER,
    Cause.SERVER_STALL: Culprit.SERVER, Cause.CPU_STARVED: Culprit.SERVER,
    Cause.CPU_THROTTLED: Culprit.SERVER, Cause.SLOW_HANDLER: Culprit.SERVER,
    Cause.FANOUT_BOUND: Culprit.SERVER, Cause.NODE_DIED: Culprit.SERVER,
    Cause.CONNECTION_CHURN: Culprit.SERVER, Cause.CLIENTS_UNRESPONSIVE: Culprit.CLIENT,
    Cause.HEARTBEATS: Culprit.SERVER,
    Cause.LOST_BEFORE_NODE: Culprit.MQ,
    Cause.DELIVERY: Culprit.DELIVERY, Cause.LOST: Culprit.DELIVERY,
    Cause.SWARM_SATURATED: Culprit.CLIENT, Cause.INSTRUMENT_FAILED: Culprit.CLIENT,
    Cause.HOST_PAUSE: Culprit.CLIENT,
    Cause.PUBLISHER_STALL: Culprit.CLIENT, Cause.INTERRUPTED: Culprit.CLIENT,
    Cause.WITHIN_BUDGET: Culprit.NONE, Cause.NOTHING_MEASURED: Culprit.NONE,
    Cause.SPLIT_UNKNOWN: Culprit.NONE,
}

# What each cause means, for the verdict's sentence.
PROSE = {
    Cause.BROKER_SIDE: "the wait happened in RabbitMQ, not in a busy consumer",
    Cause.BROKER_STARVED: ("the wait happened in RabbitMQ while it was ready to run and "
                           "waited for a CPU that other processes had"),
    Cause.NETWORK: ("the time was on the way to or from RabbitMQ: the links' own round trips "
                    "(a remote broker, a proxy or load balancer, a slow network)"),
    Cause.BROKER_THROTTLED: ("the wait happened in RabbitMQ while its cgroup's CPU quota held it "
                             "back (a container's CPU limit)"),
    Cause.BROKER_BUSY: ("the wait happened in RabbitMQ while its own work kept one of its "
                        "schedulers computing throughout (a hot queue, a high rate, routing)"),
    Cause.BROKER_BLOCKED: "the broker blocked the publisher's connection (flow control)",
    Cause.BROKER_ALARM: "a broker memory or disk alarm held messages back",
    Cause.BROKER_UNAVAILABLE: "the broker could not be reached",
    Cause.PUBLISH_REJECTED: "the broker refused or failed messages at publish",
    Cause.CONSUMER_SATURATED: "messages waited because a node's consumer could not keep up "
                              "(its prefetch window full, or its own backlog)",
    Cause.GC_PAUSE: "a node's garbage collector stopped its event loop",
    Cause.SERVER_STALL: "a node's event loop could not run",
    Cause.HOST_PAUSE: "every process on this machine stopped at once, mqprobe's own with the "
                      "nodes, mostly off the CPU: the machine paused them "
                      "(a hypervisor taking its CPUs, the kernel), not the code; the figures "
                      "of that moment measured the machine",
    Cause.CPU_STARVED: "a node was ready to run and waited for a CPU that other processes had",
    Cause.CPU_THROTTLED: "a node was ready to run and its cgroup's CPU quota held it back",
    Cause.SLOW_HANDLER: "the node's handler takes long per message",
    Cause.FANOUT_BOUND: "the node's emit loop to the room took the time",
    Cause.NODE_DIED: "a node process ended during the run",
    Cause.CONNECTION_CHURN: ("a node's event loop was busy with connections coming and going "
                             "(handshakes, joins, disconnects) while messages waited for it"),
    Cause.CLIENTS_UNRESPONSIVE: ("clients stopped answering their server's pings (their "
                                 "process or host too busy), the server timed them out, and "
                                 "their reconnecting kept its event loop busy while messages "
                                 "waited for it: the storm began on the client side"),
    Cause.HEARTBEATS: ("a node's event loop was busy with socket.io's heartbeats (a ping "
                       "written to each of its connections, a pong read back, its walk over "
                       "their last pongs) while messages waited for it: engine.io keeps its "
                       "clients' pings in step, so many connections make a wave every ping "
                       "interval"),
    Cause.DELIVERY: "socket writes, network or client reads",
    Cause.LOST_BEFORE_NODE: "messages never reached a node's handler",
    Cause.LOST: "a node emitted them, yet they never reached their members",
    Cause.SWARM_SATURATED: "the measuring swarm itself was the bottleneck, these figures "
                           "are not to be trusted",
    Cause.INSTRUMENT_FAILED: "a piece of mqprobe's own instrument failed: these figures are "
                             "not to be trusted",
    Cause.PUBLISHER_STALL: "mqprobe's publisher stalled after stamping",
    Cause.INTERRUPTED: "the run was stopped before it finished",
    Cause.WITHIN_BUDGET: "every hop within budget",
    Cause.NOTHING_MEASURED: "no delivery was measured",
    Cause.SPLIT_UNKNOWN: ("late, but what was measured outside the servers cannot tell RabbitMQ "
                          "from the server: that needs mqprobe's embed in the server"),
}


class Tail(StrEnum):
    """Which deliveries an attribution charges: those over the budget when p99 e2e misses
    it, else (the budget met) the p99 tail, to say what shaped it."""

    OVER_BUDGET = "over-budget"
    P99 = "p99"


class Layout(StrEnum):
    """How a node subscribes: one queue for all its groups, or one per group."""

    PER_NODE = "per-node"
    PER_GROUP = "per-group"


class QueueType(StrEnum):
    """RabbitMQ's queue types (the x-queue-type argument): classic, quorum (replicated by
    Raft, durable), stream (an append-only log read from an offset)."""

    CLASSIC = "classic"
    QUORUM = "quorum"
    STREAM = "stream"


class AckMode(StrEnum):
    """When a node acknowledges a message: after handling it, before, or never (auto)."""

    AFTER = "after"
    BEFORE = "before"
    AUTO = "auto"


class ChannelMode(StrEnum):
    """Whether a node's consumers share one AMQP channel or each has its own."""

    SHARED = "shared"
    PER_CONSUMER = "per-consumer"


class Concurrency(StrEnum):
    """Whether a node handles its messages one at a time, in order, or each as it comes."""

    SEQUENTIAL = "sequential"
    CONCURRENT = "concurrent"


class RunPhase(StrEnum):
    """Where a run is, as compare reports it."""

    STARTING = "starting"
    CONNECTING = "connecting"
    PUBLISHING = "publishing"
    DRAINING = "draining"
    DONE = "done"
    FAILED = "failed"


class Fault(StrEnum):
    """A fault `--inject` plants on purpose (mqprobe.pieces.inject says what each does)."""

    SERVER_DELAY = "server-delay"
    BROKER_DELAY = "broker-delay"
    PREFETCH = "prefetch"
    STALL = "stall"
    SPIN = "spin"
    THROTTLE = "throttle"
    LINK_DELAY = "link-delay"
    BROKER_THROTTLE = "broker-throttle"
    BROKER_FREEZE = "broker-freeze"
    CHURN = "churn"
    CLIENT_STALL = "client-stall"


class SweepAxis(StrEnum):
    """What `mqprobe sweep` grows: the groups, or each group's messages a second."""

    GROUPS = "groups"
    RATE = "rate"


class AmqpEntity(StrEnum):
    """What mqprobe declares on a broker, and removes."""

    QUEUE = "queue"
    EXCHANGE = "exchange"


class TraceLine(StrEnum):
    """What a line of `mqprobe trace` (and of its --log) is about."""

    PROBE = "probe"  # a probe trace sent, as it arrived
    LIVE = "live"  # a message the server traced, as it arrived
    LOST = "lost"  # a probe that never arrived
    LATE = "late"  # a watched group went over budget
    EPISODE = "episode"  # a late episode over, with its verdict


class EngineIO(StrEnum):
    """The engine.io protocol a socket.io server speaks (mqprobe.pieces.swarm)."""

    AUTO = "auto"  # ask each server
    V3 = "3"  # socket.io 2, netty-socketio 1.x
    V4 = "4"  # socket.io 3 and 4, python-socketio 5


# -- the result JSON (the contract's shape, and what mqprobe adds to it compatibly) -----------
# where a delivery's t_recv came from, by index (the swarm's websocket.STAMP_*): the read
# that returned the frame, the kernel's own stamp for it, or one stamp shared by a read's
# frames; their names in results
STAMP_SOURCES = ("read", "kernel", "kernel_shared")


class HopSummary(TypedDict):
    """One hop's latency (records.Latency.summary)."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    negative: NotRequired[int]  # stamps that came out of order (clocks)
    min_ms: NotRequired[float]  # the most negative of them, with `negative`


class LagSummary(TypedDict):
    """A loop's lag in the short form (records.Latency.lag_summary)."""

    p50: float
    p99: float
    max: float


class ShareJson(TypedDict):
    culprit: str
    cause: str  # a Cause
    share: float  # of the tail's excess
    mean_ms: float


class VerdictJson(TypedDict):
    """figures.Verdict.to_json; Verdict.from_json reads it back typed."""

    culprit: str  # a Culprit
    cause: str  # "<Cause>: <sentence>"
    evidence: list[str]
    shares: NotRequired[list[ShareJson]]

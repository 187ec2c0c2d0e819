"""What every run of a comparison does (the workload), checked before anything starts,
and how many swarm processes it takes on this host: recorded in the result, so a run can
be made again."""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, field

from mqprobe.broker.topology import DEFAULT_TOPOLOGIES, Topology, resolve
from mqprobe.errors import InputError, within
from mqprobe.model import AckMode, ChannelMode, Concurrency, Layout, QueueType
from mqprobe.pieces.inject import Faults, parse_injections
from mqprobe.pieces.node import keep_alive_problems
from mqprobe.pieces.publisher import MAX_DURATION_S, MAX_MESSAGES, MAX_RATE, MAX_SIZE

MAX_NODES = 64
MAX_GROUPS = 10_000
MAX_BUDGET_MS = 3_600_000.0
FD_RESERVE = 256  # open files a swarm process needs besides its connections
# deliveries a second one swarm process records with room to spare: it records 50,000 on
# half a core, but shares the host with nodes and broker (BENCHMARKS.md)
SWARM_DELIVERIES_PER_S = 25_000


@dataclass
class Workload:
    """What every run of a comparison does; recorded in the result so runs can be redone."""

    topologies: list[str] = field(default_factory=lambda: list(DEFAULT_TOPOLOGIES))
    layouts: list[Layout] = field(default_factory=lambda: list(Layout))
    nodes: int = 2
    group_sizes: list[int] = field(default_factory=lambda: [100] * 6)
    rate: float = 10.0
    size: int = 1024
    duration_s: float = 5.0
    swarm_processes: int = 0  # 0: `swarms` chooses
    prefetch: int | None = None
    ack: AckMode | None = None  # None: each topology's own
    channel: ChannelMode | None = None
    concurrency: Concurrency | None = None
    samples: int = 0
    budget_ms: float = 50.0
    drain_s: float = 15.0
    inject: list[str] = field(default_factory=list)  # KIND=VALUE, see mqprobe.pieces.inject
    placement: dict[str, list[str]] = field(default_factory=dict)  # role -> agents, see agent
    listen_host: str = "127.0.0.1"  # where nodes on this host listen (agents: their own)
    repeat: int = 1  # each point this many times: is the verdict stable?
    queue_types: list[QueueType] = field(default_factory=list)  # each topology on each; []: its own
    # how long the reference nodes keep a silent client (pieces.node.NodeConfig)
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    tcp_keepalive_s: float = 0.0

    @property
    def faults(self) -> Faults:
        return parse_injections(self.inject)

    @property
    def swarms(self) -> int:
        """Swarm processes: as asked, or enough for this host's open-file limit and for the
        deliveries a second (SWARM_DELIVERIES_PER_S each), the latter at most one per core."""
        if self.swarm_processes:
            return self.swarm_processes
        clients = sum(self.group_sizes)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        for_files = (1 if limit == resource.RLIM_INFINITY
                     else -(-clients // max(1, limit - FD_RESERVE)))
        for_load = -(-int(clients * self.rate) // SWARM_DELIVERIES_PER_S)
        return max(1, for_files, min(for_load, os.cpu_count() or 1))

    @property
    def groups(self) -> list[str]:
        return [str(i + 1) for i in range(len(self.group_sizes))]

    def check(self) -> None:
        """Every number finite and within its bound (named in the sentence), before anything
        starts."""
        problems = [p for p in (
            within("--nodes", self.nodes, 1, MAX_NODES),
            within("--swarm-processes", self.swarm_processes, 0, 256),
            within("--rate", self.rate, 0, MAX_RATE, above=True),
            within("--duration", self.duration_s, 0, MAX_DURATION_S, above=True),
            within("--size", self.size, 0, MAX_SIZE),
            within("--budget-ms", self.budget_ms, 0, MAX_BUDGET_MS, above=True),
            within("--repeat", self.repeat, 1, 100),
            within("--samples", self.samples, 0, 10_000_000),
            within("--drain", self.drain_s, 0, MAX_DURATION_S),
            *keep_alive_problems(self.ping_interval_s, self.ping_timeout_s,
                                 self.tcp_keepalive_s),
            within("--groups", len(self.group_sizes), 1, MAX_GROUPS)) if p]
        if self.group_sizes and min(self.group_sizes) < 1:
            problems.append("every group needs at least 1 member")
        if not problems:
            messages = len(self.group_sizes) * self.rate * self.duration_s
            if messages > MAX_MESSAGES:
                problems.append(f"{messages:.0f} messages in one run (groups x rate x duration) "
                                f"is over {MAX_MESSAGES:,}: shorten --duration or lower --rate")
            problems += self._clients_problem()
        if problems:
            raise InputError("; ".join(problems))
        faults = self.faults  # raises with a sentence on a malformed --inject
        managed = [t.name for t in map(resolve, self.topologies) if t.manager]
        if faults.broker_delay_ms and managed:  # any manager topology, under any name
            raise InputError("--inject broker-delay needs a topology mqprobe publishes to; "
                             f"{', '.join(managed)} publishes through python-socketio's manager "
                             "(drop it from --topologies)")

    def _clients_problem(self) -> list[str]:
        """A swarm process holds one open file per connection: the host's limit bounds it."""
        if self.placement.get("swarm"):
            return []  # other hosts' limits are theirs to check
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        clients = sum(self.group_sizes)
        per_process = -(-clients // self.swarms)
        if limit != resource.RLIM_INFINITY and per_process > limit - FD_RESERVE:
            need = -(-clients // max(1, limit - FD_RESERVE))
            return [f"{per_process} clients per swarm process is over this host's open-file "
                    f"limit ({limit}, less {FD_RESERVE} for the process itself): use "
                    f"--swarm-processes {need} or more"]
        return []

    def _knobs(self) -> dict[str, object]:
        return {"prefetch": self.faults.prefetch or self.prefetch, "ack": self.ack,
                "channel": self.channel, "concurrency": self.concurrency}

    def resolved_topologies(self) -> list[Topology]:
        """Each topology with the knobs asked for, on each queue type asked for (python-
        socketio's manager declares its own queue: it runs once, as it is)."""
        topologies = [resolve(name) for name in self.topologies]
        out = []
        for topology in topologies:
            if topology.manager:
                out.append(topology)
                continue
            tuned = topology.with_knobs(**self._knobs())
            out += [tuned.with_queue_type(q) for q in self.queue_types] or [tuned]
        return out

    def unapplied_knobs(self) -> str:
        """The sentence for consumer knobs asked for that a topology cannot take
        (python-socketio's manager fixes its own), '' when every one applies."""
        asked = [name for name, value in self._knobs().items() if value is not None]
        asked += ["queue types"] if self.queue_types else []
        fixed = [t.name for t in self.resolved_topologies() if t.manager]
        if not asked or not fixed:
            return ""
        return (f"{', '.join(asked)} not applied to {', '.join(fixed)}: python-socketio's "
                "manager fixes its own (prefetch 1, ack after handling, a classic queue)")

    def to_json(self) -> dict:
        out = asdict(self)
        out["groups"] = len(self.group_sizes)
        return out

"""A live group's verdict: what `mqprobe trace` watched, judged by compare's own engine
(verdict.attribution, verdict.analysis): the same causes, shares, evidence and words.

What a live system can tell: the probes' and the group's own traffic's stamps (the trace
field); each embedding server's intervals (Tracer.intervals, served beside its /metrics:
its pauses with their parts and the code that held its loop, its loop's CPU windows, its
consuming link's round trips, the queues it consumes); and the broker's facts (each such
queue's depth, alarms and blocked connections, trace's own link to it, and a local
broker's own counters). A server with no mqprobe code in it stamps nothing: then only what
is measurable outside it is judged (`outside_verdict`), and what that cannot split is said
to need the embed, never guessed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from mqprobe.embed.tracer import INTERVALS_VERSION
from mqprobe.errors import InputError
from mqprobe.figures import (
    Attribution,
    BrokerCpu,
    BrokerEvidence,
    Counts,
    CpuUse,
    HopFigures,
    LoopLag,
    Verdict,
)
from mqprobe.model import Cause, Culprit
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.analysis import RunFacts, judge
from mqprobe.verdict.attribution import (
    CONTROL_LINK,
    LEAD_NS,
    PUBLISHER,
    MessageDeliveries,
    paused_together,
)

LISTENERS = "trace"  # the piece name of trace's own listening clients on the timeline


@dataclass(frozen=True)
class ServerIntervals:
    """One embedding server's intervals (Tracer.intervals), on its own clock until shifted."""

    node: str
    events: tuple[TimedEvent, ...] = ()
    loop_cpu: tuple[tuple[int, ...], ...] = ()
    link: tuple[tuple[int, int, int], ...] = ()
    queues: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: object, url: str = "") -> ServerIntervals:
        """A server's document, every part checked: one sentence naming the server for a
        document that is not what mqprobe's embed serves (a foreign server, a proxy's page)."""
        where = f" from {url}" if url else ""
        if not isinstance(doc, dict) or doc.get("mqprobe_intervals") != INTERVALS_VERSION:
            raise InputError(f"the intervals{where} are not mqprobe's embed's (version "
                             f"{INTERVALS_VERSION}): is that server's /metrics mqprobe's?")
        try:
            node = str(doc["node"])
            events = tuple(TimedEvent.from_wire(node, raw) for raw in doc.get("events", []))
            cpu = tuple(tuple(int(v) for v in row[:5])
                        for row in (doc.get("loop_cpu") or {}).get("rows", []))
            link = tuple((int(t), int(rtt), int(tcp)) for t, rtt, tcp in doc.get("link", []))
            queues = tuple(str(q) for q in doc.get("queues", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the intervals{where} are malformed ({type(exc).__name__}: "
                             f"{str(exc)[:80]})") from None
        if any(len(row) < 5 or row[1] <= 0 for row in cpu):
            raise InputError(f"the intervals{where} have a loop CPU window that is not "
                             "[start_ns, wall_ns, on_cpu_ns, waiting_ns, throttled_ns]")
        return cls(node, events, cpu, link, queues)

    def shifted(self, ns: int) -> ServerIntervals:
        """Onto our clock: `ns` added to every time it recorded."""
        if not ns:
            return self
        return ServerIntervals(
            self.node, tuple(TimedEvent(e.kind, e.piece, e.start_ns + ns, e.end_ns + ns, e.detail)
                             for e in self.events),
            tuple((row[0] + ns, *row[1:]) for row in self.loop_cpu),
            tuple((t + ns, rtt, tcp) for t, rtt, tcp in self.link), self.queues)


def intervals_url(metrics_url: str) -> str:
    """Where an embedding server serves its intervals: beside its metrics."""
    return metrics_url.rstrip("/") + "/intervals"


async def fetch_intervals(metrics_url: str, since_ns: int, timeout_s: float = 3.0
                          ) -> ServerIntervals:
    """A server's intervals since `since_ns`; InputError, one sentence, when it cannot say."""
    url = f"{intervals_url(metrics_url)}?since={int(since_ns)}"
    shown = urllib.parse.urlsplit(url)._replace(query="").geturl()

    def get() -> object:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read(16 * 1024 * 1024))

    try:
        doc = await asyncio.to_thread(get)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise InputError(f"{shown} did not give mqprobe's intervals: "
                         f"{getattr(exc, 'reason', None) or exc}") from None
    return ServerIntervals.from_json(doc, shown)


@dataclass
class LiveFacts:
    """What a live trace gathered, on our clock, for a verdict."""

    deliveries: list[MessageDeliveries]
    counts: Counts
    hops: dict[str, HopFigures] = field(default_factory=dict)
    self_lag: LoopLag = field(default_factory=lambda: LoopLag(0.0, 0.0, 0.0))
    servers: list[ServerIntervals] = field(default_factory=list)
    broker_events: list[TimedEvent] = field(default_factory=list)
    broker: BrokerEvidence = field(default_factory=BrokerEvidence.not_measured)
    listener_events: list[TimedEvent] = field(default_factory=list)
    probe_link: list[list[int]] = field(default_factory=list)
    control_link: list[list[int]] = field(default_factory=list)
    broker_cpu: BrokerCpu | None = None
    used: dict[str, list[list[int]]] = field(default_factory=dict)  # who had the CPU


def judge_live(facts: LiveFacts, budget_ms: float) -> tuple[Attribution | None, Verdict]:
    """The group's deliveries judged as compare judges a run's."""
    events = paused_together([*(e for s in facts.servers for e in s.events),
                              *facts.broker_events, *facts.listener_events])
    links = {s.node: [list(row) for row in s.link] for s in facts.servers if s.link}
    if facts.probe_link:
        links[PUBLISHER] = facts.probe_link
    if facts.control_link:
        links[CONTROL_LINK] = facts.control_link
    run = RunFacts(
        counts=facts.counts, hops=facts.hops, self_lag=facts.self_lag, broker=facts.broker,
        events=events, t0_ns=min((m.t_pub for m in facts.deliveries), default=0),
        cpu={s.node: [list(row) for row in s.loop_cpu] for s in facts.servers if s.loop_cpu},
        used=facts.used, broker_cpu=facts.broker_cpu, links=links,
        servers=frozenset(s.node for s in facts.servers), cpu_use=CpuUse(False, ""))
    judged = judge(run, facts.deliveries, budget_ms)
    return judged.attribution, judged.verdict


BEHIND_SHARE = 0.5  # of the late probes, waiting while the server's queue held messages


def outside_verdict(late: list[tuple[int, int]], on_time: int, backlogs: list[TimedEvent],
                    broker_faults: list[TimedEvent], budget_ms: float,
                    by_server: dict[str, tuple[int, int]] | None = None) -> Verdict:
    """What can be said of servers with no mqprobe code in them, from outside: `late` are
    the probes over budget, (t_pub, e2e ns) each; `backlogs` the times RabbitMQ held ready
    messages in the servers' queues; `broker_faults` its outages, alarms and blocks;
    `by_server` each listener's server: (late, received). A backlog while probes were
    late is a consumer that fell behind (the server), unless a broker fault began it; a
    broker fault meanwhile is the MQ; otherwise the split needs the embed, said plainly."""
    total = len(late) + on_time
    if not late:
        return Verdict.of(Cause.WITHIN_BUDGET, evidence=[f"{total} probes, none over the "
                                                         f"{budget_ms:g} ms budget"])

    def during(spans: list[TimedEvent]) -> int:
        return sum(1 for t, e2e in late if any(e.start_ns < t + e2e and e.end_ns > t
                                               for e in spans))
    # a backlog has a beginning: one that began while RabbitMQ was out of reach, or within
    # LEAD_NS of its coming back, is what it held meanwhile, draining (the fault's)
    began_by_fault = [b for b in backlogs if any(
        f.start_ns - LEAD_NS <= b.start_ns <= f.end_ns + LEAD_NS for f in broker_faults)]
    behind = during([b for b in backlogs if b not in began_by_fault])
    faulted = during([*broker_faults, *began_by_fault])
    worst = max(e2e for _t, e2e in late) / 1e6
    evidence = [f"{len(late)} of {total} probes over the {budget_ms:g} ms budget, the worst "
                f"{worst:.0f} ms (publish to receive: no server stamped them)"]
    if backlogs:
        peak = max(backlogs, key=lambda e: e.detail.get("ready_max", 0))
        evidence.append(f"queue {peak.detail.get('queue', '?')} held up to "
                        f"{peak.detail.get('ready_max', '?')} ready messages")
    if by_server and len(by_server) > 1:
        evidence.append("late by server (each probe reached every server's queue at once): "
                        + ", ".join(f"{url} {n_late} of {n}" for url, (n_late, n)
                                    in sorted(by_server.items())))
    if faulted >= BEHIND_SHARE * len(late) and faulted >= behind:
        kinds = sorted({e.kind.value for e in broker_faults})
        stopped = any(e.detail.get("stopped") for e in broker_faults)
        what = ("RabbitMQ's process was stopped (SIGSTOP, a debugger or a frozen container)"
                if stopped else f"RabbitMQ itself ({', '.join(kinds)})")
        return Verdict(Culprit.MQ, Cause.BROKER_UNAVAILABLE if EventKind.BROKER_UNAVAILABLE.value
                       in kinds else Cause.BROKER_SIDE,
                       f"{what} while {faulted} of the {len(late)} late probes waited", evidence)
    if behind >= BEHIND_SHARE * len(late):
        return Verdict(Culprit.SERVER, Cause.CONSUMER_SATURATED,
                       f"a server's consumer fell behind: RabbitMQ held ready messages in its "
                       f"queue while {behind} of the {len(late)} late probes waited (the "
                       "server's own split needs mqprobe's embed in it)", evidence)
    return Verdict(Culprit.NONE, Cause.SPLIT_UNKNOWN,
                   f"{len(late)} probes were late, yet RabbitMQ held no backlog for the servers "
                   "and none of its faults came meanwhile: the time went after RabbitMQ handed "
                   "them over (the server, or the last hop) or on the way to it; which, only "
                   "mqprobe's embed in the server can tell (docs/production.md, 'Embedding the trace')",
                   evidence)



@dataclass
class Episode:
    """A stretch of a group's deliveries over budget: from the first late one's publish to
    the last late one's receipt (ns), the worst e2e, and how many were late of those seen."""

    group: str
    start_ns: int
    end_ns: int = 0
    worst_ns: int = 0
    late: int = 0
    seen: int = 0
    servers: set[str] = field(default_factory=set)  # those the late deliveries came through

    def to_json(self) -> dict:
        return {"group": self.group, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "worst_e2e_ms": round(self.worst_ns / 1e6, 3), "late": self.late,
                "seen": self.seen, "servers": sorted(self.servers)}


RECOVER_NS = 5_000_000_000  # within budget this long after the last late delivery: over
RECOVER_COUNT = 3  # ...and at least this many deliveries, so silence is not a recovery


class EpisodeWatch:
    """Late or on time, delivery by delivery, for one group: an episode begins with the
    first delivery over the budget and ends once every delivery for RECOVER_NS after the
    last late one (and at least RECOVER_COUNT of them) was within it. A group that receives
    nothing is not recovered: its episode goes on."""

    def __init__(self, group: str, budget_ns: float) -> None:
        self.group, self.budget_ns = group, budget_ns
        self.open: Episode | None = None
        self._last_late = 0
        self._on_time_since = 0

    def see(self, t_pub: int, t_recv: int, server: str) -> Episode | None:
        """One delivery; the episode it began, if it began one."""
        e2e = t_recv - t_pub
        if e2e > self.budget_ns:
            began = self.open is None
            episode = self.open = self.open or Episode(self.group, t_pub)
            episode.late += 1
            episode.worst_ns = max(episode.worst_ns, e2e)
            episode.servers.add(server)
            episode.end_ns = max(episode.end_ns, t_recv)
            self._last_late, self._on_time_since = t_recv, 0
            episode.seen += 1
            return episode if began else None
        if self.open is not None:
            self.open.seen += 1
            self._on_time_since += 1
        return None

    def ended(self, now_ns: int) -> Episode | None:
        """The episode that is over by now, if one is."""
        episode = self.open
        if (episode is not None and now_ns - self._last_late >= RECOVER_NS
                and self._on_time_since >= RECOVER_COUNT):
            self.open = None
            return episode
        return None

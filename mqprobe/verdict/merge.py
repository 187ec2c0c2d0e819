"""What a run's pieces gave, merged into its figures: deliveries counted against what the
publisher actually sent and who actually joined (lost, or late and still on its way), the
hops of every group, each node's and the swarm processes' own figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from mqprobe.figures import (
    ChurnFigures,
    ConnectionFigures,
    Counts,
    GroupFigures,
    HeartbeatFigures,
    HeldAtEnd,
    HopFigures,
    LoopCpu,
    LoopLag,
    NodeFigures,
    PublisherFigures,
    SwarmFigures,
)
from mqprobe.model import (
    RUN_HOPS,
    STAMP_SOURCES,
)
from mqprobe.protocol import NodeResult, PublisherResult, SwarmResult
from mqprobe.records import HopSet, Latency


@dataclass(frozen=True, slots=True)
class Merged:
    """The run's deliveries as its swarms, nodes and publisher counted them: the parts of
    its RunRecord (same names) that merge_run gives."""

    counts: Counts
    held_at_end: HeldAtEnd
    bounds: tuple[str, ...]
    lost_at_most: bool  # a swarm died: what arrived is a lower bound, so lost an upper one
    hops: dict[str, HopFigures]
    self_lag: LoopLag
    groups: dict[str, GroupFigures]
    hdr: dict[str, str]
    untraced: int
    misrouted: int
    publisher: PublisherFigures

    def parts(self) -> dict[str, Any]:
        """Each part by its name, for RunRecord(**merged.parts(), ...), but the groups: a
        record holds them with their verdicts."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "groups"}


def merge_run(publisher: PublisherResult | None, swarms: list[SwarmResult],
              nodes: list[NodeResult], broker_ready_at_end: int = 0,
              cut_short: bool = False) -> Merged:
    """The contract's run fields (counts, hops, self-lag) plus per-group detail (each node's
    own figures are node_figures').

    A delivery that did not arrive is `lost` (it never will: a hole deeper in a member's
    seqs than the run ever reordered, a member that went down, nothing held anywhere) or
    `not_delivered` (still on its way when the run stopped: past a live member's highest
    seq, or a gap within the reordering seen below it, while the broker's queues or the
    nodes still held messages: `broker_ready_at_end`, each node's `in_hand_at_end`).

    A run `cut_short` (a signal stopped it mid-flight, whichever: Ctrl-C, SIGTERM, SIGHUP)
    stopped looking before what was on its way could arrive: all of that is late, however
    little was counted as held (a message in a socket or a node's emit is held nowhere
    sampled); only holes deeper than the run's reordering are lost."""
    publishing = publisher if publisher is not None else cast(PublisherResult, {})
    published = publishing.get("published", {})
    all_hops = HopSet()
    group_hops: dict[str, HopSet] = {}
    self_lag = Latency()
    members: dict[str, int] = {}
    delivered: dict[str, int] = {}
    duplicated: dict[str, int] = {}
    live: dict[str, int] = {}
    reached: dict[str, int] = {}
    near_top: dict[str, int] = {}
    for swarm in swarms:
        self_lag.merge(Latency.from_json(swarm["self_lag"]))
        for group, tally in swarm.get("groups", {}).items():
            members[group] = members.get(group, 0) + tally["members"]
            delivered[group] = delivered.get(group, 0) + tally["delivered"]
            duplicated[group] = duplicated.get(group, 0) + tally["duplicated"]
            live[group] = live.get(group, 0) + tally.get("live", 0)
            reached[group] = reached.get(group, 0) + tally.get("reached", 0)
            near_top[group] = near_top.get(group, 0) + tally.get("gaps_near_top", 0)
        for group, raw in swarm.get("hops", {}).items():
            hops = HopSet.from_json(raw)
            group_hops.setdefault(group, HopSet()).merge(hops)
    for node in nodes:
        for group, raw in node.get("fanout", {}).items():
            group_hops.setdefault(group, HopSet()).merge(HopSet.from_json(raw))
    for hops in group_hops.values():
        all_hops.merge(hops)
    if publishing.get("silent"):
        # its counts are from its last report, read against the schedule: a group may have
        # had one more sent than it says, and what arrived proves it (else: 50 "lost" in
        # one group, 50 beyond the expected in another, of a publisher killed mid-run)
        published = {g: max(published.get(g, 0), -(-delivered.get(g, 0) // members[g])
                            if members.get(g) else 0) for g in set(published) | set(members)}
    order = sorted(set(published) | set(members), key=_group_order)
    expected = {group: published.get(group, 0) * members.get(group, 0) for group in order}
    missing = {group: max(0, expected[group] - delivered.get(group, 0)) for group in order}
    # missed past a live member's highest seq (or near it): perhaps only late
    behind = {group: min(missing[group],
                         max(0, live.get(group, 0) * published.get(group, 0) - reached.get(group, 0))
                         + near_top.get(group, 0)) for group in order}
    in_hand = sum(n.get("in_hand_at_end", 0) for n in nodes)
    late = behind if cut_short else _still_on_the_way(members, behind,
                                                      broker_ready_at_end + in_hand)
    groups = {group: GroupFigures(
        members.get(group, 0),
        Counts(published=published.get(group, 0), expected_deliveries=expected[group],
               delivered=delivered.get(group, 0), lost=missing[group] - late.get(group, 0),
               not_delivered=late.get(group, 0), duplicated=duplicated.get(group, 0)),
        {hop: HopFigures.from_json(lat.summary())
         for hop, lat in group_hops.get(group, HopSet()).items()}) for group in order}
    bounds = [f"swarm{i + 1} gave no result: its members' deliveries "
              f"({sum(t['delivered'] for t in s.get('groups', {}).values())}) are from its last "
              "progress report, a lower bound, and its hop figures are missing"
              for i, s in enumerate(swarms) if s.get("silent")]
    if publishing.get("silent"):
        bounds.append("the publisher gave no result: what it published is from its last "
                      "progress report and what arrived, a lower bound")
    publisher_doc = {k: v for k, v in publishing.items()
                     if k not in ("schedule_lag", "loop_lag", "timeline")}
    if publisher and "schedule_lag" in publisher:
        publisher_doc["schedule_lag_ms"] = Latency.from_json(publisher["schedule_lag"]).summary()
    return Merged(
        counts=Counts.total(g.counts for g in groups.values()),
        held_at_end=HeldAtEnd(broker_ready_at_end, in_hand), bounds=tuple(bounds),
        lost_at_most=any(s.get("silent") for s in swarms),
        hops={hop: HopFigures.from_json(all_hops[hop].summary()) for hop in RUN_HOPS},
        self_lag=LoopLag.from_json(self_lag.lag_summary()), groups=groups,
        hdr={hop: all_hops[hop].hist.encode().decode() for hop in RUN_HOPS},
        untraced=sum(s.get("untraced", 0) for s in swarms) + sum(n.get("untraced", 0) for n in nodes),
        misrouted=sum(s.get("misrouted", 0) for s in swarms),
        publisher=PublisherFigures.from_json(publisher_doc))


def _still_on_the_way(members: dict[str, int], behind: dict[str, int], held: int
                      ) -> dict[str, int]:
    """Of what members missed past their highest seq, how much per group moves from `lost`
    to `not_delivered`, as far as the messages held at the end can carry: each one reaches
    at most its group's members, so more than `held` x the largest group is lost whatever
    its seqs say."""
    if not held:
        return {}  # nothing held anywhere: what did not arrive never will
    room = held * max(members.values(), default=0)
    wanted = sum(behind.values())
    return {group: count if wanted <= room else count * room // wanted
            for group, count in behind.items()}


def swarm_figures(swarms: list[SwarmResult]) -> SwarmFigures:
    """The run's swarm processes together, from their result events."""
    return SwarmFigures(
        clients=sum(s.get("planned", 0) for s in swarms),
        joined=sum(s.get("joined", 0) for s in swarms),
        failed=sum(s.get("failed", 0) for s in swarms),
        disconnects=sum(s.get("disconnects", 0) for s in swarms),
        reconnects=sum(s.get("reconnects", 0) for s in swarms),
        t_recv_source={source: sum(s.get("t_recv_source", {}).get(source, 0) for s in swarms)
                       for source in STAMP_SOURCES},
        rss_bytes=sum(s.get("rss_bytes", 0) for s in swarms), processes=len(swarms))


def churn_figures(load: SwarmResult) -> ChurnFigures:
    """The load process's members (--inject churn, client-stall), from its result event."""
    rejoin = Latency.from_json(load["rejoin"]) if load.get("rejoin") else Latency()
    churned = load.get("churned", 0)
    return ChurnFigures(
        members=load.get("planned", 0), joined=load.get("joined", 0), left=churned,
        dropped=max(0, load.get("disconnects", 0) - churned),
        rejoined=load.get("reconnects", 0), rejoin=HopFigures(**rejoin.summary()),
        stalled_ms=round(float(load.get("stalled_ms", 0.0)), 1))


def _group_order(group: str) -> tuple[Any, ...]:
    return (0, int(group), "") if group.isdigit() else (1, 0, group)


def node_figures(node: NodeResult) -> NodeFigures:
    """A node's figures for the result, from its result event."""
    loop_cpu = node.get("loop_cpu") or {}
    return NodeFigures(
        node=node["node"], handled=node["handled"], untraced=node["untraced"],
        filtered=node["filtered"], unacked_max=node["unacked_max"], prefetch=node["prefetch"],
        busy_ratio=node["busy_ratio"],
        loop_lag_ms=LoopLag.from_json(Latency.from_json(node["loop_lag"]).lag_summary()),
        stalls=node.get("stalls", 0), in_hand_at_end=node.get("in_hand_at_end", 0),
        gc=node.get("gc", {}), loop_worst=node.get("loop_worst", {}),
        loop_cpu=LoopCpu.from_json(loop_cpu) if loop_cpu else None,
        profile=node.get("profile", {"samples": 0}),
        mq_split={part: lat.summary() for part, lat in HopSet.from_json(node["mq_split"]).items()}
        if node.get("mq_split") else None,
        connections=ConnectionFigures.from_json(node["connections"])
        if node.get("connections") else None,
        heartbeats=HeartbeatFigures.from_json(node["heartbeats"])
        if node.get("heartbeats") else None)

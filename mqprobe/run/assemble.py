"""One run's result, built from what its pieces gave: their figures merged, their timelines
on our clock, the CPU each used, the attribution and the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NotRequired, TypedDict

from mqprobe.broker.sampler import QueueSampler
from mqprobe.broker.topology import Topology
from mqprobe.clocks import ClockOffset, RunClocks
from mqprobe.figures import (
    BrokerEvidence,
    CpuUse,
    GroupResult,
    LinkFigures,
    NodeSeries,
    RunTimeline,
    TimelineEvent,
)
from mqprobe.model import Layout
from mqprobe.protocol import NodeResult, PublisherResult, SwarmResult
from mqprobe.result import RunRecord
from mqprobe.run.workload import Workload
from mqprobe.verdict.analysis import Failure, RunFacts, judge
from mqprobe.verdict.attribution import paused_together
from mqprobe.verdict.conclusion import cost_of
from mqprobe.verdict.connections import outlived, ping_episodes
from mqprobe.verdict.merge import churn_figures, merge_run, node_figures, swarm_figures
from mqprobe.verdict.run_timeline import (
    cpu_json,
    cpu_series,
    deliveries,
    e2e_over_time,
    queue_ready_over_time,
    timeline_events,
)
from mqprobe.watch.footprint import CpuSampler


class PieceResults(TypedDict):
    """What a run's pieces gave, as their result events carried it."""

    nodes: list[NodeResult]
    swarms: list[SwarmResult]
    publisher: PublisherResult | None
    load: NotRequired[SwarmResult | None]  # --inject churn, client-stall: members reported apart


def assemble(topology: Topology, layout: Layout, workload: Workload, results: PieceResults,
             sampler: QueueSampler | None, clocks: dict[str, ClockOffset],
             failure: Failure | None, cpu_sampler: CpuSampler | None = None) -> RunRecord:
    """One run's result: the pieces' figures merged, their timelines on our clock, the
    attribution and the verdict, each part built once."""
    publisher, swarms, nodes = results["publisher"], results["swarms"], results["nodes"]
    merged = merge_run(publisher, swarms, nodes, sampler.ready_at_end() if sampler else 0,
                       cut_short=failure is not None and failure.interrupted)
    swarm = swarm_figures(swarms)
    load = results.get("load")
    churning = churn_figures(load) if load else None
    figures = tuple(node_figures(n) for n in nodes)
    broker = sampler.summary() if sampler else BrokerEvidence.not_measured()
    run_clocks = RunClocks.of(clocks) if clocks else None
    samples = [s for swarm in swarms for s in swarm.get("samples", [])]
    # every piece's stamps onto our clock: a piece whose clock is ahead is moved back
    shift = {piece: -offset.offset_ns for piece, offset in clocks.items()}
    broker_cpu = cpu_sampler.broker_cpu() if cpu_sampler else None
    stopped = broker_cpu.stopped_events() if broker_cpu else []
    events = paused_together(timeline_events(publisher, swarms, nodes,
                                             [*(sampler.timeline() if sampler else []), *stopped],
                                             shift))
    t0 = (publisher or {}).get("t0_ns", 0) + shift.get("publisher", 0) if publisher else 0
    t0 = t0 or (sampler.started_ns if sampler else 0)
    pieces: list[Mapping[str, Any]] = [publisher or {}, *swarms, *nodes]
    dropped = sum((r.get("timeline") or {}).get("dropped", 0) for r in pieces)
    messages = deliveries(swarms, nodes, shift)
    cpu = cpu_series(nodes, shift)
    timeline = RunTimeline(
        t0, tuple(TimelineEvent.of(event, t0) for event in events), dropped,
        {piece: round(offset.uncertainty_ns / 1e6, 3) for piece, offset in clocks.items()}
        if clocks else None, e2e_over_time(messages, t0),
        queue_ready_over_time(sampler.series, sampler.started_ns, t0) if sampler else None,
        cpu_json(cpu, t0))
    links = link_rows(publisher, nodes, sampler, shift)
    timeline = replace(timeline, links=links_json(links, t0) if links else None)
    cpu_use = (cpu_sampler.summary(t0) if cpu_sampler else
               CpuUse(False, "not sampled (the run ended before measuring)"))
    facts = RunFacts(
        counts=merged.counts, hops=merged.hops, self_lag=merged.self_lag, swarm=swarm,
        publisher=merged.publisher, nodes=figures, broker=broker, cpu_use=cpu_use,
        groups=merged.groups, bounds=merged.bounds, lost_at_most=merged.lost_at_most,
        held_at_end=merged.held_at_end,
        e2e_rows=timeline.e2e.rows if timeline.e2e else [], events=events, t0_ns=t0,
        failure=failure, cpu=cpu,
        used=cpu_sampler.used_rows() if cpu_sampler else {}, broker_cpu=broker_cpu,
        links=links, churning=churning)
    judged = judge(facts, messages, workload.budget_ms)
    evidence = list(judged.verdict.evidence)
    if run_clocks and run_clocks.apart:
        evidence.append("hosts' clocks differ (measured over the broker): " + ", ".join(
            f"{hop} ±{bar:g} ms" for hop, bar in run_clocks.hop_uncertainty_ms.items() if bar))
    if failure and not any("run failed" in line for line in evidence):
        evidence.insert(0, f"run failed: {failure.message}")
    clients = max((n.connections.rows[-1][2] for n in figures
                   if n.connections and n.connections.rows), default=0)
    if timeline.e2e and (hint := ping_episodes(timeline.e2e.rows, workload.budget_ms,
                                                workload.ping_interval_s, clients)):
        evidence.append(hint)
    for index, swarm_result in enumerate(swarms):  # a swarm gone: what the nodes still held
        if swarm_result.get("silent"):
            evidence += outlived(figures, f"swarm{index + 1}",
                                 swarm_result.get("silent_since_ns", 0),
                                 (workload.ping_interval_s, workload.ping_timeout_s),
                                 workload.tcp_keepalive_s, others=len(swarms) > 1)
    return RunRecord(
        topology=topology.name, layout=layout, knobs=topology.describe_knobs(), **merged.parts(),
        groups={group_id: GroupResult(group, judged.groups.get(group_id))
                for group_id, group in merged.groups.items()},
        verdict=replace(judged.verdict, evidence=evidence), swarm=swarm, nodes=figures,
        broker=broker, clocks=run_clocks,
        links=tuple(f for name, rows in links.items() if (f := LinkFigures.of(name, rows))),
        mq_legs=judged.mq_legs,
        samples=tuple(tuple(s) for s in samples) if samples else None, timeline=timeline,
        cpu=cpu_use, cost=cost_of(merged.counts, cpu_use), attribution=judged.attribution,
        attribution_dropped=sum(s.get("messages_dropped", 0) for s in swarms),
        error=failure.message if failure else None, churning=churning)


COMPARE_LINK = "compare"  # the coordinator's own link to the broker: a control beside the pieces'


def link_rows(publisher: PublisherResult | None, nodes: list[NodeResult],
              sampler: QueueSampler | None, shift: dict[str, int]) -> dict[str, list[list[int]]]:
    """Each AMQP link's round trips on our clock (broker.link.LinkWatch rows): the
    publisher's, each node's, and compare's own (the queue sampler's)."""
    pieces: list[tuple[str, list]] = [("publisher", publisher.get("link") or [] if publisher
                                       else [])]
    pieces += [(node["node"], node.get("link") or []) for node in nodes]
    links = {name: [[t + shift.get(name, 0), rtt, tcp] for t, rtt, tcp in rows]
             for name, rows in pieces if rows}
    if sampler and sampler.link:
        links[COMPARE_LINK] = [list(row) for row in sampler.link]
    return links


def links_json(links: dict[str, list[list[int]]], t0_ns: int) -> NodeSeries:
    """The links' round trips for the result and the timeline picture, in ms since t0 (the
    kernel's round trip null where it was not read)."""
    series: dict[str, list[list[float | None]]] = {
        name: [[round((t - t0_ns) / 1e6, 1), round(rtt / 1e6, 3),
                round(tcp / 1e6, 3) if tcp >= 0 else None] for t, rtt, tcp in rows]
        for name, rows in links.items()}
    return NodeSeries(("t_ms", "rtt_ms", "tcp_rtt_ms"), series)  # type: ignore[arg-type]

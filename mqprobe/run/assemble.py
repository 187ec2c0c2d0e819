"""One run's result, built from what its pieces gave: their figures merged, their timelines
on our clock, the CPU each used, the attribution and the verdict."""

from __future__ import annotations

from typing import TypedDict

from mqprobe.broker.sampler import QueueSampler
from mqprobe.broker.topology import Topology
from mqprobe.clocks import ClockOffset, RunClocks
from mqprobe.figures import BrokerEvidence, CpuUse
from mqprobe.model import HopName, RunResult
from mqprobe.protocol import NodeResult, PublisherResult, SwarmResult
from mqprobe.run.workload import Workload
from mqprobe.verdict.analysis import (
    Failure,
    RunFacts,
    cpu_json,
    cpu_series,
    deliveries,
    e2e_over_time,
    judge,
    merge_run,
    node_figures,
    queue_ready_over_time,
    swarm_figures,
    timeline_events,
    timeline_json,
)
from mqprobe.verdict.attribution import paused_together
from mqprobe.verdict.conclusion import cost_of
from mqprobe.watch.footprint import CpuSampler


class PieceResults(TypedDict):
    """What a run's pieces gave, as their result events carried it."""

    nodes: list[NodeResult]
    swarms: list[SwarmResult]
    publisher: PublisherResult | None


def assemble(topology: Topology, layout: str, workload: Workload, results: PieceResults,
             sampler: QueueSampler | None, clocks: dict[str, ClockOffset],
             failure: Failure | None, cpu_sampler: CpuSampler | None = None) -> RunResult:
    """One run's result: the pieces' figures merged, their timelines on our clock, the
    attribution and the verdict."""
    publisher, swarms, nodes = results["publisher"], results["swarms"], results["nodes"]
    run: RunResult = {"topology": topology.name, "layout": layout,
                      "knobs": topology.describe_knobs(),
                      **merge_run(publisher, swarms, nodes,
                                  sampler.ready_at_end() if sampler else 0)}
    swarm = swarm_figures(swarms)
    run["swarm"] = swarm.to_json()
    figures = tuple(node_figures(n) for n in nodes)
    run["nodes"] = [f.to_json() for f in figures]
    broker = sampler.summary() if sampler else BrokerEvidence.not_measured()
    run["evidence"] = {"broker": broker.to_json()}
    run_clocks = RunClocks.of(clocks) if clocks else RunClocks()
    if clocks:
        run["clocks"] = run_clocks.to_json()
    samples = [s for swarm in swarms for s in swarm.get("samples", [])]
    if samples:
        run["samples"] = samples
    # every piece's stamps onto our clock: a piece whose clock is ahead is moved back
    shift = {piece: -offset.offset_ns for piece, offset in clocks.items()}
    events = paused_together(timeline_events(publisher, swarms, nodes,
                                             sampler.timeline() if sampler else [], shift))
    t0 = (publisher or {}).get("t0_ns", 0) + shift.get("publisher", 0) if publisher else 0
    t0 = t0 or (sampler.started_ns if sampler else 0)
    dropped = sum((r.get("timeline") or {}).get("dropped", 0)
                  for r in [publisher or {}, *swarms, *nodes])
    run["timeline"] = timeline_json(events, t0, dropped)
    if clocks:
        run["timeline"]["clock_uncertainty_ms"] = {
            piece: round(offset.uncertainty_ns / 1e6, 3) for piece, offset in clocks.items()}
    messages = deliveries(swarms, nodes, shift)
    run["timeline"][HopName.E2E] = e2e_over_time(messages, t0)
    if sampler:
        run["timeline"]["queue_ready"] = queue_ready_over_time(sampler.series,
                                                               sampler.started_ns, t0)
    cpu = cpu_series(nodes, shift)
    run["timeline"]["loop_cpu"] = cpu_json(cpu, t0)
    cpu_use = (cpu_sampler.summary(t0) if cpu_sampler else
               CpuUse(False, "not sampled (the run ended before measuring)"))
    run["cpu"] = cpu_use.to_json()
    run["cost"] = cost_of(run, cpu_use).to_json()
    facts = RunFacts(run, events, t0, failure, cpu, cpu_sampler,
                     broker=broker, nodes=figures, cpu_use=cpu_use, swarm=swarm)
    judged = judge(run, facts, messages, workload.budget_ms)
    evidence = judged.verdict.evidence
    if run_clocks.apart:
        evidence.append("hosts' clocks differ (measured over the broker): " + ", ".join(
            f"{hop} ±{bar:g} ms" for hop, bar in run_clocks.hop_uncertainty_ms.items() if bar))
    if failure and not any("run failed" in line for line in evidence):
        evidence.insert(0, f"run failed: {failure.message}")
    run["attribution"] = judged.attribution.to_json() if judged.attribution else None
    run["verdict"] = judged.verdict.to_json()
    for group_id, group_verdict in judged.groups.items():
        run["groups"][group_id]["verdict"] = group_verdict.to_json()
    run["attribution_dropped"] = sum(s.get("messages_dropped", 0) for s in swarms)
    run["error"] = failure.message if failure else None
    return run


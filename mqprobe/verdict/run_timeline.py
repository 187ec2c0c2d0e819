"""A run's timeline and deliveries on the coordinator's clock: every piece's recorded
intervals shifted by its clock offset, each message's deliveries for the attribution, and
the series the pictures draw (e2e over time, queue depth, each node's loop CPU)."""

from __future__ import annotations

from mqprobe.figures import NodeSeries, Series
from mqprobe.protocol import NodeResult, PublisherResult, SwarmResult
from mqprobe.timeline import TimedEvent
from mqprobe.verdict.attribution import (
    MessageDeliveries,
)


def cpu_series(nodes: list[NodeResult], shift_ns: dict[str, int]) -> dict[str, list[list[int]]]:
    """Each node's loop CPU windows (loop.CpuWindows rows), moved onto our clock."""
    out = {}
    for node in nodes:
        rows = (node.get("loop_cpu") or {}).get("rows") or []
        shift = shift_ns.get(node["node"], 0)
        out[node["node"]] = [[row[0] + shift, *row[1:5]] for row in rows]
    return out


def cpu_json(series: dict[str, list[list[int]]], t0_ns: int) -> NodeSeries:
    """The nodes' loop CPU windows for the result: ms since the first publish."""
    return NodeSeries(("t_ms", "wall_ms", "on_cpu_ms", "waiting_ms", "throttled_ms"),
                      {node: [[round((r[0] - t0_ns) / 1e6, 1), *(round(v / 1e6, 2) for v in r[1:5])]
                              for r in rows] for node, rows in series.items()})




def timeline_events(publisher: PublisherResult | None, swarms: list[SwarmResult],
                    nodes: list[NodeResult],
                    broker: list[TimedEvent], shift_ns: dict[str, int]) -> list[TimedEvent]:
    """Every piece's intervals, named (publisher, n1.., swarm1..) and moved onto our clock
    (shift_ns: what to add to each piece's stamps; absent: the same clock)."""
    named: list[tuple[str, PublisherResult | NodeResult | SwarmResult]] = (
        [("publisher", publisher)] if publisher else [])
    named += [(node["node"], node) for node in nodes]
    named += [(f"swarm{i + 1}", swarm) for i, swarm in enumerate(swarms)]
    events = list(broker)
    for piece, result in named:
        shift = shift_ns.get(piece, 0)
        for raw in (result.get("timeline") or {}).get("events", []):
            events.append(TimedEvent.from_wire(piece, raw).shifted(shift))
    return sorted(events, key=lambda e: e.start_ns)


def deliveries(swarms: list[SwarmResult], nodes: list[NodeResult],
               shift_ns: dict[str, int]) -> list[MessageDeliveries]:
    """Each swarm's per-message receipts, with the node's own wait and fan-out for it."""
    emits: dict[tuple[str, str, int], tuple[int, int]] = {}
    for node in nodes:
        for group, rows in node.get("emits", {}).items():
            for seq, wait_ns, fanout_ns in rows:
                emits[(node["node"], group, seq)] = (wait_ns, fanout_ns)
    out = []
    for i, swarm in enumerate(swarms):
        name = f"swarm{i + 1}"
        shift = shift_ns.get(name, 0)
        for group, seq, node, t_pub, t_deq, t_emit, receipts in swarm.get("messages", []):
            wait_ns, fanout_ns = emits.get((node, str(group), seq), (0, 0))
            out.append(MessageDeliveries(
                str(group), seq, node, name, t_pub + shift, t_deq + shift, t_emit + shift,
                [(d, n) for d, n in receipts], wait_ns, fanout_ns))
    return out


MAX_SERIES_POINTS = 600  # buckets of the e2e-over-time series: a picture's worth
E2E_COLUMNS = ("t_ms", "count", "p50_ms", "p99_ms", "max_ms")


def e2e_over_time(messages: list[MessageDeliveries], t0_ns: int) -> Series:
    """Each delivery's e2e by when its message was published, in buckets of 100 ms or
    more (at most MAX_SERIES_POINTS): count, p50, p99 and max per bucket, so a stall and
    the messages it delayed can be drawn on one time axis with the timeline's intervals."""
    if not messages:
        return Series(E2E_COLUMNS, [], 100)
    span_ms = max(0, max(m.t_pub for m in messages) - t0_ns) / 1e6
    bucket_ms = 100
    while span_ms / bucket_ms >= MAX_SERIES_POINTS:
        bucket_ms *= 2
    buckets: dict[int, list[tuple[int, int]]] = {}
    for message in messages:
        index = max(0, int((message.t_pub - t0_ns) / 1e6 // bucket_ms))
        server_side = message.t_emit - message.t_pub
        buckets.setdefault(index, []).extend(
            (server_side + after_emit, count) for after_emit, count in message.receipts)
    rows = []
    for index in sorted(buckets):
        values = sorted(buckets[index])
        total = sum(count for _, count in values)
        if not total:
            continue
        rows.append([index * bucket_ms, total, _weighted_ms(values, total, 0.50),
                     _weighted_ms(values, total, 0.99), round(values[-1][0] / 1e6, 3)])
    return Series(E2E_COLUMNS, rows, bucket_ms)


def _weighted_ms(values: list[tuple[int, int]], total: int, quantile: float) -> float:
    """The value (ns, sorted, each with its count) below which `quantile` of them lie, ms."""
    rank, seen = quantile * total, 0
    for value, count in values:
        seen += count
        if seen >= rank:
            return round(value / 1e6, 3)
    return round(values[-1][0] / 1e6, 3)


def queue_ready_over_time(series: dict[str, list[list[float]]], sampled_from_ns: int,
                          t0_ns: int) -> Series:
    """The broker's ready messages summed over the run's queues at each sample, on the
    timeline's axis (ms since the first publish)."""
    totals: dict[float, int] = {}
    for points in series.values():
        for t_s, ready, _consumers in points:
            totals[t_s] = totals.get(t_s, 0) + int(ready)
    shift_ms = (sampled_from_ns - t0_ns) / 1e6 if sampled_from_ns and t0_ns else 0.0
    return Series(("t_ms", "ready"), [[round(t_s * 1000 + shift_ms, 1), ready]
                                      for t_s, ready in sorted(totals.items())])

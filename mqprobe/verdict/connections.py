"""Connections that outlived their clients: what each node still held after a swarm, or its
host, went silent, and what freed them (the socket.io ping timeout, the kernel, nothing
within the run), for the run's evidence. The seed's servers held 14,000 ESTABLISHED
connections of a load host that had died, and nobody measured how long or why. Also what
keeping connections alive cost the nodes' loops (their heartbeats), and what connections
coming and going did."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from mqprobe.figures import NodeFigures
from mqprobe.model import Cause
from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.watch.connections import SILENT

# engine.io's reasons for a disconnect, said for an operator
FREED_BY = {"ping timeout": "by the socket.io ping timeout",
            "transport error": "by the kernel (a transport error: TCP keepalive, or data "
                               "never acknowledged)",
            "transport close (last ping unanswered)": "by the socket.io ping timeout (their "
                                                      "websocket's read timed out)",
            "transport close": "by their connection closing (the client closed it, or the kernel "
                               "gave up on it: TCP keepalive, or data never acknowledged)",
            "client disconnect": "by their clients",
            "server disconnect": "by the server"}


def outlived(nodes: Sequence[NodeFigures], who: str, silent_since_ns: int,
             ping_s: tuple[float, float], keepalive_s: float, others: bool = False) -> list[str]:
    """One line per node that watched its connections: how many it held when `who` was last
    heard, how many ended after, how long after and why, and how many it still held when
    the run ended. ping_s: the nodes' (interval, timeout); keepalive_s: 0 for none; others:
    other swarms' clients were connected too (a node's counts are all its clients')."""
    if not silent_since_ns:
        return []
    since = time.strftime("%H:%M:%S", time.localtime(silent_since_ns / 1e9))
    knobs = (f"ping every {ping_s[0]:g} s, timeout {ping_s[1]:g} s; "
             + (f"TCP keepalive after {keepalive_s:g} s" if keepalive_s else "no TCP keepalive"))
    lines = []
    for node in nodes:
        watched = node.connections
        if watched is None or not watched.rows:
            continue
        before = [row for row in watched.rows if row[0] <= silent_since_ns] or \
            [watched.rows[0]]
        _t, _kernel, held = before[-1]
        # the kernel's table is read every few seconds: its latest count by then, and when
        read = [(t, n) for t, n, _held in before if n is not None]
        established = f" ({read[-1][1]} ESTABLISHED" + (
            f" {(silent_since_ns - read[-1][0]) / 1e9:.0f} s before)"
            if silent_since_ns - read[-1][0] >= 1_500_000_000 else ")") if read else ""
        ended: Counter[str] = Counter()
        first = last = 0
        for t_ns, reason, count in watched.ended:
            if t_ns + 1_000_000_000 <= silent_since_ns:  # the whole second before it
                continue
            ended[reason] += count
            first, last = (first or t_ns), t_ns
        t_end, established_end, held_end = watched.rows[-1]
        text = f"{who} was last heard at {since}; {node.node} then held {held} connections" \
            + established + (" (the other swarms' among them)" if others else "")
        if ended:
            after = f"{max(0.0, (first - silent_since_ns) / 1e9):.0f}"
            if last != first:
                after += f"-{(last - silent_since_ns) / 1e9 + 1:.0f}"
            text += f"; {sum(ended.values())} ended {after} s later, " + ", ".join(
                f"{n} {FREED_BY.get(reason, 'for ' + repr(reason))}" for reason, n in
                ended.most_common())
        if held_end:
            text += (f"; it still held {held_end}"
                     + (f" ({established_end} ESTABLISHED)" if established_end is not None
                        else "")
                     + f" {(t_end - silent_since_ns) / 1e9:.0f} s later, as the run ended"
                     + ("" if ended else ": nothing freed them within the run"))
        lines.append(f"{text} ({knobs})")
    return lines


def ping_episodes(e2e_rows: Sequence[Sequence[float]], budget_ms: float, ping_s: float,
                  clients_per_node: int) -> str:
    """When the run's worst e2e came in episodes as far apart as the nodes' socket.io ping
    interval, say so, and how to tell: engine.io pings each client an interval after its
    last answer, so clients that joined together are pinged together (a wave of writes and
    garbage on the node: BENCHMARKS, 27,000 quiet connections). e2e_rows: [t_ms, count,
    p50, p99, max] by publish time (run_timeline.e2e_over_time). A hint beside the verdict,
    never a share of it: the episodes' time is charged by what was measured in them."""
    if ping_s <= 0 or not e2e_rows:
        return ""
    worst = max(row[3] for row in e2e_rows)
    if worst <= budget_ms:
        return ""
    threshold = max(budget_ms, worst / 2)
    starts: list[float] = []
    last = 0.0
    for row in e2e_rows:
        t_ms, p99 = row[0], row[3]
        if p99 < threshold:
            continue
        if not starts or t_ms - last > ping_s * 1000 / 4:
            starts.append(t_ms)
        last = t_ms
    gaps = [(b - a) / 1000 for a, b in zip(starts, starts[1:], strict=False)]
    if not gaps or any(abs(gap - ping_s) > 0.2 * ping_s for gap in gaps):
        return ""
    return (f"the worst e2e came in {len(starts)} episodes, "
            f"{', '.join(f'{gap:.0f}' for gap in gaps)} s apart (at "
            f"{', '.join(f'{t / 1000:.0f}' for t in starts)} s), about the nodes' socket.io "
            f"ping interval ({ping_s:g} s) with up to {clients_per_node:,} clients a node: "
            "clients that joined together are pinged together; if the episodes move with "
            "--ping-interval, the pings' wave is what began them")


def connection_cause(node: NodeFigures) -> Cause:
    """What a node's loop time on connections coming and going is charged to: clients that
    stopped answering its pings (clients-unresponsive: the server timed them out, and they
    came back, a storm that began on the client side) when half or more of the connections
    that ended while measuring ended so; else churn, the server's own load
    (connection-churn). From the reasons the node counted, not from what was injected."""
    ended = node.connections.ended_by_reason() if node.connections else {}
    total = sum(ended.values())
    if total and 2 * sum(ended.get(reason, 0) for reason in SILENT) >= total:
        return Cause.CLIENTS_UNRESPONSIVE
    return Cause.CONNECTION_CHURN


def churn_lines(nodes: Sequence[NodeFigures], events: Sequence[TimedEvent]) -> list[str]:
    """Per node that served connections while measuring: its loop's time on them (its
    profiler's samples), how many began and ended, and why they ended."""
    spent: Counter[str] = Counter()
    for event in events:
        if event.kind == EventKind.CONNECTION_WORK:
            spent[event.piece] += event.end_ns - event.start_ns
    lines = []
    for node in nodes:
        watched = node.connections
        ended = watched.ended_by_reason() if watched else {}
        began = sum(n for _t, n in watched.began) if watched else 0
        if not spent[node.node] and not ended and not began:
            continue
        why = ", ".join(f"{reason} {n}" for reason, n in
                        sorted(ended.items(), key=lambda item: -item[1]))
        unresponsive = connection_cause(node) == Cause.CLIENTS_UNRESPONSIVE
        lines.append(
            f"{node.node}'s loop spent {spent[node.node] / 1e6:.0f} ms on connections coming "
            f"and going (handshakes, joins, disconnects; its profiler's samples) while "
            f"measuring: {began} connected, {sum(ended.values())} ended"
            + (f" ({why})" if why else "")
            + ("; most ended with their clients not answering its pings, and their coming "
               "back is charged to them (clients-unresponsive)" if unresponsive
               else ""))
    return lines


HEARTBEAT_SHARE = 0.05  # of a node's profiled loop time: heartbeats worth a line unasked


def heartbeat_lines(nodes: Sequence[NodeFigures], charged: bool) -> list[str]:
    """Per node whose loop spent HEARTBEAT_SHARE of its time or more on socket.io's
    heartbeats (every node that measured them, when the verdict charged them): that time,
    per 1,000 connections a ping interval, and its busiest second beside the median one
    (a wave of pings shows as a peak: the seed's CPU in waves)."""
    return [node.heartbeats.line(node.node) for node in nodes
            if node.heartbeats and node.heartbeats.loop_ms > 0
            and (charged or node.heartbeats.loop_ms
                 >= HEARTBEAT_SHARE * node.heartbeats.profiled_s * 1000)]

"""From what the pieces recorded to one run's figures, and a verdict naming the culprit.

Lost and duplicate deliveries are counted against what the publisher actually sent and
who actually joined. The verdict names only evidence that was measured in this run.
"""

from __future__ import annotations

from mqprobe.records import CLIENT_HOPS, HopSet, Latency

# A swarm that wakes up this late cannot timestamp to better than this: its figures are
# not the system's. 20 ms is far above a healthy asyncio loop's lag (well under 1 ms).
CLIENT_LAG_P99_MS = 20.0
BUSY_SATURATED = 0.9
SATURATED_CPU_SHARE = 0.7  # CPU share of a core through a stall above which it computed


def merge_run(publisher: dict | None, swarms: list[dict], nodes: list[dict]) -> dict:
    """The design.md run fields (counts, hops, self-lag) plus per-group and per-node detail."""
    published = (publisher or {}).get("published", {})
    all_hops = HopSet()
    groups: dict[str, dict] = {}
    group_hops: dict[str, HopSet] = {}
    self_lag = Latency()
    members: dict[str, int] = {}
    delivered: dict[str, int] = {}
    duplicated: dict[str, int] = {}
    for swarm in swarms:
        self_lag.merge(Latency.from_json(swarm["self_lag"]))
        for group, tally in swarm.get("groups", {}).items():
            members[group] = members.get(group, 0) + tally["members"]
            delivered[group] = delivered.get(group, 0) + tally["delivered"]
            duplicated[group] = duplicated.get(group, 0) + tally["duplicated"]
        for group, raw in swarm.get("hops", {}).items():
            hops = HopSet.from_json(raw)
            group_hops.setdefault(group, HopSet()).merge(hops)
    for node in nodes:
        for group, raw in node.get("fanout", {}).items():
            group_hops.setdefault(group, HopSet()).merge(HopSet.from_json(raw))
    for hops in group_hops.values():
        all_hops.merge(hops)
    for group in sorted(set(published) | set(members), key=_group_order):
        expected = published.get(group, 0) * members.get(group, 0)
        got = delivered.get(group, 0)
        groups[group] = {
            "members": members.get(group, 0), "published": published.get(group, 0),
            "expected_deliveries": expected, "delivered": got, "lost": max(0, expected - got),
            "duplicated": duplicated.get(group, 0),
            "hops": {hop: lat.summary() for hop, lat in group_hops.get(group, HopSet()).items()},
        }
    expected_total = sum(g["expected_deliveries"] for g in groups.values())
    delivered_total = sum(g["delivered"] for g in groups.values())
    return {
        "published": sum(published.values()),
        "expected_deliveries": expected_total,
        "delivered": delivered_total,
        "lost": sum(g["lost"] for g in groups.values()),
        "duplicated": sum(g["duplicated"] for g in groups.values()),
        "hops": {hop: all_hops[hop].summary() for hop in (*CLIENT_HOPS, "fanout")},
        "self_lag_ms": self_lag.lag_summary(),
        "groups": groups,
        "hdr": {hop: all_hops[hop].hist.encode().decode() for hop in (*CLIENT_HOPS, "fanout")},
        "untraced": sum(s.get("untraced", 0) for s in swarms) + sum(n.get("untraced", 0) for n in nodes),
        "misrouted": sum(s.get("misrouted", 0) for s in swarms),
        "swarm": {
            "clients": sum(s.get("planned", 0) for s in swarms),
            "joined": sum(s.get("joined", 0) for s in swarms),
            "failed": sum(s.get("failed", 0) for s in swarms),
            "disconnects": sum(s.get("disconnects", 0) for s in swarms),
            "rss_bytes": sum(s.get("rss_bytes", 0) for s in swarms),
            "processes": len(swarms),
        },
        "publisher": {k: v for k, v in (publisher or {}).items() if k != "schedule_lag"}
        | ({"schedule_lag_ms": Latency.from_json(publisher["schedule_lag"]).summary()}
           if publisher and "schedule_lag" in publisher else {}),
        "nodes": [_node_summary(n) for n in nodes],
    }


def _group_order(group: str) -> tuple:
    return (0, int(group), "") if group.isdigit() else (1, 0, group)


def _node_summary(node: dict) -> dict:
    return {
        "node": node["node"], "handled": node["handled"], "untraced": node["untraced"],
        "filtered": node["filtered"], "stalls": node.get("stalls", 0),
        "unacked_max": node["unacked_max"],
        "prefetch": node["prefetch"], "busy_ratio": node["busy_ratio"],
        "loop_lag_ms": Latency.from_json(node["loop_lag"]).lag_summary(),
        "loop_worst": node.get("loop_worst", {}),
    }


def verdict(run: dict, budget_ms: float) -> dict:
    """Which hop the tail belongs to, and why, from this run's measured evidence."""
    hops, lag, swarm = run["hops"], run["self_lag_ms"], run["swarm"]
    e2e = hops["e2e"]
    evidence: list[str] = []
    if run["lost"]:
        evidence.append(f"lost {run['lost']} of {run['expected_deliveries']} deliveries")
    if run["duplicated"]:
        evidence.append(f"{run['duplicated']} duplicate deliveries")
    if lag["p99"] > CLIENT_LAG_P99_MS or swarm["failed"] or swarm["disconnects"]:
        evidence.insert(0, f"swarm loop lag p99 {lag['p99']} ms (limit {CLIENT_LAG_P99_MS} ms), "
                           f"{swarm['failed']} failed connects, {swarm['disconnects']} disconnects")
        return _said("client", "swarm-saturated: the measuring swarm itself was the bottleneck, "
                     "these figures are not to be trusted", evidence)
    if e2e["count"] == 0:
        return _said("none", "no delivery was measured", evidence)
    tail = {hop: hops[hop]["p99_ms"] for hop in ("mq", "server", "delivery")}
    evidence.append(f"e2e p99 {e2e['p99_ms']} ms (budget {budget_ms} ms); p99 by hop: "
                    + ", ".join(f"{hop} {value} ms" for hop, value in tail.items()))
    if e2e["p99_ms"] <= budget_ms and not run["lost"]:
        return _said("none", "every hop within budget", evidence)
    nodes = run["nodes"]
    broker = run.get("evidence", {}).get("broker", {})
    stalled = max(nodes, key=lambda n: n["loop_lag_ms"]["max"], default=None)
    if stalled and stalled["loop_lag_ms"]["max"] >= max(budget_ms / 2, e2e["p99_ms"] / 2):
        evidence.append(f"{stalled['node']} event loop could not run for up to "
                        f"{stalled['loop_lag_ms']['max']} ms (loop lag p99 "
                        f"{stalled['loop_lag_ms']['p99']} ms): meanwhile nothing is consumed, "
                        "emitted or acked")
        return _said("server", _stall_cause(stalled.get("loop_worst", {})), evidence)
    dominant = max(tail, key=tail.get)
    busy, busiest = max(((max(n["busy_ratio"].values(), default=0.0), n["node"]) for n in nodes),
                        default=(0.0, "-"))
    full = [n for n in nodes if n["unacked_max"] >= n["prefetch"]]
    fanout = hops["fanout"]["p99_ms"]
    if dominant == "mq":
        if busy >= BUSY_SATURATED or full:
            evidence.append(f"consumer busy ratio {busy:.2f} on {busiest}")
            evidence += [f"{n['node']} unacked reached its prefetch window ({n['prefetch']})"
                         for n in full]
            evidence += _queue_evidence(broker)
            return _said("server", "consumer-saturated: messages waited in the queue because "
                         "a node's consumer could not keep up", evidence)
        evidence.append(f"consumers mostly idle (busy ratio max {busy:.2f}) and prefetch windows "
                        "never full, yet messages waited before reaching them")
        evidence += _queue_evidence(broker)
        return _said("mq", "broker-side: the wait happened in RabbitMQ, not in a busy consumer",
                     evidence)
    if fanout >= tail[dominant] / 2:
        evidence.append(f"the nodes' room emit loop (fanout) p99 {fanout} ms")
        return _said("server", "fanout-bound: emitting to the room takes as long as the tail",
                     evidence)
    if dominant == "server":
        evidence.append(f"consumer busy ratio {busy:.2f} on {busiest}")
        if busy >= BUSY_SATURATED:
            return _said("server", "consumer-saturated: messages waited in the node's own "
                         "backlog because its handler could not keep up", evidence)
        return _said("server", "slow-handler: the node's handler takes long per message",
                     evidence)
    return _said("delivery", "delivery: socket writes, network or client reads", evidence)


def _stall_cause(worst: dict) -> str:
    """Blocked or saturated, from the CPU the node used while its loop could not run."""
    if "cpu_share" not in worst:
        return "server-stall: a node's event loop could not run (blocked or saturated)"
    share = worst["cpu_share"]
    if share >= SATURATED_CPU_SHARE:
        return (f"server-stall: a node's event loop was saturated: it computed ({share:.0%} "
                f"of a core) through its longest stall of {worst['lag_ms']:g} ms")
    return (f"server-stall: a node's event loop was blocked: it used {share:.0%} of a core "
            f"through its longest stall of {worst['lag_ms']:g} ms, so a synchronous call "
            "(sleep, file or network I/O, a lock) held it, not computing")


def _said(culprit: str, cause: str, evidence: list[str]) -> dict:
    return {"culprit": culprit, "cause": cause, "evidence": evidence}


def _queue_evidence(broker: dict) -> list[str]:
    if not broker.get("available"):
        return [broker.get("reason", "queue depth not measured")]
    out = [f"deepest queue {broker['max_ready_queue'] or '-'} held {broker['max_ready']} ready "
           "messages"]
    growth = broker.get("backlog_growth")
    if growth and growth["net_in_per_s"] > 0:
        out.append(f"its backlog grew {growth['net_in_per_s']:g} msg/s faster than it drained "
                   f"(from {growth['from_s']:g} s to {growth['to_s']:g} s of the run)")
    if not broker.get("management_api"):
        out.append("no management API given: alarms and flow control were not checked")
    if broker["alarms"]:
        out.append("broker alarms: " + ", ".join(broker["alarms"]))
    if broker["blocked_connections_max"]:
        out.append(f"{broker['blocked_connections_max']} connections in flow control or blocked")
    return out


def group_verdicts(run: dict, budget_ms: float) -> None:
    """A verdict per group, from that group's hops and counts and the run's node evidence."""
    for group in run["groups"].values():
        view = {**run, **{k: group[k] for k in ("lost", "duplicated", "expected_deliveries")}}
        view["hops"] = {**run["hops"], **group["hops"]}
        group["verdict"] = verdict(view, budget_ms)

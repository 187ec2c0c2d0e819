"""What the attribution costs compare, after a run (no broker: synthetic records).

    .venv/bin/python benchmarks/attribution_cost.py

Message x node records as the swarm ships them (up to 32 receipt buckets each), GC pauses
on the nodes and lag spikes in the swarm, a budget that puts about half of the deliveries
in the tail (the most work: every tail delivery is charged hop by hop).
"""

from __future__ import annotations

import random
import time

from mqprobe.timeline import EventKind, TimedEvent
from mqprobe.verdict.attribution import MessageDeliveries, attribute

T0, MS = 1_700_000_000_000_000_000, 1_000_000


def synthetic(groups: int, seconds: int, nodes: int, members: int):
    rng = random.Random(7)
    messages = []
    for g in range(groups):
        for seq in range(seconds * 10):
            for n in range(nodes):
                t = T0 + (seq * 100 + g) * MS
                buckets = min(32, members // nodes)
                receipts = [(rng.randint(1, 9) * MS, members // nodes // buckets)
                            for _ in range(buckets)]
                messages.append(MessageDeliveries(str(g), seq, f"n{n + 1}", "swarm1", t, t + MS,
                                                  t + MS + 50_000, receipts, 0, 300_000))
    events = [TimedEvent(EventKind.GC, f"n{1 + i % nodes}", T0 + i * 30 * MS,
                         T0 + i * 30 * MS + 2 * MS, {}) for i in range(seconds * 33)]
    events += [TimedEvent(EventKind.LOOP_STALL, "swarm1", T0 + i * 50 * MS,
                          T0 + i * 50 * MS + 6 * MS, {}) for i in range(seconds * 20)]
    return messages, events


def main() -> None:
    print("| message x node records | deliveries | intervals | seconds |")
    print("| --- | --- | --- | --- |")
    for groups, seconds, nodes, members in ((6, 5, 2, 100), (100, 5, 4, 1000),
                                            (100, 60, 4, 1000)):
        messages, events = synthetic(groups, seconds, nodes, members)
        started = time.perf_counter()
        attribute(messages, events, 5.0)
        took = time.perf_counter() - started
        print(f"| {len(messages):,} | {sum(m.count for m in messages):,} | {len(events):,} "
              f"| {took:.2f} |")


if __name__ == "__main__":
    main()

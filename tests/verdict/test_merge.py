"""What the pieces gave, merged: counts against what was sent and who joined, lost or late,
and a node's own figures. Synthetic piece results: no broker."""

import pytest


def test_a_silent_publishers_counts_are_at_least_what_arrived():
    """A publisher killed mid-run gives no result: its counts come from its last report,
    read against the schedule, and a group may have had one more sent than that says. What
    arrived proves it: no group is both short (lost) and over (beyond the expected)."""
    from mqprobe.records import Latency
    from mqprobe.verdict.merge import merge_run

    def swarm(delivered: dict[str, int]) -> dict:
        return {"self_lag": Latency().to_json(), "groups": {
            g: {"members": 50, "delivered": n, "duplicated": 0} for g, n in delivered.items()}}

    reported = {"sent": 9, "published": {"1": 5, "2": 4}, "silent": True}
    run = merge_run(reported, [swarm({"1": 250, "2": 250})], [])
    assert (run.counts.published, run.counts.expected_deliveries, run.counts.lost) == (10, 500, 0), run
    short = merge_run(reported, [swarm({"1": 200, "2": 200})], [])  # 1 of group 1's lost
    assert (short.counts.published, short.counts.lost) == (9, 50), short
    trusted = merge_run({**reported, "silent": False}, [swarm({"1": 250, "2": 250})], [])
    assert trusted.counts.published == 9  # a publisher's own result is its count


def _tallied(groups: dict[str, tuple[int, ...]]) -> dict:
    """A swarm result: group -> (members, delivered, live members, reached, gaps near top)."""
    from mqprobe.records import Latency

    return {"self_lag": Latency().to_json(), "groups": {
        g: {"members": m, "delivered": d, "duplicated": 0, "live": live, "reached": reached,
            "gaps_near_top": near} for g, (m, d, live, reached, near) in groups.items()}}


@pytest.mark.parametrize(("swarm", "broker_ready", "in_hand", "lost", "late"), [
    # 10 members, 100 messages: each live member got seqs 0-59, the broker still holds 40
    ({"1": (10, 600, 10, 600, 0)}, 40, 0, 0, 400),
    # the same, but nothing was held anywhere at the end: the tail never comes
    ({"1": (10, 600, 10, 600, 0)}, 0, 0, 400, 0),
    # the node holds them (its prefetch window), none ready at the broker
    ({"1": (10, 600, 10, 600, 0)}, 0, 40, 0, 400),
    # holes: each member got 60 of seqs 0-79; 20 below its highest are lost, 20 past it late
    ({"1": (10, 600, 10, 800, 0)}, 20, 0, 200, 200),
    # ...unless they are within the reordering the run showed below the highest: 5 each
    ({"1": (10, 600, 10, 800, 50)}, 30, 0, 150, 250),
    # 2 members went down with nothing: the 200 they missed are lost, however much is
    # queued; the 8 live ones got seqs 0-59, their 320 are late
    ({"1": (10, 480, 8, 480, 0)}, 40, 0, 200, 320),
    # 1 message held at the end reaches at most 10 members: 400 behind is not all late
    ({"1": (10, 600, 10, 600, 0)}, 1, 0, 390, 10),
])
def test_what_did_not_arrive_is_lost_or_late(swarm, broker_ready, in_hand, lost, late):
    """'lost 22268 of 48000' once stood for a node that was simply behind (issue 23)."""
    from mqprobe.figures import HeldAtEnd
    from mqprobe.records import Latency
    from mqprobe.verdict.merge import merge_run

    node = {"node": "n1", "handled": 60, "untraced": 0, "filtered": 0, "unacked_max": 50,
            "prefetch": 50, "busy_ratio": {}, "loop_lag": Latency().to_json(),
            "in_hand_at_end": in_hand}
    run = merge_run({"published": {"1": 100}}, [_tallied(swarm)], [node], broker_ready)
    assert (run.counts.lost, run.counts.not_delivered) == (lost, late), run
    group = run.groups["1"].counts
    assert group.lost + group.not_delivered == 1000 - run.counts.delivered
    assert run.held_at_end == HeldAtEnd(broker_ready, in_hand)


@pytest.mark.parametrize(("broker_ready", "in_hand"), [(0, 0), (1, 0), (0, 26)])
def test_a_run_a_signal_cut_short_counts_what_was_on_its_way_late_never_lost(broker_ready,
                                                                             in_hand):
    """Ctrl-C and SIGTERM once read the same in-flight messages as 'lost 2300' and 'lost
    2902 + 2598 late' (issue 40): how little was sampled as held does not matter when we
    stopped looking; holes below a member's highest seq stay lost."""
    from mqprobe.records import Latency
    from mqprobe.verdict.merge import merge_run

    node = {"node": "n1", "handled": 60, "untraced": 0, "filtered": 0, "unacked_max": 50,
            "prefetch": 50, "busy_ratio": {}, "loop_lag": Latency().to_json(),
            "in_hand_at_end": in_hand}
    whole = _tallied({"1": (10, 600, 10, 600, 0)})  # seqs 0-59 each; 60-99 were on the way
    run = merge_run({"published": {"1": 100}}, [whole], [node], broker_ready, cut_short=True)
    assert (run.counts.lost, run.counts.not_delivered) == (0, 400), run
    holes = _tallied({"1": (10, 600, 10, 800, 0)})  # 20 each below the highest: lost
    run = merge_run({"published": {"1": 100}}, [holes], [node], broker_ready, cut_short=True)
    assert (run.counts.lost, run.counts.not_delivered) == (200, 200), run


def test_a_nodes_figures_keep_the_ticks_its_loop_monitor_lost():
    """docs/reference.md promised loop_cpu.failed_ticks; the node summary dropped it."""
    from mqprobe.records import Latency
    from mqprobe.verdict.merge import node_figures

    node = {"node": "n1", "handled": 1, "untraced": 0, "filtered": 0, "unacked_max": 1,
            "prefetch": 50, "busy_ratio": {}, "loop_lag": Latency().to_json(),
            "loop_cpu": {"source": "schedstat", "rows": [[0, 1, 1, 0, 0]], "on_cpu": 0.5,
                         "waiting": 0.25, "throttled": 0.0, "failed_ticks": 3}}
    doc = node_figures(node).to_json()
    assert doc["loop_cpu"] == {"source": "schedstat", "on_cpu": 0.5, "waiting": 0.25,
                               "throttled": 0.0, "failed_ticks": 3}

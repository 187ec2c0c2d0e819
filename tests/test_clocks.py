"""Clock offset arithmetic: the NTP estimate, probe bounds, and each hop's error bar."""

from mqprobe.clocks import (
    SAME_CLOCK,
    ClockOffset,
    ProbeBounds,
    RunClocks,
    bound_from_probe,
    from_exchanges,
    hop_uncertainty,
)

MS = 1_000_000


def exchange(offset: int, out: int, back: int, t0: int = 10**18, held: int = 50_000):
    """(t0, t1, t2, t3) for a remote clock `offset` ahead, with one-way delays out/back."""
    t1 = t0 + out + offset
    t2 = t1 + held
    t3 = t2 - offset + back
    return t0, t1, t2, t3


def test_symmetric_exchange_recovers_the_offset_exactly():
    estimate = from_exchanges([exchange(250 * MS, 300_000, 300_000)])
    assert estimate.offset_ns == 250 * MS
    assert estimate.uncertainty_ns == 300_000


def test_asymmetric_paths_stay_within_the_error_bar_and_the_shortest_round_trip_wins():
    stamps = [exchange(-40 * MS, 5 * MS, 200_000), exchange(-40 * MS, 900_000, 100_000),
              exchange(-40 * MS, 3 * MS, 3 * MS)]
    estimate = from_exchanges(stamps)
    assert estimate.uncertainty_ns == 500_000  # the 1.0 ms round trip, halved
    assert abs(estimate.offset_ns - (-40 * MS)) <= estimate.uncertainty_ns
    assert estimate.exchanges == 3


def test_relative_offsets_add_their_error_bars_and_one_clock_has_none():
    a, b = ClockOffset(10 * MS, MS, 8), ClockOffset(4 * MS, 2 * MS, 8)
    assert a.relative_to(b) == ClockOffset(6 * MS, 3 * MS, 16)
    assert a.relative_to(a) == SAME_CLOCK


def test_probe_bounds_narrow_to_the_offset():
    bounds = ProbeBounds()
    offset = 300 * MS
    for mq, server, delivery in ((2 * MS, MS, 3 * MS), (MS, MS, 500_000), (4 * MS, 0, MS)):
        t_pub = 10**18
        t_deq = t_pub + mq + offset
        t_emit = t_deq + server
        bounds.add(bound_from_probe(t_pub, t_deq, t_emit, t_emit - offset + delivery))
    assert bounds.clocks_differ
    estimate = bounds.estimate()
    assert abs(estimate.offset_ns - offset) <= estimate.uncertainty_ns
    assert estimate.uncertainty_ns == 750_000  # (min mq 1 ms + min delivery 0.5 ms) / 2


def test_probe_bounds_around_zero_do_not_claim_a_difference():
    bounds = ProbeBounds()
    bounds.add(bound_from_probe(0, 2 * MS, 3 * MS, 4 * MS))
    assert bounds.consistent and not bounds.clocks_differ


def test_hop_error_bars_come_from_the_clocks_each_hop_compares():
    remote_node = ClockOffset(250 * MS, 900_000, 8)
    bars = hop_uncertainty(SAME_CLOCK, [remote_node, SAME_CLOCK], [SAME_CLOCK])
    assert bars == {"mq": 0.9, "server": 0.0, "delivery": 0.9, "e2e": 0.0, "fanout": 0.0}
    assert set(hop_uncertainty(SAME_CLOCK, [SAME_CLOCK], [SAME_CLOCK]).values()) == {0.0}


def test_drift_between_measurements_widens_the_error_bar():
    before, after = ClockOffset(250 * MS, 700_000, 8), ClockOffset(250 * MS + 300_000, 900_000, 8)
    widened = before.widened_by(after)
    assert widened.offset_ns == before.offset_ns  # the one the hops were corrected with
    assert widened.uncertainty_ns == 900_000 + 300_000 and widened.drift_ns == 300_000
    assert SAME_CLOCK.widened_by(SAME_CLOCK) == SAME_CLOCK


def test_a_runs_clocks_are_written_and_read_back_typed():
    import json

    remote = ClockOffset(250 * MS, 900_000, 8, 300_000)
    clocks = RunClocks.of({"publisher": SAME_CLOCK, "n1": remote, "n2": SAME_CLOCK,
                           "swarm1": SAME_CLOCK})
    assert clocks.apart and clocks.hop_uncertainty_ms["mq"] == 0.9
    doc = json.loads(json.dumps(clocks.to_json()))
    assert doc["pieces"]["n1"] == {"offset_ms": 250.0, "uncertainty_ms": 0.9, "exchanges": 8,
                                   "drift_ms": 0.3}
    assert RunClocks.from_json(doc) == clocks
    one = RunClocks.of({"publisher": SAME_CLOCK, "n1": SAME_CLOCK, "swarm1": SAME_CLOCK})
    assert not one.apart and RunClocks.from_json(None) == RunClocks()

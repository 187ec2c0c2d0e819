"""Latency records: counting by bucket gives the histogram recording one by one would."""

import random

from mqprobe.records import Latency, new_histogram


def test_counting_by_bucket_is_the_same_histogram_as_recording_one_by_one():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(14, 1.5)) for _ in range(20_000)]
    values += [5_000 * 3600 * 10**9, 0, 999]  # past the highest trackable, zero, under 1 us
    values += [-rng.randrange(1, 5_000_000) for _ in range(40)]  # clock skew
    rng.shuffle(values)
    latency, reference = Latency(), new_histogram()
    for value in values:
        latency.record(value)
        if value >= 0:
            reference.record_value(min(value // 1000, 3600 * 1_000_000))
    assert latency.count == len(values)
    assert latency.hist.encode() == reference.encode()
    assert latency.negative == 40 and latency.min_ns == min(values)
    assert latency.max_ns == max(values)
    summary = latency.summary()
    assert summary["p99_ms"] == round(reference.get_value_at_percentile(99.0) / 1000, 3)
    assert summary["negative"] == 40


def test_a_merge_and_a_round_trip_keep_values_still_waiting():
    left, right = Latency(), Latency()
    for value in (1_000_000, 2_000_000, -3):
        left.record(value)
    right.record(5_000_000)
    left.merge(right)
    assert (left.count, left.negative, left.max_ns) == (4, 1, 5_000_000)
    again = Latency.from_json(left.to_json())
    assert again.summary() == left.summary()

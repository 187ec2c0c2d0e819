"""The run's series on the timeline's axis, from synthetic deliveries: no broker."""

from mqprobe.verdict.attribution import MessageDeliveries
from mqprobe.verdict.run_timeline import e2e_over_time, queue_ready_over_time


def _message(t_pub_ms: float, server_ms: float, receipts_ms: list[tuple[float, int]]):
    t_pub = int(t_pub_ms * 1e6)
    return MessageDeliveries("1", 0, "n1", "swarm1", t_pub, t_pub, t_pub + int(server_ms * 1e6),
                             [(int(d * 1e6), n) for d, n in receipts_ms])


def test_e2e_over_time_weighs_each_member_and_buckets_by_publish_time():
    t0 = 1_000_000_000
    messages = [_message(t0 / 1e6 + 10, 1.0, [(1.0, 98), (50.0, 2)]),  # 100 members, bucket 0
                _message(t0 / 1e6 + 250, 0.5, [(0.5, 10)])]  # bucket 2 (200..300 ms)
    series = e2e_over_time(messages, t0)
    assert series.bucket_ms == 100
    assert series.rows == [[0, 100, 2.0, 51.0, 51.0], [200, 10, 1.0, 1.0, 1.0]]


def test_e2e_over_time_widens_its_buckets_on_long_runs():
    t0 = 0
    messages = [_message(t * 1000.0, 1.0, [(1.0, 1)]) for t in range(0, 600)]  # 10 minutes
    series = e2e_over_time(messages, t0)
    assert series.bucket_ms == 1600 and len(series.rows) <= 600
    assert sum(row[1] for row in series.rows) == 600


def test_queue_depth_is_summed_over_queues_on_the_timelines_axis():
    series = {"q1": [[0.0, 5, 1], [0.5, 0, 1]], "q2": [[0.0, 2, 1], [0.5, 3, 1]]}
    # sampling began 200 ms before the first publish
    got = queue_ready_over_time(series, sampled_from_ns=800_000_000, t0_ns=1_000_000_000)
    assert got.rows == [[-200.0, 7], [300.0, 3]]

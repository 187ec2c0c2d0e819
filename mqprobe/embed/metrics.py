"""What an embedding server exports all the time: per-hop latency, per group, and counts.

A production node records every traced message, so recording must cost next to nothing:
`FastHistogram` buckets a value with one bit_length and a list increment (about 0.3 us;
HdrHistogram's Python `record_value` costs about 4 us), log-linear with 128 sub-buckets
per power of two, so any value it reports is within 0.8% of the true one. Per group, the
`GroupTable` keeps histograms for the busiest groups only (bounded memory however many
groups pass), re-ranked as traffic shifts; the rest is counted as "other".

`PrometheusCollector` turns a Tracer's metrics into the Prometheus text format through
prometheus-client: a histogram per hop with buckets that suit milliseconds, and the
percentiles (p50, p90, p99, p99.9, max) as gauges, per hop and per group; traced,
untraced (by reason), unsampled, published and sequence gaps as counters; GC pauses and
loop stalls too.
"""

from __future__ import annotations

from collections.abc import Iterator

from mqprobe.timeline import EventKind

PROMETHEUS_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
                         5000, 10000)
QUANTILES = (("0.5", 50.0), ("0.9", 90.0), ("0.99", 99.0), ("0.999", 99.9))
MAX_GROUPS = 32  # per-group histograms kept; the rest is "other"
OTHER = "other"

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS  # 128 sub-buckets per power of two above 256 us
_MAX_US = 60_000_000  # one minute: longer is counted at one minute
_BUCKETS = ((_MAX_US.bit_length() - _SUB_BITS) << _SUB_BITS) + 2 * _SUB


class FastHistogram:
    """Microsecond values in log-linear buckets: exact below 256 us, then within 1/128."""

    __slots__ = ("counts", "total", "sum_ns", "negative", "max_ns")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.sum_ns = 0  # Prometheus histograms carry a sum
        self.negative = 0  # clock skew between hosts: counted, never recorded as positive
        self.max_ns = 0

    def record(self, value_ns: int) -> None:
        if value_ns < 0:
            self.negative += 1
            return
        if value_ns > self.max_ns:
            self.max_ns = value_ns
        self.sum_ns += value_ns
        value = value_ns // 1000
        if value >= 2 * _SUB:
            if value > _MAX_US:
                value = _MAX_US
            shift = value.bit_length() - _SUB_BITS - 1
            value = (shift << _SUB_BITS) + (value >> shift)
        self.counts[value] += 1
        self.total += 1

    @staticmethod
    def low_us(index: int) -> int:
        """The smallest value (us) that falls in bucket `index`."""
        if index < 2 * _SUB:
            return index
        shift = (index >> _SUB_BITS) - 1
        return ((index & (_SUB - 1)) + _SUB) << shift

    def merge(self, other: FastHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.sum_ns += other.sum_ns
        self.negative += other.negative
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentiles_ms(self, percentiles: tuple[float, ...]) -> list[float]:
        """Each percentile's value in ms (the middle of its bucket), in one pass."""
        if not self.total:
            return [0.0] * len(percentiles)
        ranks = sorted((max(1, -(-p * self.total // 100)), i) for i, p in enumerate(percentiles))
        out = [0.0] * len(percentiles)
        seen, at = 0, 0
        for index, count in enumerate(self.counts):
            if not count:
                continue
            seen += count
            while at < len(ranks) and seen >= ranks[at][0]:
                low, high = self.low_us(index), self.low_us(index + 1)
                out[ranks[at][1]] = round((low + high - 1) / 2 / 1000, 3)
                at += 1
            if at == len(ranks):
                break
        return out

    def cumulative_ms(self, bounds_ms: tuple[float, ...]) -> list[int]:
        """How many values are at most each bound (ms): Prometheus's `le` buckets."""
        out, seen, at = [], 0, 0
        limits = [b * 1000 for b in bounds_ms]
        for index, count in enumerate(self.counts):
            high = self.low_us(index + 1) - 1  # the bucket's largest value
            while at < len(limits) and high > limits[at]:
                out.append(seen)
                at += 1
            seen += count
        out += [seen] * (len(limits) - at)
        return out

    def summary(self) -> dict:
        """The contract's hop shape: count, p50..p999 and max in ms."""
        p50, p90, p99, p999 = self.percentiles_ms((50.0, 90.0, 99.0, 99.9))
        out = {"count": self.total + self.negative, "p50_ms": p50, "p90_ms": p90,
               "p99_ms": p99, "p999_ms": p999, "max_ms": round(self.max_ns / 1e6, 3)}
        if self.negative:
            out["negative"] = self.negative
        return out


class Hops(dict):
    """hop -> FastHistogram, made on first use: a group costs only the hops it records."""

    def __missing__(self, hop: str) -> FastHistogram:
        histogram = self[hop] = FastHistogram()
        return histogram


class GroupTable:
    """Per-group histograms of the busiest MAX_GROUPS groups, and "other" for the rest.

    Traffic is counted for up to 8 x MAX_GROUPS groups (beyond that, a new group is only
    "other"). A group outside the table that has carried twice the traffic of the
    quietest one inside takes its place: the quiet one's figures join "other", the busy
    one starts afresh. So the table follows where the traffic is, and memory stays bounded.
    """

    def __init__(self, limit: int = MAX_GROUPS) -> None:
        self.limit = limit
        self.tables: dict[str, Hops] = {}
        self.traffic: dict[str, int] = {}
        self.other = Hops()

    def for_group(self, group: str) -> Hops:
        """The histograms to record this group's message in (its own, or "other")."""
        table = self.tables.get(group)
        if table is not None:
            self.traffic[group] += 1
            return table
        if group in self.traffic or len(self.traffic) < 8 * self.limit:
            self.traffic[group] = self.traffic.get(group, 0) + 1
        if len(self.tables) < self.limit:
            table = self.tables[group] = Hops()
            return table
        if self.traffic.get(group, 0) > 2 * min(self.traffic[g] for g in self.tables):
            self._promote(group)
            return self.tables[group]
        return self.other

    def _promote(self, group: str) -> None:
        quiet = min(self.tables, key=self.traffic.__getitem__)
        for hop, histogram in self.tables.pop(quiet).items():
            self.other[hop].merge(histogram)
        self.tables[group] = Hops()

    def items(self) -> Iterator[tuple[str, Hops]]:
        yield from sorted(self.tables.items(), key=lambda item: -self.traffic[item[0]])
        if any(h.total for h in self.other.values()):
            yield OTHER, self.other


class PrometheusCollector:
    """A prometheus-client collector over one Tracer: register it in any registry."""

    def __init__(self, tracer) -> None:
        self.tracer = tracer

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        tracer, node = self.tracer, self.tracer.node
        latency = HistogramMetricFamily(
            "mqprobe_hop_latency_ms", "Per-hop latency of traced messages, in milliseconds "
            "(mq and e2e cross hosts: their clocks' offset is in them)", labels=["node", "hop"])
        quantiles = GaugeMetricFamily(
            "mqprobe_hop_quantile_ms", "Per-hop latency percentiles (max: quantile 1) in ms",
            labels=["node", "hop", "quantile"])
        for hop, histogram in tracer.hops.items():
            if not histogram.total:
                continue
            counts = histogram.cumulative_ms(PROMETHEUS_BUCKETS_MS)
            buckets = [(f"{b:g}", c) for b, c in zip(PROMETHEUS_BUCKETS_MS, counts, strict=True)]
            buckets.append(("+Inf", histogram.total))
            latency.add_metric([node, hop], buckets, sum_value=histogram.sum_ns / 1e6)
            _add_quantiles(quantiles, [node, hop], histogram)
        yield latency
        yield quantiles
        per_group = GaugeMetricFamily(
            "mqprobe_group_quantile_ms", f"Per-group hop percentiles in ms (the {MAX_GROUPS} "
            "busiest groups; the rest as group=\"other\")", labels=["node", "group", "hop",
                                                                    "quantile"])
        traffic = CounterMetricFamily(
            "mqprobe_group_messages", "Traced messages per group in the table (\"other\": "
            "the rest)", labels=["node", "group"])
        for group, hops in tracer.groups.items():
            for hop, histogram in hops.items():
                if histogram.total:
                    _add_quantiles(per_group, [node, group, hop], histogram)
            traffic.add_metric([node, group], max((h.total for h in hops.values()), default=0))
        yield per_group
        yield traffic
        for name, text, value in (
                ("published", "Messages this node stamped for publishing", tracer.published),
                ("traced", "Consumed messages that carried a valid trace", tracer.traced),
                ("unsampled", "Consumed messages left out by sampling", tracer.unsampled),
                ("seq_gaps", "Messages missing from a group's sequence (exact with one "
                             "publisher per group)", tracer.seq_gaps)):
            yield _counter(CounterMetricFamily, f"mqprobe_{name}", text, node, value)
        untraced = CounterMetricFamily("mqprobe_untraced", "Consumed messages that went on "
                                       "untraced, by reason", labels=["node", "reason"])
        for reason, count in tracer.untraced_reasons.items():
            untraced.add_metric([node, reason], count)
        yield untraced
        for kind, text in (("gc", "Garbage collections over 1 ms"),
                           ("loop-stall", "Event-loop stalls over 5 ms")):
            count, seconds, longest = tracer.pause_totals(kind)
            metric = kind.replace("-", "_")
            yield _counter(CounterMetricFamily, f"mqprobe_{metric}_pauses", text, node, count)
            yield _counter(CounterMetricFamily, f"mqprobe_{metric}_pause_seconds",
                           f"{text}: their time in all", node, seconds)
            gauge = GaugeMetricFamily(f"mqprobe_{metric}_longest_ms", f"{text}: the longest",
                                      labels=["node"])
            gauge.add_metric([node], longest * 1000)
            yield gauge


def _counter(family, name: str, text: str, node: str, value: float):
    metric = family(name, text, labels=["node"])
    metric.add_metric([node], value)
    return metric


def quantiles_of(histogram: FastHistogram) -> list[tuple[str, float]]:
    """(quantile label, ms) for p50, p90, p99 and p99.9: what Prometheus and OTel export."""
    values = histogram.percentiles_ms(tuple(p for _q, p in QUANTILES))
    return [(quantile, ms) for (quantile, _p), ms in zip(QUANTILES, values, strict=True)]


def _add_quantiles(family, labels: list[str], histogram: FastHistogram) -> None:
    for quantile, ms in quantiles_of(histogram):
        family.add_metric([*labels, quantile], ms)
    family.add_metric([*labels, "1"], round(histogram.max_ns / 1e6, 3))


def register_otel_metrics(tracer, meter=None) -> None:
    """The same figures as OpenTelemetry observable instruments, read at each collection:
    per-hop and per-group percentiles (gauges, ms) and the counts (counters). `meter`
    defaults to the host's global meter provider's; without the OTel API this raises
    ImportError, with the API alone (no SDK) nothing is recorded."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    meter = meter or metrics.get_meter("mqprobe")
    node = tracer.node

    def hop_quantiles(_options):
        return [Observation(ms, {"node": node, "hop": hop, "quantile": q})
                for hop, histogram in tracer.hops.items() if histogram.total
                for q, ms in quantiles_of(histogram)]

    def group_quantiles(_options):
        return [Observation(ms, {"node": node, "group": group, "hop": hop, "quantile": q})
                for group, hops in tracer.groups.items()
                for hop, histogram in hops.items() if histogram.total
                for q, ms in quantiles_of(histogram)]

    meter.create_observable_gauge("mqprobe.hop.latency", [hop_quantiles], unit="ms",
                                  description="Per-hop latency percentiles of traced messages")
    meter.create_observable_gauge("mqprobe.group.latency", [group_quantiles], unit="ms",
                                  description="Per-group hop percentiles (busiest groups)")
    for name in ("published", "traced", "untraced", "unsampled", "seq_gaps"):
        meter.create_observable_counter(
            f"mqprobe.{name}", [lambda _o, n=name: [Observation(getattr(tracer, n),
                                                                {"node": node})]])
    for kind in (EventKind.GC, EventKind.LOOP_STALL):
        meter.create_observable_counter(
            f"mqprobe.{kind.replace('-', '_')}.pauses",
            [lambda _o, k=kind: [Observation(tracer.pause_totals(k)[0], {"node": node})]])

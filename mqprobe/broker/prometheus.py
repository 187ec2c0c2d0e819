"""Broker evidence from RabbitMQ's Prometheus endpoint (the rabbitmq_prometheus plugin),
the alternative to the management API that RabbitMQ is moving its statistics to: alarms,
the Erlang scheduler's run queue, and each queue's ready and unacked messages and
consumers (`/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count`).
The managed broker enables it on loopback; `--prometheus-url` names a user's. For a broker
on another host, the same scrape is where its CPU is read (ERLANG_RUNTIME)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mqprobe.broker.connect import http_request

MAX_SCRAPE_BYTES = 32 * 2**20
DETAILED = "metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count"
ALARMS = {"rabbitmq_alarms_memory_used_watermark": "memory alarm",
          "rabbitmq_alarms_free_disk_space_watermark": "disk alarm",
          "rabbitmq_alarms_file_descriptor_limit": "file descriptor alarm"}

# erlang:statistics(runtime): the Erlang VM's user CPU in ms, summed over its threads (the
# kernel's time for it, sockets and files, is not in it: checked against /proc here, where
# the managed broker's system time was about half its total under load)
ERLANG_RUNTIME = "erlang_vm_statistics_runtime_milliseconds"
RUNTIME_SOURCE = "its Prometheus endpoint (Erlang's user CPU; system time not included)"


@dataclass(frozen=True)
class BrokerMetrics:
    """One scrape of the broker, the queues asked for only."""

    alarms: tuple[str, ...]
    run_queue: float  # rabbitmq_erlang_scheduler_run_queue: runnable Erlang processes waiting
    ready: dict[str, int] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    runtime_ms: float | None = None  # ERLANG_RUNTIME, when the endpoint has it


def fetch_text(url: str, timeout: float, limit: int = MAX_SCRAPE_BYTES) -> str:
    """A Prometheus exposition's text, read up to `limit` bytes (more is refused)."""
    with urllib.request.urlopen(http_request(url), timeout=timeout) as response:  # noqa: S310
        body = response.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"more than {limit // 2**20} MiB")
    return body.decode("utf-8", "replace")


RUN_QUEUE = "rabbitmq_erlang_scheduler_run_queue"
READ_AGGREGATED = (*ALARMS, RUN_QUEUE, ERLANG_RUNTIME)  # the aggregated families mqprobe reads


def only_families(text: str, names: tuple[str, ...]) -> str:
    """The exposition's lines about these families (their samples, # TYPE and # HELP): the
    aggregated /metrics has a thousand lines, and parsing all of them each second was a
    third of compare's own CPU for the ten it reads."""
    kept = [line for line in text.splitlines()
            if line.startswith(names) or (line.startswith("# ") and line[7:].startswith(names))]
    return "\n".join(kept) + "\n"


def parse_broker(aggregated: str, detailed: str, queues: set[str]) -> BrokerMetrics:
    """The figures mqprobe reads, from the two expositions' text."""
    alarms, run_queue, runtime_ms = [], 0.0, None
    for family in text_string_to_metric_families(only_families(aggregated, READ_AGGREGATED)):
        # a counter's samples come back named `<family>_total` from the parser
        if family.name == ERLANG_RUNTIME and family.samples:
            runtime_ms = family.samples[0].value
        for sample in family.samples:
            if sample.name in ALARMS and sample.value:
                alarms.append(ALARMS[sample.name])
            elif sample.name == RUN_QUEUE:
                run_queue = sample.value
    per_queue: dict[str, dict[str, int]] = {"ready": {}, "unacked": {}, "consumers": {}}
    names = {"rabbitmq_detailed_queue_messages_ready": "ready",
             "rabbitmq_detailed_queue_messages_unacked": "unacked",
             "rabbitmq_detailed_queue_consumers": "consumers"}
    for family in text_string_to_metric_families(detailed):
        for sample in family.samples:
            what, queue = names.get(sample.name), sample.labels.get("queue", "")
            if what and queue in queues:
                per_queue[what][queue] = int(sample.value)
    return BrokerMetrics(tuple(alarms), run_queue, **per_queue, runtime_ms=runtime_ms)


def read_broker(prometheus_url: str, queues: set[str], timeout: float = 3.0) -> BrokerMetrics:
    """Scrape the endpoint now (blocking: run it in a thread); the per-queue exposition
    only when queues are asked for."""
    base = prometheus_url if prometheus_url.endswith("/") else prometheus_url + "/"
    detailed = fetch_text(base + DETAILED, timeout) if queues else ""
    return parse_broker(fetch_text(base + "metrics", timeout), detailed, queues)

"""`mqprobe top`: the hop percentiles of running nodes, from the metrics they export.

Each URL is a Prometheus text endpoint of one or more embedded Tracers (`/metrics`). A
scrape is read into `NodeView`s (one per node label); two scrapes in a row give rates.
Nothing here needs a broker: it reads what the nodes say about themselves.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mqprobe.broker.connect import redact_url
from mqprobe.broker.prometheus import fetch_text
from mqprobe.errors import InputError, url_problem

MAX_SCRAPE_BYTES = 16 * 2**20
COUNTERS = ("traced", "untraced", "unsampled", "published", "seq_gaps")


@dataclass
class NodeView:
    """What one node's tracer exported at one moment."""

    url: str
    node: str
    at: float  # time.monotonic() of the scrape
    counts: dict[str, float] = field(default_factory=dict)
    hops: dict[str, dict[str, float]] = field(default_factory=dict)  # hop -> quantile -> ms
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    group_messages: dict[str, float] = field(default_factory=dict)
    pauses: dict[str, tuple[float, float]] = field(default_factory=dict)  # count, longest ms


@dataclass
class Scrape:
    """One round over every URL: the nodes that answered, and why the others did not."""

    views: list[NodeView]
    errors: dict[str, str]


def parse(text: str, url: str, at: float) -> list[NodeView]:
    """The node views in one Prometheus text exposition (only mqprobe's families)."""
    views: dict[str, NodeView] = {}

    def view(labels: dict) -> NodeView:
        node = labels.get("node", "?")
        return views.setdefault(node, NodeView(url, node, at))

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{redact_url(url)} did not answer Prometheus text: {exc}") from None
    try:
        _read(families, view)
    except KeyError as exc:  # a family of our name without our labels: not one of ours
        raise InputError(f"{redact_url(url)} has mqprobe metrics without the label {exc}") \
            from None
    return list(views.values())


def _read(families, view) -> None:
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if family.name == "mqprobe_hop_quantile_ms":
                view(labels).hops.setdefault(labels["hop"], {})[labels["quantile"]] = sample.value
            elif family.name == "mqprobe_group_quantile_ms":
                hops = view(labels).groups.setdefault(labels["group"], {})
                hops.setdefault(labels["hop"], {})[labels["quantile"]] = sample.value
            elif family.name == "mqprobe_group_messages" and sample.name.endswith("_total"):
                view(labels).group_messages[labels["group"]] = sample.value
            elif family.name == "mqprobe_untraced" and sample.name.endswith("_total"):
                counts = view(labels).counts
                counts["untraced"] = counts.get("untraced", 0) + sample.value
            elif family.name.removeprefix("mqprobe_") in COUNTERS and \
                    sample.name.endswith("_total"):
                view(labels).counts[family.name.removeprefix("mqprobe_")] = sample.value
            elif family.name in ("mqprobe_gc_pauses", "mqprobe_loop_stall_pauses") and \
                    sample.name.endswith("_total"):
                kind = family.name.removeprefix("mqprobe_").removesuffix("_pauses")
                count, longest = view(labels).pauses.get(kind, (0, 0))
                view(labels).pauses[kind] = (sample.value, longest)
            elif family.name in ("mqprobe_gc_longest_ms", "mqprobe_loop_stall_longest_ms"):
                kind = family.name.removeprefix("mqprobe_").removesuffix("_longest_ms")
                count, _longest = view(labels).pauses.get(kind, (0, 0))
                view(labels).pauses[kind] = (count, sample.value)


def check_urls(urls: list[str]) -> None:
    for url in urls:
        if problem := url_problem("--metrics-url", url, ("http", "https"),
                                  "http://host:port/metrics"):
            raise InputError(problem)


async def scrape(urls: list[str], timeout: float = 3.0) -> Scrape:
    """Every URL at once; one that fails is an error line, never the end of the view."""
    async def one(url: str) -> list[NodeView] | str:
        try:
            text = await asyncio.to_thread(fetch_text, url, timeout, MAX_SCRAPE_BYTES)
            return parse(text, url, time.monotonic())
        except (OSError, ValueError, urllib.error.URLError, InputError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return f"{type(exc).__name__}: {str(reason).splitlines()[0][:160] if str(reason) else ''}"

    answers = await asyncio.gather(*(one(url) for url in urls))
    views, errors = [], {}
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, str):
            errors[redact_url(url)] = answer
        else:
            views += answer
    return Scrape(views, errors)


def rates(now: NodeView, before: NodeView | None) -> dict[str, float]:
    """Counters per second between two scrapes of one node (none on the first)."""
    if before is None or now.at <= before.at:
        return {}
    seconds = now.at - before.at
    return {name: max(0.0, (now.counts.get(name, 0) - before.counts.get(name, 0)) / seconds)
            for name in now.counts}

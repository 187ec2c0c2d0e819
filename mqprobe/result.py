"""A run's result and a comparison's, built once as typed values of the parts in
mqprobe.figures: what `run.assemble` makes of what the pieces gave, and what report,
pictures, the conclusion and sweep read back.

Like the OpenTelemetry SDK's `point.py`, these are frozen values with no behaviour but
their own shape. `RunRecord.to_json` is the run as a result file holds it (the contract's
fields first, then mqprobe's; docs/result.schema.json), and `from_json` reads a saved run
back so that writing it again gives the same JSON, key for key (tests/test_result.py).
Optional parts a run may lack (no clocks measured, a result from before a field existed)
are None and absent from the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

from mqprobe.clocks import RunClocks
from mqprobe.errors import ResultFormatError
from mqprobe.figures import (
    Attribution,
    BrokerEvidence,
    ChurnFigures,
    Conclusion,
    Cost,
    Counts,
    CpuUse,
    GroupResult,
    HeldAtEnd,
    HopFigures,
    LinkFigures,
    LoopLag,
    MqLegs,
    NodeFigures,
    PublisherFigures,
    RunTimeline,
    SwarmFigures,
    Sweep,
    Verdict,
    read_part,
    text_of,
)
from mqprobe.model import HOPS, HopName, Layout
from mqprobe.shapes import (
    Check,
    count,
    each,
    fields,
    histogram,
    number,
    or_none,
    safe_name,
    text,
    values,
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One topology x layout run, and (in a sweep or with --repeat) which point and repeat."""

    # what a saved run must hold for the readers (result_problem); its parts say theirs
    SHAPE: ClassVar[Check] = fields(
        {"topology": safe_name, "layout": safe_name,
         **{k: number for k in ("published", "expected_deliveries", "delivered", "lost",
                                "duplicated")},
         "hops": fields({hop: HopFigures.SHAPE for hop in HOPS}),
         "self_lag_ms": LoopLag.SHAPE,
         "verdict": Verdict.SHAPE},
        {"load": number, "repeat": count, "error": or_none(text), "clocks": RunClocks.SHAPE,
         "not_delivered": number, "cost": values(or_none(number)),
         "hdr": values(histogram), "timeline": RunTimeline.SHAPE, "cpu": CpuUse.SHAPE},
    )

    topology: str
    layout: Layout
    counts: Counts
    hops: dict[str, HopFigures]
    self_lag: LoopLag  # the swarms' own loop lag: the receive stamps' error bar
    verdict: Verdict
    knobs: dict[str, Any] = field(default_factory=dict)
    held_at_end: HeldAtEnd | None = None
    bounds: tuple[str, ...] | None = None  # counts that are lower bounds, and why
    lost_at_most: bool = False  # `lost` is an upper bound (a swarm gave no result)
    groups: dict[str, GroupResult] = field(default_factory=dict)
    hdr: dict[str, str] = field(default_factory=dict)  # hop -> its HDR histogram, encoded
    untraced: int = 0
    misrouted: int = 0
    swarm: SwarmFigures = field(default_factory=SwarmFigures)
    publisher: PublisherFigures = field(default_factory=PublisherFigures)
    nodes: tuple[NodeFigures, ...] = ()
    broker: BrokerEvidence = field(default_factory=BrokerEvidence.not_measured)
    links: tuple[LinkFigures, ...] | None = None  # each AMQP link's round trips (None: before)
    mq_legs: MqLegs | None = None  # the mq hop split by the links' round trips
    clocks: RunClocks | None = None
    samples: tuple[tuple[int, ...], ...] | None = None  # sampled deliveries' stamps
    timeline: RunTimeline = field(default_factory=RunTimeline)
    cpu: CpuUse = field(default_factory=lambda: CpuUse(False, "not sampled"))
    cost: Cost | None = None
    attribution: Attribution | None = None
    attribution_dropped: int = 0
    error: str | None = None
    declared: dict[str, Any] | None = None  # what the run declared on the broker, and its removal
    phases_s: dict[str, float] | None = None  # where the run's wall time went
    repeat: int | None = None
    load: float | None = None  # sweep: the point's load
    rate_per_group: float | None = None  # sweep
    churning: ChurnFigures | None = None  # --inject churn, client-stall: members apart

    def hop(self, hop: str) -> HopFigures:
        """One hop's figures; zero when it was not recorded."""
        return self.hops.get(hop) or HopFigures()

    @property
    def e2e(self) -> HopFigures:
        return self.hop(HopName.E2E)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"topology": self.topology, "layout": self.layout, "knobs": self.knobs,
                     **self.counts.to_json()}
        if self.held_at_end is not None:
            doc["held_at_end"] = self.held_at_end.to_json()
        if self.bounds is not None:
            doc["bounds"] = list(self.bounds)
        if self.lost_at_most:
            doc["lost_at_most"] = True
        doc |= {"hops": {hop: figures.to_json() for hop, figures in self.hops.items()},
                "self_lag_ms": self.self_lag.to_json(),
                "groups": {group: g.to_json() for group, g in self.groups.items()},
                "hdr": self.hdr, "untraced": self.untraced, "misrouted": self.misrouted,
                "swarm": self.swarm.to_json(), "publisher": self.publisher.to_json(),
                "nodes": [node.to_json() for node in self.nodes],
                "evidence": {"broker": self.broker.to_json()}}
        if self.links is not None:
            doc["links"] = [link.to_json() for link in self.links]
        if self.mq_legs is not None:
            doc["mq_legs"] = self.mq_legs.to_json()
        if self.clocks is not None:
            doc["clocks"] = self.clocks.to_json()
        if self.samples is not None:
            doc["samples"] = [list(s) for s in self.samples]
        doc |= {"timeline": self.timeline.to_json(), "cpu": self.cpu.to_json()}
        if self.cost is not None:
            doc["cost"] = self.cost.to_json()
        doc |= {"attribution": self.attribution.to_json() if self.attribution else None,
                "verdict": self.verdict.to_json(), "attribution_dropped": self.attribution_dropped,
                "error": self.error}
        for name in ("declared", "phases_s", "repeat", "load", "rate_per_group"):
            if (value := getattr(self, name)) is not None:
                doc[name] = value
        if self.churning is not None:
            doc["churning"] = self.churning.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunRecord:
        """A saved run; what it lacks is zero, empty or None (a layout: per-node, the
        default). A part that is not what mqprobe writes is ResultFormatError, naming the
        part (result_problem checked the fields the tables read when the file was loaded;
        this reads every part)."""
        if not isinstance(doc, dict):
            raise ResultFormatError("a run is not a JSON object")
        held, bounds, clocks = doc.get("held_at_end"), doc.get("bounds"), doc.get("clocks")
        links, legs = doc.get("links"), doc.get("mq_legs")
        samples, cost = doc.get("samples"), doc.get("cost")
        parts = {
            "topology": lambda: text_of(doc.get("topology", "")),
            "layout": lambda: Layout(doc.get("layout", Layout.PER_NODE)),
            "counts": lambda: Counts.from_json(doc),
            "hops": lambda: HopFigures.by_hop(doc.get("hops")),
            "self_lag": lambda: LoopLag.from_json(doc.get("self_lag_ms") or {}),
            "verdict": lambda: Verdict.from_json(doc["verdict"]),
            "knobs": lambda: dict(doc.get("knobs") or {}),
            "held_at_end": lambda: HeldAtEnd.from_json(held) if held is not None else None,
            "bounds": lambda: tuple(text_of(b) for b in bounds) if bounds is not None else None,
            "lost_at_most": lambda: doc.get("lost_at_most") is True,
            "groups": lambda: {group: read_part(f"group {group}", partial(GroupResult.from_json, g))
                               for group, g in (doc.get("groups") or {}).items()},
            "hdr": lambda: {hop: text_of(h) for hop, h in (doc.get("hdr") or {}).items()},
            "untraced": lambda: int(doc.get("untraced", 0)),
            "misrouted": lambda: int(doc.get("misrouted", 0)),
            "swarm": lambda: SwarmFigures.from_json(doc.get("swarm")),
            "publisher": lambda: PublisherFigures.from_json(doc.get("publisher")),
            "nodes": lambda: tuple(NodeFigures.from_json(n) for n in doc.get("nodes") or []),
            "broker": lambda: BrokerEvidence.from_json((doc.get("evidence") or {}).get("broker")),
            "links": lambda: (tuple(LinkFigures.from_json(link) for link in links)
                              if links is not None else None),
            "mq_legs": lambda: MqLegs.from_json(legs) if legs is not None else None,
            "clocks": lambda: RunClocks.from_json(clocks) if clocks is not None else None,
            "samples": lambda: tuple(tuple(s) for s in samples) if samples is not None else None,
            "timeline": lambda: RunTimeline.from_json(doc.get("timeline")),
            "cpu": lambda: CpuUse.from_json(doc.get("cpu")),
            "cost": lambda: Cost.from_json(cost) if cost is not None else None,
            "attribution": lambda: Attribution.from_json(doc.get("attribution")),
            "attribution_dropped": lambda: int(doc.get("attribution_dropped", 0)),
            "error": lambda: text_of(doc["error"]) if doc.get("error") is not None else None,
            "declared": lambda: doc.get("declared"),
            "phases_s": lambda: doc.get("phases_s"),
            "repeat": lambda: int(doc["repeat"]) if doc.get("repeat") is not None else None,
            "load": lambda: float(doc["load"]) if doc.get("load") is not None else None,
            "rate_per_group": lambda: (float(doc["rate_per_group"])
                                       if doc.get("rate_per_group") is not None else None),
            "churning": lambda: (ChurnFigures.from_json(doc["churning"])
                                 if doc.get("churning") is not None else None),
        }
        return cls(**{name: read_part(name, parse) for name, parse in parts.items()})


@dataclass(frozen=True)
class Comparison:
    """A comparison's or a sweep's whole result, typed: parsed once when it is loaded (or
    when a measurement ends), read by the tables, the pictures, trace's replay and the exit
    code; written back key for key (`to_json`). `conclusion` is the saved one (its
    sentence); a result saved before conclusions were drawn has none."""

    SHAPE: ClassVar[Check] = fields(
        {"runs": each(RunRecord.SHAPE)},
        {"workload": fields({}, {**{k: number for k in ("groups", "nodes", "rate", "size",
                                                         "duration_s")},
                                 "group_sizes": each(count)}),
         "broker": fields({}, {"version": text}),
         "conclusion": Conclusion.SHAPE,
         "repeats": fields({}, {"count": count}),
         "sweep": Sweep.SHAPE},
    )

    runs: tuple[RunRecord, ...]
    workload: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)
    mqprobe_version: str = ""
    started_at: str = ""
    repeats: dict[str, Any] | None = None
    interrupted: bool | None = None
    sweep: Sweep | None = None
    conclusion: Conclusion | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Comparison:
        """ResultFormatError names the run (or the section) and the part that is not what
        mqprobe writes."""
        runs = []
        for i, run in enumerate(doc.get("runs", []), 1):
            try:
                runs.append(RunRecord.from_json(run))
            except ResultFormatError as exc:
                raise ResultFormatError(f"run {i}: {exc}") from None
        sweep, conclusion = doc.get("sweep"), doc.get("conclusion")
        return cls(tuple(runs), dict(doc.get("workload") or {}), dict(doc.get("broker") or {}),
                   str(doc.get("mqprobe_version", "")), str(doc.get("started_at", "")),
                   doc.get("repeats"), doc.get("interrupted"),
                   Sweep.from_json(sweep) if sweep is not None else None,
                   read_part("conclusion", lambda: Conclusion.from_json(conclusion), "the result's")
                   if isinstance(conclusion, dict) else None)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mqprobe_version": self.mqprobe_version, "workload": self.workload,
                     "broker": self.broker, "started_at": self.started_at,
                     "runs": [run.to_json() for run in self.runs]}
        for name in ("repeats", "interrupted"):
            if (value := getattr(self, name)) is not None:
                doc[name] = value
        if self.conclusion is not None:
            doc["conclusion"] = self.conclusion.to_json()
        if self.sweep is not None:
            doc["sweep"] = self.sweep.to_json()
        return doc

    @property
    def sentence(self) -> str:
        """The saved conclusion's sentence ('' when the result has none)."""
        return self.conclusion.sentence if self.conclusion else ""


def result_problem(result: object) -> str:
    """'' for a result every reader can use, else the first problem, naming its field."""
    return Comparison.SHAPE(result, "")


def result_schema() -> dict[str, Any]:
    """The result's JSON Schema: what Comparison.SHAPE checks, said as a schema (fields not
    listed pass as they are, as they do here)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "mqprobe result (compare or sweep --json)",
            "description": "The fields report, trace and pictures read, checked when a result "
                           "loads (each part's SHAPE in mqprobe; python -m mqprobe.result "
                           "generates this file).",
            **Comparison.SHAPE.schema}


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write(json.dumps(result_schema(), indent=1) + "\n")

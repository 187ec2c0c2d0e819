"""The typed protocol between `mqprobe compare` and the pieces it runs (node, swarm,
publisher), here or on an agent's host.

Like locust's one `Message` type between master and workers, everything that crosses the
process boundary is one of these types, as one JSON document or line:

- a piece is started with a `PieceSpec`: its role and its whole configuration (the role's
  config dataclass as a document, the topology inline), written to `<name>.spec.json` in
  the run's log directory and run as `python -m mqprobe.pieces.piece SPEC`. The broker
  URL is not in it (it holds credentials): the piece takes it from MQPROBE_AMQP_URL;
- the parent sends `Command`s, one JSON line each on the piece's stdin (`Reset`,
  `Settle`, `SetClock`, `Stop`); a piece answers every one `applied` or `refused`;
- the piece writes events, one JSON line each on stdout, named by `EventName`.

`to_document` / `from_document` turn a config dataclass into a document and back; the way
back checks every field's type against the dataclass's hints, so a malformed document (an
agent takes them from anyone who can publish on its broker) is one sentence, not a crash.
Fields marked `LOCAL` (the broker URL, callbacks) never travel.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar, Union

from mqprobe.errors import InputError
from mqprobe.model import PLACED_ROLES, PieceRole

T = TypeVar("T")

# Field metadata, `field(metadata=LOCAL)`: the field never travels in a document (a URL
# with credentials, a callback); from_document takes it as a keyword argument instead.
LOCAL = {"local": True}


class SpecError(InputError):
    """A piece's configuration document that cannot be used; the message names the field."""


class CommandRefused(ValueError):
    """A piece cannot apply a command (unknown, or malformed); the message says why."""


# -- what a coordinator asks an agent, over the broker (pieces/agent.py) --------------------
class AgentOp(StrEnum):
    HELLO = "hello"  # are you there, which mqprobe and which clock (the reply: `hello`)
    CLOCK = "clock"  # one NTP-style exchange (the reply: `clock`, with t1 and t2)
    ALIVE = "alive"  # the coordinator still runs: keep its pieces
    SPAWN = "spawn"  # start a piece from its spec
    SEND = "send"  # a command line to a piece's stdin
    STOP = "stop"  # stop a piece (it sends its result first)


# -- events a piece writes ------------------------------------------------------------------
class EventName(StrEnum):
    READY = "ready"  # set up: a node listens, a swarm's members joined, a publisher connected
    PROGRESS = "progress"  # every fraction of a second while it runs
    RESULT = "result"  # its figures, once asked to stop (or done)
    ERROR = "error"  # it failed; `message` is one sentence
    APPLIED = "applied"  # a command was applied
    REFUSED = "refused"  # a command could not be; `message` says why
    EXIT = "exit"  # written by the parent's side when the process ended


class NodeReady(TypedDict):
    node: str
    host: str
    port: int
    queues: list[str]


class NodeProgress(TypedDict):
    node: str
    handled: int
    clients: int


class SwarmProgress(TypedDict):
    planned: int
    connected: int
    joined: int
    failed: int
    disconnects: int
    reconnects: int
    down: int
    delivered: int
    # what survives a swarm killed before its result: compare counts from its last report
    delivered_by_group: dict[str, int]


class SwarmReady(SwarmProgress):
    rss_bytes: int
    first_error: str


class PublisherProgress(TypedDict):
    sent: int
    confirmed: int
    nacked: int
    errors: int


class GroupTallyJson(TypedDict, total=False):
    members: int
    delivered: int
    duplicated: int
    reached: int  # the sum of each live member's highest seq + 1 (Swarm._group_tallies)
    gaps_near_top: int  # seqs missed within the run's deepest reordering below the highest
    live: int  # members connected at the end


class PublisherResult(PublisherProgress, total=False):
    """What a publisher's `result` event carries (Publisher.result); compare's stand-in for
    one that gave none (compare.silent_publisher) has only some of it, and `silent`."""

    published: dict[str, int]  # group -> messages sent
    first_error: str
    elapsed_s: float
    schedule_lag: dict[str, Any]  # records.Latency.to_json: t_pub - t_plan
    t0_ns: int  # the schedule's start: the run's time zero
    loop_lag: dict[str, Any]
    timeline: dict[str, Any]  # timeline.Recorder.to_wire
    link: list[list[int]]  # broker.link.LinkWatch rows: [t_send_ns, amqp rtt ns, tcp rtt ns]
    silent: bool


class NodeResult(TypedDict):
    """What a node's `result` event carries (Node.result)."""

    node: str
    handled: int
    untraced: int
    filtered: int
    stalls: int
    unacked_max: int
    in_hand_at_end: int  # received, not yet handled, when it was stopped
    prefetch: int
    busy_ratio: dict[str, float]  # consumer -> share of the run it was busy
    loop_lag: dict[str, Any]
    loop_worst: dict[str, Any]  # the longest the loop could not run, and the CPU share then
    loop_cpu: dict[str, Any]  # the loop thread's CPU in windows: loop.CpuWindows.to_json
    fanout: dict[str, dict[str, Any]]  # group -> records.HopSet.to_json of the fanout hop
    emits: dict[str, list[list[int]]]  # group -> [seq, ns waited in the backlog, fan-out ns]
    timeline: dict[str, Any]
    gc: dict[str, Any]
    mq_split: dict[str, Any]  # records.HopSet.to_json: before-broker, in-broker, after-broker
    profile: dict[str, Any]  # profile.LoopProfiler.summary: what the loop spent its time on
    broker_stamps_unreadable: int
    link: list[list[int]]  # broker.link.LinkWatch rows of the connection it consumes on
    connections: dict[str, Any]  # watch.connections.ConnectionWatch.to_json: held, and why each ended
    heartbeats: NotRequired[dict[str, Any]]  # figures.HeartbeatFigures.to_json (absent: not profiled)


class SwarmResult(SwarmProgress, total=False):
    """What a swarm's `result` event carries (Swarm.result); compare's stand-in for one
    that gave none (compare.silent_swarm) has only some of it, and `silent`."""

    untraced: int
    untraced_reasons: dict[str, int]
    misrouted: int
    reorder_max: int  # the deepest reordering below a member's highest seq the run showed
    first_error: str
    protocols: dict[str, int]  # server URL -> engine.io version
    t_recv_source: dict[str, int]  # model.STAMP_SOURCES -> deliveries
    rss_bytes: int
    groups: dict[str, GroupTallyJson]
    hops: dict[str, dict[str, Any]]  # group -> records.HopSet.to_json
    self_lag: dict[str, Any]
    samples: list[list[Any]]  # [group, seq, t_plan, t_pub, t_deq, t_emit, t_recv]
    timeline: dict[str, Any]
    messages: list[list[Any]]  # [group, seq, node, t_pub, t_deq, t_emit, receipts]
    messages_dropped: int
    silent: bool  # compare's stand-in (run.one_run.silent_swarm): it gave no result
    silent_since_ns: int  # ...and when it, or its host, was last heard (0: never)
    churned: int  # a load swarm's members that left on purpose while measuring
    stalled_ms: float  # a load swarm's loop blocked on purpose while measuring
    rejoin: dict[str, Any]  # records.Latency.to_json: from a connection lost to joined again


class Answer(TypedDict):
    """What `applied` and `refused` carry."""

    command: str
    message: NotRequired[str]


# -- commands the parent sends ---------------------------------------------------------------
@dataclass(frozen=True)
class Reset:
    """Measuring starts now: loop lag, busy ratios and the set-up's timeline are dropped."""

    name = "reset"


@dataclass(frozen=True)
class Settle:
    """Measuring ended (the drain is over): what a piece reports as the run's figures stops
    here. Stopping and tearing down (thousands of clients leaving) are not the run's."""

    name = "settle"


@dataclass(frozen=True)
class SetClock:
    """How far other pieces' clocks are ahead of this swarm's: hops that end here are put
    onto its clock (compare measures the offsets over the broker)."""

    publisher_ns: int
    nodes_ns: dict[str, int]
    name = "clock"


@dataclass(frozen=True)
class Stop:
    """Hand over the result and end."""

    name = "stop"


Command = Reset | Settle | SetClock | Stop
COMMANDS: dict[str, type[Reset | Settle | SetClock | Stop]] = {
    c.name: c for c in (Reset, Settle, SetClock, Stop)}


def command_line(command: Command) -> str:
    """The JSON line that carries a command."""
    return json.dumps({"command": command.name, **to_document(command)}, separators=(",", ":"))


def parse_command(line: str) -> Command:
    """A command from its line; a bare word (`stop`, typed by hand) is one without fields.
    CommandRefused, with why, for anything else."""
    line = line.strip()
    try:
        doc = json.loads(line) if line.startswith("{") else {"command": line}
    except ValueError as exc:
        raise CommandRefused(f"not a JSON command ({exc})") from None
    if not isinstance(doc, dict) or doc.get("command") not in COMMANDS:
        name = doc.get("command") if isinstance(doc, dict) else doc
        raise CommandRefused(f"unknown command {str(name)[:40]!r} (known: {', '.join(COMMANDS)})")
    kind = COMMANDS[doc.pop("command")]
    try:
        return from_document(kind, doc, f"the {kind.name} command")
    except SpecError as exc:
        raise CommandRefused(str(exc)) from None


# -- what starts a piece ---------------------------------------------------------------------
@dataclass(frozen=True)
class PieceSpec:
    """One piece: its role and its configuration document (NodeConfig, SwarmConfig or
    PublishConfig as to_document made it; the piece reads it back with from_document)."""

    role: PieceRole  # one of PLACED_ROLES
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"role": str(self.role), "config": self.config}

    @classmethod
    def from_json(cls, doc: object) -> PieceSpec:
        if not isinstance(doc, dict) or set(doc) != {"role", "config"}:
            raise SpecError("a piece spec is a JSON object with exactly `role` and `config`")
        if doc["role"] not in PLACED_ROLES:
            raise SpecError(f"a piece's role is one of {', '.join(PLACED_ROLES)}, "
                            f"got {str(doc['role'])[:40]!r}")
        if not isinstance(doc["config"], dict):
            raise SpecError("a piece spec's `config` must be a JSON object")
        return cls(PieceRole(doc["role"]), doc["config"])

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> PieceSpec:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except OSError as exc:
            raise SpecError(f"cannot read the piece spec {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"the piece spec {path} is not JSON ({exc})") from None


# -- documents -------------------------------------------------------------------------------
def to_document(obj: Any) -> Any:
    """A dataclass (and what it holds) as plain JSON values; LOCAL fields left out. A class
    with its own to_json (Topology) gives that."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_json"):
            return obj.to_json()
        return {f.name: to_document(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("local")}
    if isinstance(obj, StrEnum):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_document(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_document(v) for v in obj]
    return obj


def from_document(cls: type[T], doc: object, what: str, **local: Any) -> T:
    """A `cls` from its document, every field checked against the class's type hints;
    LOCAL fields come as keywords. SpecError names the first field that is wrong."""
    if not isinstance(doc, dict):
        raise SpecError(f"{what} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    travelling = {name for name, f in fields.items() if not f.metadata.get("local")}
    unknown = sorted(set(doc) - travelling)
    if unknown:
        raise SpecError(f"{what} has unknown field {unknown[0][:40]!r} "
                        f"(known: {', '.join(sorted(travelling))})")
    hints = typing.get_type_hints(cls)
    values = {name: _typed(value, hints[name], f"{what}: {name}") for name, value in doc.items()}
    missing = [name for name in travelling - set(doc)
               if fields[name].default is dataclasses.MISSING
               and fields[name].default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"{what} is missing {sorted(missing)[0]!r}")
    return cls(**values, **local)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """value, checked (and converted where JSON has no such type) against one type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(value, arg, where)
            except SpecError:
                continue
        raise SpecError(f"{where} must be {' or '.join(_kind(a) for a in args)}, got {_short(value)}")
    if hint is Any:
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise SpecError(f"{where} must be a list, got {_short(value)}")
        items = [_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where} must be an object, got {_short(value)}")
        return {str(k): _typed(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        if value not in tuple(hint):
            raise SpecError(f"{where} must be one of {', '.join(hint)}, got {_short(value)}")
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hasattr(hint, "from_json"):
            return hint.from_json(value)
        return from_document(hint, value, where)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = type(value) is int
    elif hint is float:
        ok = type(value) in (int, float) and math.isfinite(value)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise SpecError(f"{where} must be {_kind(hint)}, got {_short(value)}")
    return value


def _kind(hint: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _short(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."

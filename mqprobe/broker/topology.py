"""MQ topologies as TOML files, subscriber layouts, and the declarations both imply.

A topology says which exchanges carry a group's messages and how a node consumes them;
a layout says how many queues a node has: one for all its groups (per-node) or one per
group (per-group). Every name is prefixed per run so runs never see each other's traffic.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from aio_pika.abc import ExchangeType

from mqprobe.errors import InputError
from mqprobe.model import AckMode, ChannelMode, Concurrency, Layout, QueueType

LAYOUTS = tuple(Layout)
DEFAULT_TOPOLOGIES = ("single-topic", "per-group", "fanout", "socketio-manager")  # compare's
EXCHANGE_TYPES = (ExchangeType.TOPIC, ExchangeType.DIRECT, ExchangeType.FANOUT)
SOCKETIO_MANAGER = "socketio"
REPO_TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


class TopologyError(InputError):
    """A topology file or name that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class ConsumerKnobs:
    """How a node consumes: the knobs every run records."""

    prefetch: int = 50
    ack: AckMode = AckMode.AFTER
    channel: ChannelMode = ChannelMode.SHARED
    concurrency: Concurrency = Concurrency.SEQUENTIAL


@dataclass(frozen=True)
class QueueKnobs:
    """What matters for a queue type beyond its name ([queue] in a topology file): a
    quorum queue's delivery limit (redeliveries before it drops or dead-letters), a single
    active consumer (quorum or classic), and where a stream consumer starts reading."""

    delivery_limit: int = 0  # 0: RabbitMQ's default (none in 3.10)
    single_active_consumer: bool = False
    stream_offset: str = "next"  # next | first | last


STREAM_OFFSETS = ("next", "first", "last")


@dataclass(frozen=True)
class Topology:
    name: str
    description: str = ""
    manager: str = ""  # "socketio": python-socketio's AsyncAioPikaManager, used unchanged
    exchange_type: ExchangeType = ExchangeType.TOPIC
    exchange_name: str = "groups"  # "{group}" in it means one exchange per group
    routing_key: str = "group.{group}"
    binding_key: str = "group.{group}"
    filter_locally: bool = False  # every node gets every message and drops foreign groups
    consumer: ConsumerKnobs = field(default_factory=ConsumerKnobs)
    layouts: tuple[Layout, ...] = LAYOUTS
    source: str = ""
    queue_type: QueueType = QueueType.CLASSIC
    queue: QueueKnobs = field(default_factory=QueueKnobs)

    @property
    def exchange_per_group(self) -> bool:
        return "{group}" in self.exchange_name

    def exchange_for(self, prefix: str, group: str) -> str:
        return prefix + self.exchange_name.format(group=group)

    def exchanges(self, prefix: str, groups: list[str]) -> list[str]:
        """Every exchange this topology declares for these groups, in order, once each."""
        return list(dict.fromkeys(self.exchange_for(prefix, g) for g in groups))

    def queue_plan(self, prefix: str, layout: Layout, node_id: str,
                   groups: list[str]) -> list[tuple[str, list[str]]]:
        """The queues a node declares, each with the groups it carries; python-socketio's
        manager names its own queue (server-named, expiring), so it has none here."""
        if self.manager:
            return []
        if layout == Layout.PER_NODE:
            return [(f"{prefix}{node_id}", list(groups))]
        return [(f"{prefix}{node_id}.g{group}", [group]) for group in groups]

    def names_problem(self, prefix: str, groups: list[str], layout: Layout = Layout.PER_NODE,
                      node_id: str = "") -> str:
        """'' when every exchange and queue name the run would declare fits AMQP's 255
        bytes (with the .delay suffix a delay queue adds), else the sentence naming the
        longest: RabbitMQ refuses it mid-run, a traceback in a piece."""
        names = [f"{name}.delay" for name in self.exchanges(prefix, groups)]
        names += [queue for queue, _ in self.queue_plan(prefix, layout, node_id or "n1", groups)]
        longest = max(names, key=lambda n: len(n.encode()), default="")
        if len(longest.encode()) > 255:
            return (f"the name {longest[:40]!r}... would be {len(longest.encode())} bytes: "
                    "RabbitMQ allows at most 255 (shorten --prefix)")
        return ""

    def routing_key_for(self, group: str) -> str:
        return self.routing_key.format(group=group)

    def binding_key_for(self, group: str) -> str:
        return self.binding_key.format(group=group)

    def with_knobs(self, **overrides: object) -> Topology:
        """A copy with some consumer knobs overridden (None leaves a knob as it is)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        if self.manager:
            raise TopologyError(
                f"{self.name}: consumer knobs are fixed by python-socketio's manager "
                "(prefetch 1, ack after handling); they cannot be overridden"
            )
        knobs = _checked({**asdict(self.consumer), **changes}, self.source or self.name)
        changed = replace(self, consumer=knobs)
        if problem := _queue_type_problem(changed):
            raise TopologyError(f"{self.name}: {problem}")
        return changed

    def queue_arguments(self) -> tuple[dict, dict]:
        """(declare options, consume arguments) for the run's queues of this type. A classic
        queue goes when its node does (auto-delete); quorum queues and streams must be
        durable and cannot auto-delete, so compare deletes them by name at the end (as it
        deletes everything a run declared). A stream is read from the next message on."""
        arguments: dict = {}
        if self.queue.single_active_consumer:
            arguments["x-single-active-consumer"] = True
        if self.queue.delivery_limit:
            arguments["x-delivery-limit"] = self.queue.delivery_limit
        if self.queue_type == QueueType.CLASSIC:
            return {"auto_delete": True, **({"arguments": arguments} if arguments else {})}, {}
        declare = {"durable": True,
                   "arguments": {"x-queue-type": self.queue_type.value, **arguments}}
        return declare, ({"x-stream-offset": self.queue.stream_offset}
                         if self.queue_type == QueueType.STREAM else {})

    def with_queue_type(self, queue_type: QueueType) -> Topology:
        """This topology on another queue type, named for it ('single-topic.quorum'): a row
        of its own in the table."""
        if queue_type == self.queue_type:
            return self
        changed = replace(self, queue_type=queue_type, name=f"{self.name}.{queue_type.value}")
        if problem := _queue_type_problem(changed):
            raise TopologyError(f"{self.name}: {problem}")
        return changed

    def to_json(self) -> dict:
        """The topology as its TOML table and where it came from: what from_json (through
        parse, every field checked again) reads back; a piece gets it whole, no file."""
        table: dict = {"name": self.name, "description": self.description,
                       "layouts": list(self.layouts)}
        if self.manager:
            table |= {"manager": self.manager, "exchange": {"name": self.exchange_name}}
        else:
            table |= {"exchange": {"type": self.exchange_type.value, "name": self.exchange_name,
                                   "routing_key": self.routing_key, "binding_key": self.binding_key,
                                   "filter_locally": self.filter_locally},
                      "consumer": asdict(self.consumer), "queue_type": self.queue_type.value,
                      "queue": asdict(self.queue)}
        return {"source": self.source, "table": table}

    @classmethod
    def from_json(cls, doc: object) -> Topology:
        if not (isinstance(doc, dict) and isinstance(doc.get("source"), str)
                and isinstance(doc.get("table"), dict)):
            raise TopologyError("a topology document is {\"source\": text, \"table\": {...}}")
        return parse(doc["table"], doc["source"])

    def describe_knobs(self) -> dict:
        return {
            "exchange_type": (ExchangeType.FANOUT if self.manager else self.exchange_type).value,
            "exchange_per_group": self.exchange_per_group,
            "queue_type": self.queue_type.value,
            **{f"queue_{k}": v for k, v in asdict(self.queue).items()
               if v != getattr(QueueKnobs(), k)},
            "filter_locally": self.filter_locally or bool(self.manager),
            "prefetch": self.consumer.prefetch,
            "ack": self.consumer.ack,
            "channel": self.consumer.channel,
            "concurrency": self.consumer.concurrency,
        }


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MQPROBE_TOPOLOGIES"):
        dirs.append(Path(os.environ["MQPROBE_TOPOLOGIES"]))
    dirs += [Path.cwd() / "topologies", REPO_TOPOLOGIES]
    return list(dict.fromkeys(dirs))


def available() -> list[str]:
    names: list[str] = []
    for folder in search_dirs():
        if folder.is_dir():
            names += sorted(p.stem for p in folder.glob("*.toml"))
    return list(dict.fromkeys(names))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def resolve(name_or_path: str) -> Topology:
    """A topology by name (a file in topologies/) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if path.is_dir():
            raise TopologyError(f"topology file {name_or_path} is a directory, not a TOML file")
        if not path.is_file():
            raise TopologyError(f"topology file {name_or_path} does not exist")
        return load(path)
    for folder in search_dirs():
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return load(candidate)
    known = ", ".join(available()) or "none found"
    raise TopologyError(f"unknown topology {name_or_path!r} (known: {known})")


MAX_TOPOLOGY_BYTES = 1 << 20  # a topology is a few lines; a megabyte is not one


def load(path: Path) -> Topology:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOPOLOGY_BYTES + 1)
        if len(raw) > MAX_TOPOLOGY_BYTES:
            raise TopologyError(f"{path}: over {MAX_TOPOLOGY_BYTES >> 20} MiB, not a topology file")
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TopologyError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise TopologyError(f"{path}: nested too deeply to be a topology") from None
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read ({exc.strerror})") from None
    return parse(data, str(path))


def parse(data: dict, source: str) -> Topology:
    """Validate a topology table; every error names the file and the field."""
    known_top = {"name", "description", "manager", "exchange", "consumer", "layouts",
                 "queue_type", "queue"}
    _no_unknown(data, known_top, source, "")
    name = _get(data, "name", str, source, "", required=True)
    if not _NAME.fullmatch(name):
        # it names files (logs, HDR logs), queues and table rows: no paths, no markup
        raise TopologyError(f"{source}: name {name[:40]!r} must be 1-64 characters of "
                            "A-Z a-z 0-9 _ . - and start with a letter or digit")
    manager = _get(data, "manager", str, source, "", default="")
    if manager and manager != SOCKETIO_MANAGER:
        raise TopologyError(f"{source}: manager must be {SOCKETIO_MANAGER!r}, got {manager!r}")
    exchange = _get(data, "exchange", dict, source, "", default={})
    consumer = _get(data, "consumer", dict, source, "", default={})
    _no_unknown(exchange, {"type", "name", "routing_key", "binding_key", "filter_locally"},
                source, "exchange.")
    _no_unknown(consumer, {"prefetch", "ack", "channel", "concurrency"}, source, "consumer.")
    layouts = tuple(_get(data, "layouts", list, source, "", default=list(LAYOUTS)))
    for layout in layouts:
        if layout not in LAYOUTS:
            raise TopologyError(f"{source}: layouts has {layout!r}; choose from {', '.join(LAYOUTS)}")
    queue_type = _get(data, "queue_type", str, source, "", default="classic")
    if queue_type not in QueueType._value2member_map_:
        raise TopologyError(f"{source}: queue_type must be one of "
                            f"{', '.join(QueueType)}, got {queue_type!r}")
    if manager:
        if consumer:
            raise TopologyError(f"{source}: [consumer] is fixed by the socketio manager; remove it")
        if queue_type != QueueType.CLASSIC or "queue" in data:
            raise TopologyError(f"{source}: queue_type and [queue] are fixed by the socketio "
                                "manager (it declares its own classic queue); remove them")
        return Topology(
            name=name,
            description=_get(data, "description", str, source, "", default=""),
            manager=manager,
            exchange_type=ExchangeType.FANOUT,
            exchange_name=_get(exchange, "name", str, source, "exchange.", default="socketio"),
            routing_key="*",
            binding_key="",
            filter_locally=True,
            consumer=ConsumerKnobs(prefetch=1),
            layouts=(Layout.PER_NODE,),
            source=source,
        )
    exchange_type = _get(exchange, "type", str, source, "exchange.", default="topic")
    if exchange_type not in EXCHANGE_TYPES:
        raise TopologyError(f"{source}: exchange.type must be one of {', '.join(EXCHANGE_TYPES)}, "
                            f"got {exchange_type!r}")
    exchange_type = ExchangeType(exchange_type)
    knobs = _checked({
        "prefetch": _get(consumer, "prefetch", int, source, "consumer.", default=50),
        "ack": _get(consumer, "ack", str, source, "consumer.", default="after"),
        "channel": _get(consumer, "channel", str, source, "consumer.", default="shared"),
        "concurrency": _get(consumer, "concurrency", str, source, "consumer.",
                            default="sequential"),
    }, source)
    topology = Topology(
        name=name,
        description=_get(data, "description", str, source, "", default=""),
        exchange_type=exchange_type,
        exchange_name=_get(exchange, "name", str, source, "exchange.", default="groups"),
        routing_key=_get(exchange, "routing_key", str, source, "exchange.", default="group.{group}"),
        binding_key=_get(exchange, "binding_key", str, source, "exchange.",
                         default="" if exchange_type == ExchangeType.FANOUT else "group.{group}"),
        filter_locally=_get(exchange, "filter_locally", bool, source, "exchange.",
                            default=exchange_type == ExchangeType.FANOUT),
        consumer=knobs,
        layouts=tuple(Layout(layout) for layout in layouts),
        source=source,
        queue_type=QueueType(queue_type),
        queue=_queue_knobs(_get(data, "queue", dict, source, "", default={}), source),
    )
    if problem := _queue_type_problem(topology):
        raise TopologyError(f"{source}: {problem}")
    for template_field in ("exchange_name", "routing_key", "binding_key"):
        template = getattr(topology, template_field)
        what = f"{source}: exchange.{template_field.removeprefix('exchange_')}"
        if not _only_group_placeholders(template):
            raise TopologyError(f"{what} {template!r} may only use the placeholder "
                                "{group}, as it is (no attribute, index or format)")
        longest = template.format(group="g" * 64)  # a group id is at most 64 characters
        # AMQP short strings (exchange names, routing keys) hold at most 255 bytes; around
        # exchange names mqprobe puts a prefix (mqprobe.<8 hex>.) and maybe a .delay suffix
        limit = 225 if template_field == "exchange_name" else 255
        if len(longest.encode()) > limit:
            raise TopologyError(f"{what} is {len(longest.encode())} bytes with a 64-character "
                                f"group id: AMQP allows at most {limit}")
    if (exchange_type == ExchangeType.FANOUT and not topology.exchange_per_group
            and not topology.filter_locally):
        raise TopologyError(f"{source}: exchange.filter_locally must be true for one shared fanout "
                            "exchange (every node receives every group's messages)")
    return topology


def _queue_knobs(table: dict, source: str) -> QueueKnobs:
    _no_unknown(table, {"delivery_limit", "single_active_consumer", "stream_offset"}, source,
                "queue.")
    knobs = QueueKnobs(
        delivery_limit=_get(table, "delivery_limit", int, source, "queue.", default=0),
        single_active_consumer=_get(table, "single_active_consumer", bool, source, "queue.",
                                    default=False),
        stream_offset=_get(table, "stream_offset", str, source, "queue.", default="next"))
    if type(knobs.delivery_limit) is not int or not 0 <= knobs.delivery_limit <= 1_000_000:
        raise TopologyError(f"{source}: queue.delivery_limit must be an integer from 0 to "
                            f"1000000, got {knobs.delivery_limit!r}")
    if knobs.stream_offset not in STREAM_OFFSETS:
        raise TopologyError(f"{source}: queue.stream_offset must be one of "
                            f"{', '.join(STREAM_OFFSETS)}, got {knobs.stream_offset!r}")
    return knobs


def _queue_type_problem(topology: Topology) -> str:
    """A stream is read with acknowledgements (RabbitMQ refuses auto-ack on one); a delivery
    limit is a quorum queue's, a single active consumer not a stream's (3.10)."""
    kind, queue = topology.queue_type, topology.queue
    if kind == QueueType.STREAM and topology.consumer.ack == AckMode.AUTO:
        return "a stream queue needs consumer.ack 'after' or 'before', not 'auto'"
    if queue.delivery_limit and kind != QueueType.QUORUM:
        return f"queue.delivery_limit is a quorum queue's, not a {kind.value} queue's"
    if queue.single_active_consumer and kind == QueueType.STREAM:
        return "queue.single_active_consumer is not offered for a stream over AMQP 0.9.1 here"
    return ""


def _only_group_placeholders(template: str) -> bool:
    """Every replacement field is a bare {group}: '{group.x}' or '{group[0]}' would reach
    str.format in the node and fail there, not here."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:  # an unmatched brace
        return False
    return all(name is None or (name == "group" and not spec and conversion is None)
               for _text, name, spec, conversion in fields)


def _checked(knobs: dict[str, object], source: str) -> ConsumerKnobs:
    """The knobs, each mode as its enum, once every field was checked (as a file or the
    command line gives them: plain strings)."""
    prefetch = knobs["prefetch"]
    if type(prefetch) is not int or not 0 < prefetch <= 65535:
        raise TopologyError(f"{source}: consumer.prefetch must be an integer from 1 to 65535, "
                            f"got {prefetch!r}")
    for name, mode in (("ack", AckMode), ("channel", ChannelMode), ("concurrency", Concurrency)):
        if knobs[name] not in tuple(mode):
            raise TopologyError(f"{source}: consumer.{name} must be one of "
                                f"{', '.join(mode)}, got {knobs[name]!r}")
    return ConsumerKnobs(prefetch, AckMode(str(knobs["ack"])),
                         ChannelMode(str(knobs["channel"])),
                         Concurrency(str(knobs["concurrency"])))


def _no_unknown(table: dict, known: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise TopologyError(f"{source}: unknown field {prefix}{key} "
                                f"(known: {', '.join(sorted(known))})")


_MISSING = object()


T = TypeVar("T")


def _get(table: dict, key: str, kind: type[T], source: str, prefix: str, *,
         required: bool = False, default: Any = _MISSING) -> T:
    if key not in table:
        if required or default is _MISSING:
            raise TopologyError(f"{source}: missing field {prefix}{key}")
        return cast(T, default)
    value = table[key]
    if kind is int and type(value) is not int or kind is not int and not isinstance(value, kind):
        raise TopologyError(f"{source}: field {prefix}{key} must be a {kind.__name__}, "
                            f"got {value!r}")
    return value

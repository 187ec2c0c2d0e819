"""Timestamps and the trace wire format (docs/reference.md, "The contract").

AMQP headers carry a W3C `traceparent` (so OpenTelemetry code links up) and one compact,
versioned `x-mqprobe` header: ``1;<group>;<seq>;<t_pub_ns>;<t_plan_ns>``.
The socket.io event carries one field, ``"mqprobe": [1, trace_id, group, seq, node, t_pub,
t_deq, t_emit, t_plan]``, placed first in the event's object so a client can read it
without decoding the (possibly tens of KB) message body.

Times are integer nanoseconds on CLOCK_REALTIME; the AMQP `timestamp` property is never
used (it holds whole seconds).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from random import getrandbits
from typing import Any

from mqprobe.errors import InputError
from mqprobe.model import HOP_DELIVERY, HOP_E2E, HOP_E2E_PLANNED, HOP_MQ, HOP_SERVER

WIRE_VERSION = 1
AMQP_HEADER = "x-mqprobe"
TRACEPARENT = "traceparent"
SOCKETIO_FIELD = "mqprobe"
FRAME_MARKER = '{"mqprobe":['


MAX_SKEW_MS = 86_400_000.0  # a day: any pretend skew beyond that is a typo


def _skew_from_env() -> tuple[int, str]:
    """MQPROBE_CLOCK_SKEW_MS in ns, and a sentence when it is malformed (then: no skew; the
    CLI refuses to run, an embedding server is never broken by it)."""
    raw = os.environ.get("MQPROBE_CLOCK_SKEW_MS", "").strip()
    problem = (f"MQPROBE_CLOCK_SKEW_MS must be a number of milliseconds within "
               f"+-{MAX_SKEW_MS:.0f}, got {raw[:40]!r}")
    if not raw:
        return 0, ""
    try:
        value = float(raw)
    except ValueError:
        return 0, problem
    if not math.isfinite(value) or abs(value) > MAX_SKEW_MS:
        return 0, problem
    return round(value * 1e6), ""


# CLOCK_REALTIME, comparable across processes and (synced) hosts. MQPROBE_CLOCK_SKEW_MS makes
# a process pretend its clock is off, to try mqprobe's offset estimation on one machine.
CLOCK_SKEW_NS, CLOCK_SKEW_PROBLEM = _skew_from_env()
now_ns = time.time_ns if not CLOCK_SKEW_NS else (lambda: time.time_ns() + CLOCK_SKEW_NS)

_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# W3C Trace Context: version 00 is exactly four fields; a later version may append more
# after a dash, which a reader of version 00 ignores (https://www.w3.org/TR/trace-context/)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.DOTALL)
_DIGITS = re.compile(r"[0-9]{1,20}")
# the common cases in one match each (a message costs one regex, not one per field): a
# header that does not match goes the long way, which says what is wrong with it
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_AMQP_V1 = re.compile(r"1;([A-Za-z0-9_.:\-]{1,64});([0-9]{1,20});([0-9]{1,20});([0-9]{1,20})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


class TraceFormatError(InputError):
    """A trace header or field that is malformed or foreign; the message says why."""


@dataclass(slots=True)
class PublishStamp:
    """What the publisher stamps on a message: who it is for and when it left."""

    trace_id: str
    group: str
    seq: int
    t_pub: int
    t_plan: int
    parent_span: str = ""


@dataclass(slots=True)
class DeliveryTrace:
    """What a client reads back from the socket.io event: every stamp along the path."""

    trace_id: str
    group: str
    seq: int
    node: str
    t_pub: int
    t_deq: int
    t_emit: int
    t_plan: int

    def hops(self, t_recv: int) -> tuple[tuple[str, int], ...]:
        """Each hop in ns for this delivery received at t_recv (the contract's definitions).

        A stamp of 0 was not taken (a server with no mqprobe code, reached by a probe in its
        own manager's format): the hops that need it are left out, never computed from 0."""
        if self.t_deq and self.t_emit:  # every stamp taken: the swarm's hot path
            return ((HOP_MQ, self.t_deq - self.t_pub), (HOP_SERVER, self.t_emit - self.t_deq),
                    (HOP_DELIVERY, t_recv - self.t_emit), (HOP_E2E, t_recv - self.t_pub),
                    (HOP_E2E_PLANNED, t_recv - self.t_plan))
        ends = ((HOP_E2E, t_recv - self.t_pub), (HOP_E2E_PLANNED, t_recv - self.t_plan))
        taken = []
        if self.t_deq:
            taken.append((HOP_MQ, self.t_deq - self.t_pub))
        if self.t_emit:
            taken.append((HOP_DELIVERY, t_recv - self.t_emit))
        return (*taken, *ends)

    @property
    def server_stamped(self) -> bool:
        """Whether a server stamped this message (dequeue and emit), not only its publisher."""
        return bool(self.t_deq and self.t_emit)

    def on_clock(self, node_ahead_ns: int, publisher_ahead_ns: int) -> DeliveryTrace:
        """This trace with its stamps moved onto the receiver's clock (see mqprobe.clocks);
        a stamp that was not taken stays 0."""
        return DeliveryTrace(self.trace_id, self.group, self.seq, self.node,
                             self.t_pub - publisher_ahead_ns,
                             self.t_deq and self.t_deq - node_ahead_ns,
                             self.t_emit and self.t_emit - node_ahead_ns,
                             self.t_plan - publisher_ahead_ns)


def new_trace_id() -> str:
    """32 random lowercase hex digits, never all zero (W3C). random, as OpenTelemetry's own
    id generator uses: an id needs to be unique, not secret, and os.urandom's system call
    cost twice as much a message (random reseeds in a forked child)."""
    return f"{getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{getrandbits(64) or 1:016x}"


_GOOD_IDS: set[str] = set()  # ids already checked (groups, nodes): a set lookup, not a regex
_GOOD_IDS_MAX = 65_536  # past this, ids are checked each time (memory stays bounded)


def check_id(kind: str, value: str) -> str:
    """Group and node ids travel inside headers: keep them short and separator-free."""
    # only a plain str is looked up: a list would not hash, a str subclass could claim to
    # equal anything
    if type(value) is str and value in _GOOD_IDS:
        return value
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise TraceFormatError(f"{kind} {_short(value)} must be 1-64 characters of "
                               "A-Z a-z 0-9 _ . : -")
    if len(_GOOD_IDS) < _GOOD_IDS_MAX:
        _GOOD_IDS.add(value)
    return value


def _short(value: object) -> str:
    """A bounded repr for messages: a hostile 4 MB id must not live on in a counter key."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- W3C traceparent ---------------------------------------------------------------------
def parse_traceparent(value: object) -> tuple[str, str, str]:
    """(trace_id, parent_span_id, flags) of a W3C traceparent, or TraceFormatError."""
    if type(value) is str and (match := _TRACEPARENT_00.fullmatch(value)):
        trace_id, span_id, flags = match.groups()
        if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
            return trace_id, span_id, flags
    text = _text(value, TRACEPARENT)
    match = _TRACEPARENT.fullmatch(text.strip())
    if not match:
        raise TraceFormatError(f"traceparent {_short(text)} is not version-traceid-spanid-flags "
                               "in lowercase hex")
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16 or (
            version == "00" and rest):
        raise TraceFormatError(f"traceparent {_short(text)} holds an invalid version, a zero id "
                               "or extra fields in version 00")
    return trace_id, span_id, flags


def format_traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


# -- AMQP headers ------------------------------------------------------------------------
def encode_amqp_headers(stamp: PublishStamp, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headers for an outgoing message. An existing valid traceparent is continued."""
    out = dict(headers or {})
    trace_id, flags = stamp.trace_id, "01"
    existing = out.get(TRACEPARENT)
    if existing is not None:
        try:
            trace_id, _parent, flags = parse_traceparent(existing)
            stamp.trace_id = trace_id
        except TraceFormatError:
            pass  # a broken parent is replaced, not propagated
    out[TRACEPARENT] = format_traceparent(trace_id, new_span_id(), flags)
    out[AMQP_HEADER] = amqp_header(stamp.group, stamp.seq, stamp.t_pub, stamp.t_plan)
    return out


def amqp_header(group: str, seq: int, t_pub: int, t_plan: int) -> str:
    """The x-mqprobe header's value: `1;<group>;<seq>;<t_pub_ns>;<t_plan_ns>`."""
    return f"{WIRE_VERSION};{group};{seq};{t_pub};{t_plan}"


# RabbitMQ's own stamps, in ms on the broker's clock, when its message interceptors are on
# (3.12+): `timestamp_in_ms` as a message enters (message_interceptors.incoming.
# set_header_timestamp), `x-opt-rabbitmq-sent-time` as it is sent to a consumer (4.x,
# message_interceptors.outgoing.timestamp); an AMQP 0.9.1 consumer sees both as headers.
BROKER_IN_HEADER = "timestamp_in_ms"
BROKER_SENT_HEADER = "x-opt-rabbitmq-sent-time"


def broker_times(headers: dict[str, Any]) -> tuple[int, int] | None:
    """(arrived, sent) in ns from RabbitMQ's stamps (sent 0 when only the arrival is
    stamped); None when there are none, or they are not whole milliseconds a clock could
    read (a foreign or garbled header says nothing, and is not taken for one)."""
    arrived = headers.get(BROKER_IN_HEADER)
    if arrived is None:
        return None
    sent = headers.get(BROKER_SENT_HEADER, 0)
    for value in (arrived, sent):
        if type(value) is not int or not 0 <= value < 2**53:
            return None
    return arrived * 1_000_000, sent * 1_000_000


def decode_amqp_headers(headers: dict[str, Any] | None) -> PublishStamp:
    """The publisher's stamp from a consumed message's headers, or TraceFormatError."""
    if not isinstance(headers, Mapping):
        raise TraceFormatError(f"headers are a {type(headers).__name__}, not a mapping"
                               if headers is not None else f"no {AMQP_HEADER} header")
    if AMQP_HEADER not in headers:
        raise TraceFormatError(f"no {AMQP_HEADER} header")
    raw = headers[AMQP_HEADER]
    if type(raw) is str and (match := _AMQP_V1.fullmatch(raw)):
        group, seq, t_pub, t_plan = match.groups()
        seq, t_pub, t_plan = int(seq), int(t_pub), int(t_plan)
    else:
        group, seq, t_pub, t_plan = _amqp_fields(_text(raw, AMQP_HEADER))
    trace_id, parent = "", ""
    if TRACEPARENT in headers:
        # W3C: an invalid traceparent is ignored (a new trace starts), the message is not
        try:
            trace_id, parent, _flags = parse_traceparent(headers[TRACEPARENT])
        except TraceFormatError:
            pass
    return PublishStamp(trace_id or new_trace_id(), group, seq, t_pub, t_plan, parent)


def _amqp_fields(text: str) -> tuple[str, int, int, int]:
    """group, seq, t_pub, t_plan of an x-mqprobe header the quick match refused, or the
    TraceFormatError that says why."""
    parts = text.split(";", 5)
    if parts[0] != str(WIRE_VERSION):
        raise TraceFormatError(f"{AMQP_HEADER} version {_short(parts[0])} is not {WIRE_VERSION}")
    if len(parts) != 5:
        raise TraceFormatError(f"{AMQP_HEADER} has {len(parts)} fields, expected 5")
    group = check_id("group", parts[1])
    seq, t_pub, t_plan = (_nonneg_int(name, raw) for name, raw in
                          zip(("seq", "t_pub", "t_plan"), parts[2:], strict=True))
    return group, seq, t_pub, t_plan


# -- socket.io field ---------------------------------------------------------------------
def socketio_field(stamp: PublishStamp, node: str, t_deq: int, t_emit: int) -> list[Any]:
    return [WIRE_VERSION, stamp.trace_id, stamp.group, stamp.seq, node,
            stamp.t_pub, t_deq, t_emit, stamp.t_plan]


def complete_socketio_field(field: list[Any], node: str, t_deq: int, t_emit: int) -> None:
    """Fill in the node's stamps on a field its publisher made (socketio-manager's case)."""
    field[4], field[6], field[7] = node, t_deq, t_emit


def decode_socketio_field(value: object) -> DeliveryTrace:
    """The stamps of a received event's `mqprobe` field, or TraceFormatError."""
    if not isinstance(value, list) or not value:
        raise TraceFormatError(f"{SOCKETIO_FIELD} field is not a non-empty list")
    if type(value[0]) is not int or value[0] != WIRE_VERSION:
        raise TraceFormatError(f"{SOCKETIO_FIELD} field version {_short(value[0])} is not "
                               f"{WIRE_VERSION}")
    if len(value) != 9:
        raise TraceFormatError(f"{SOCKETIO_FIELD} field has {len(value)} items, expected 9")
    _v, trace_id, group, seq, node, t_pub, t_deq, t_emit, t_plan = value
    if not isinstance(trace_id, str) or not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        raise TraceFormatError("trace id is not 32 lowercase hex digits")
    check_id("group", group)
    check_id("node", node)
    for name, number in (("seq", seq), ("t_pub", t_pub), ("t_deq", t_deq),
                         ("t_emit", t_emit), ("t_plan", t_plan)):
        if type(number) is not int or number < 0:
            raise TraceFormatError(f"{name} {_short(number)} is not a non-negative integer")
    return DeliveryTrace(trace_id, group, seq, node, t_pub, t_deq, t_emit, t_plan)


def field_from_frame(frame: str) -> list[Any] | None:
    """The `mqprobe` list out of a socket.io EVENT frame text, reading only its first bytes.

    Returns None when the frame holds no field at the expected place.
    """
    start = frame.find(FRAME_MARKER, 0, 64)
    if start < 0:
        return None
    start += len(FRAME_MARKER) - 1
    end = frame.find("]", start)
    if end < 0:
        return None
    try:
        field = json.loads(frame[start:end + 1])
        return field if isinstance(field, list) else None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return None


def _text(value: object, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise TraceFormatError(f"{name} is not ASCII") from None
    if isinstance(value, str):
        return value
    raise TraceFormatError(f"{name} is a {type(value).__name__}, not text")


def _nonneg_int(name: str, raw: str) -> int:
    # ASCII digits only: str.isdigit() accepts '²', which int() refuses
    if not _DIGITS.fullmatch(raw):
        raise TraceFormatError(f"{name} {_short(raw)} is not a non-negative integer")
    return int(raw)

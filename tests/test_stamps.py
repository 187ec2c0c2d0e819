import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqprobe.stamps import (
    AMQP_HEADER,
    TRACEPARENT,
    PublishStamp,
    TraceFormatError,
    decode_amqp_headers,
    decode_socketio_field,
    encode_amqp_headers,
    field_from_frame,
    new_trace_id,
    parse_traceparent,
    socketio_field,
)


def _stamp(**overrides) -> PublishStamp:
    values = dict(trace_id=new_trace_id(), group="17", seq=42, t_pub=1_700_000_000_123_456_789,
                  t_plan=1_700_000_000_123_000_000)
    values.update(overrides)
    return PublishStamp(**values)


def test_amqp_headers_round_trip():
    stamp = _stamp()
    headers = encode_amqp_headers(stamp)
    back = decode_amqp_headers(headers)
    assert (back.trace_id, back.group, back.seq, back.t_pub, back.t_plan) == (
        stamp.trace_id, "17", 42, stamp.t_pub, stamp.t_plan)
    trace_id, span, flags = parse_traceparent(headers[TRACEPARENT])
    assert trace_id == stamp.trace_id and len(span) == 16 and flags == "01"


def test_headers_as_bytes_decode_too():
    headers = {k: v.encode() for k, v in encode_amqp_headers(_stamp()).items()}
    assert decode_amqp_headers(headers).seq == 42


def test_existing_traceparent_is_continued_not_overwritten():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = encode_amqp_headers(_stamp(), {TRACEPARENT: parent, "other": "kept"})
    trace_id, span, _ = parse_traceparent(headers[TRACEPARENT])
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span != "00f067aa0ba902b7"  # a new span of the same trace
    assert headers["other"] == "kept"
    assert decode_amqp_headers(headers).trace_id == trace_id


@pytest.mark.parametrize("headers, reason", [
    (None, "no x-mqprobe"),
    ({AMQP_HEADER: "2;1;0;5;5"}, "version"),
    ({AMQP_HEADER: "1;1;0;5"}, "expected 5"),
    ({AMQP_HEADER: "1;1;-3;5;5"}, "seq"),
    ({AMQP_HEADER: "1;1;0;soon;5"}, "t_pub"),
    ({AMQP_HEADER: "1;a b;0;5;5"}, "group"),
    ({AMQP_HEADER: b"\xff\xfe"}, "not ASCII"),
    ({AMQP_HEADER: 12}, "not text"),
    ({AMQP_HEADER: "1;1;²;5;5"}, "seq"),
    (["not", "a", "mapping"], "not a mapping"),
])
def test_malformed_amqp_headers_are_rejected_with_a_reason(headers, reason):
    with pytest.raises(TraceFormatError, match=reason):
        decode_amqp_headers(headers)


@pytest.mark.parametrize("value, reason", [
    ("00-xyz-01", "traceparent"),
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "zero"),
])
def test_an_invalid_traceparent_is_refused_and_its_trace_restarted(value, reason):
    with pytest.raises(TraceFormatError, match=reason):
        parse_traceparent(value)
    stamp = decode_amqp_headers({AMQP_HEADER: "1;1;0;5;5", TRACEPARENT: value})
    assert len(stamp.trace_id) == 32 and stamp.trace_id != "0" * 32 and stamp.parent_span == ""


def test_socketio_field_round_trip_through_a_frame():
    stamp = _stamp()
    field = socketio_field(stamp, "n1", t_deq=stamp.t_pub + 10, t_emit=stamp.t_pub + 20)
    import json
    frame = "42" + json.dumps(["message", {"mqprobe": field, "group": "17", "body": "x" * 5000}],
                              separators=(",", ":"))
    trace = decode_socketio_field(field_from_frame(frame))
    assert (trace.node, trace.seq, trace.t_deq - trace.t_pub, trace.t_emit - trace.t_pub) == (
        "n1", 42, 10, 20)


@pytest.mark.parametrize("value, reason", [
    (None, "not a non-empty list"),
    ([2, "a" * 32, "1", 0, "n1", 1, 1, 1, 1], "version"),
    ([1, "a" * 32, "1", 0, "n1", 1, 1, 1], "expected 9"),
    ([1, "XYZ", "1", 0, "n1", 1, 1, 1, 1], "trace id"),
    ([1, "a" * 32, "1", -1, "n1", 1, 1, 1, 1], "seq"),
    ([1, "a" * 32, "1", 0, "n1", 1, 1.5, 1, 1], "t_deq"),
    ([1, "a" * 32, "1", 0, "", 1, 1, 1, 1], "node"),
])
def test_malformed_socketio_field_is_rejected_with_a_reason(value, reason):
    with pytest.raises(TraceFormatError, match=reason):
        decode_socketio_field(value)


def test_frame_without_field_gives_none():
    assert field_from_frame('42["message",{"text":"hi"}]') is None
    assert field_from_frame('42["message",{"mqprobe":[1,"a"') is None


def test_hops_whose_stamps_were_not_taken_are_absent_never_numbers():
    """0 is a stamp no server took (a probe in python-socketio's manager format)."""
    from mqprobe.stamps import DeliveryTrace

    unstamped = DeliveryTrace("a" * 32, "7", 1, "-", 1_000, 0, 0, 900)
    assert dict(unstamped.hops(5_000)) == {"e2e": 4_000, "e2e_planned": 4_100}
    assert not unstamped.server_stamped
    shifted = unstamped.on_clock(node_ahead_ns=300, publisher_ahead_ns=100)
    assert (shifted.t_deq, shifted.t_emit, shifted.t_pub) == (0, 0, 900)  # 0 stays not taken
    stamped = DeliveryTrace("a" * 32, "7", 1, "n1", 1_000, 1_500, 1_700, 900)
    hops = dict(stamped.hops(2_000))
    assert stamped.server_stamped and hops["mq"] + hops["server"] + hops["delivery"] == hops["e2e"]
    emitted_only = DeliveryTrace("a" * 32, "7", 1, "n1", 1_000, 0, 1_700, 900)
    assert set(dict(emitted_only.hops(2_000))) == {"delivery", "e2e", "e2e_planned"}


# the quick matches (one regex a header) must accept exactly what the long way accepts, and
# read the same values: valid headers, and each with one character changed, put in or taken
# out (the near misses a quick check gets wrong)
_ODD = st.sampled_from(list("0a9fAFG-; :_.\n²١x"))


def _near_misses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def change(args: tuple[str, int, str, str]) -> str:
        text, at, odd, how = args
        at %= len(text) + 1
        return (text[:at] + odd + text[at + 1:] if how == "replace" else
                text[:at] + odd + text[at:] if how == "insert" else text[:at] + text[at + 1:])

    return valid | st.tuples(valid, st.integers(0, 80), _ODD,
                             st.sampled_from(["replace", "insert", "delete"])).map(change)


# ids and numbers up to the lengths allowed and one past (64 characters, 20 digits)
_GROUP = st.text(alphabet="azAZ09_.:-", min_size=1, max_size=3) | st.text(
    alphabet="azAZ09_.:-", min_size=63, max_size=65)
_NUMBER = st.integers(0, 10**21).map(str) | st.integers(10**19 - 5, 10**20 + 5).map(str)


def _header_both_ways(text: str) -> tuple[tuple | None, tuple | None]:
    """(group, seq, t_pub, t_plan) as decode_amqp_headers reads an x-mqprobe header (the
    quick match first) and as the long way does alone; None for a refusal."""
    from mqprobe.stamps import _amqp_fields

    try:
        long_way = _amqp_fields(text)
    except TraceFormatError:
        long_way = None
    try:
        stamp = decode_amqp_headers({AMQP_HEADER: text})
        quick = (stamp.group, stamp.seq, stamp.t_pub, stamp.t_plan)
    except TraceFormatError:
        quick = None
    return quick, long_way


@settings(max_examples=600, deadline=None)
@given(_near_misses(st.builds("1;{};{};{};{}".format, _GROUP, _NUMBER, _NUMBER, _NUMBER)))
def test_the_quick_header_match_agrees_with_the_long_way(text):
    quick, long_way = _header_both_ways(text)
    assert quick == long_way


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdef", min_size=size, max_size=size) | st.just("0" * size)


@settings(max_examples=600, deadline=None)
@given(_near_misses(st.builds("{}-{}-{}-{}".format, st.sampled_from(["00", "01", "ff"]),
                              _hex(32), _hex(16), _hex(2))))
def test_the_quick_traceparent_match_agrees_with_the_long_way(text):
    from mqprobe import stamps

    def long_way(value):  # the general pattern alone, as before the quick match
        quick, stamps._TRACEPARENT_00 = stamps._TRACEPARENT_00, re.compile(r"(?!)")
        try:
            return stamps.parse_traceparent(value)
        except TraceFormatError:
            return None
        finally:
            stamps._TRACEPARENT_00 = quick

    try:
        quick = parse_traceparent(text)
    except TraceFormatError:
        quick = None
    assert quick == long_way(text)
    assert parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")


@pytest.mark.parametrize("text", [
    "1;" + "g" * 64 + ";1;2;3", "1;" + "g" * 65 + ";1;2;3", "1;g;" + "9" * 20 + ";2;3",
    "1;g;" + "9" * 21 + ";2;3", "1;g;1;2;" + "9" * 21, "1;g;1;" + "9" * 21 + ";3",
    "1;g;1;\u0661;3", "1;g;1;2;\u00b2", "1;g;1;2;3;", "1;g;1;2;3\n",
    "1;g;+1;2;3", "1;g h;1;2;3", "1;;1;2;3"])
def test_the_quick_header_match_on_the_edges_the_long_way_draws(text):
    quick, long_way = _header_both_ways(text)
    assert quick == long_way


@pytest.mark.parametrize(("text", "valid"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", False),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", False),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", True),
    (" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", True),
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", False)])
def test_the_quick_traceparent_match_on_the_edges(text, valid):
    try:
        parse_traceparent(text)
        parsed = True
    except TraceFormatError:
        parsed = False
    assert parsed is valid

"""The embed API never raises into a host server and stays bounded, whatever arrives.

Property-based (Hypothesis): AMQP header dicts (valid, near-valid and random), W3C
traceparent variants, socket.io fields and frames. No broker: these are pure parsers.
"""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqprobe.embed import Tracer
from mqprobe.stamps import (
    AMQP_HEADER,
    TRACEPARENT,
    decode_amqp_headers,
    decode_socketio_field,
    field_from_frame,
    parse_traceparent,
)

# examples per property: the profile's (tests/conftest.py: 1,000 in the suite, 10,000 with
# HYPOTHESIS_PROFILE=thorough); a failure found once is replayed from .hypothesis first
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                    st.binary(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
numbers = st.one_of(st.integers(min_value=-5, max_value=10**22).map(str),
                    st.sampled_from(["²", "١٢", "1e3", "0x10", " 1", "1 ", "", "-0", "+1"]),
                    st.text(max_size=6))
groups = st.one_of(st.text(max_size=70), st.sampled_from(["1", "g-1", "a;b", "x" * 65]))
near_mqprobe = st.builds(lambda v, g, a, b, c: f"{v};{g};{a};{b};{c}",
                         st.sampled_from(["1", "2", "01", "", "1.0"]), groups, numbers, numbers,
                         numbers)
hex_ = "0123456789abcdefABCDEF"
traceparents = st.one_of(
    st.builds(lambda v, t, s, f, rest: f"{v}-{t}-{s}-{f}{rest}",
              st.sampled_from(["00", "01", "cc", "ff", "0", "FF"]),
              st.text(alphabet=hex_, min_size=31, max_size=33),
              st.text(alphabet=hex_, min_size=15, max_size=17),
              st.text(alphabet=hex_, min_size=1, max_size=3),
              st.sampled_from(["", "-extra", "-", "x", "-00-11"])),
    st.text(max_size=80), st.binary(max_size=60), st.integers())
headers = st.one_of(
    st.dictionaries(st.sampled_from([AMQP_HEADER, TRACEPARENT, "other"]),
                    st.one_of(near_mqprobe, traceparents, values), max_size=3),
    values)


@FAST
@given(headers)
def test_consumed_never_raises_and_counts_what_it_refuses(raw):
    tracer = Tracer("n1")
    trace = tracer.consumed(raw)
    assert (trace is None) == (tracer.untraced == 1)
    if trace is not None:
        data = tracer.event_data(trace, {"text": "x"})
        assert decode_socketio_field(data["mqprobe"]).seq == trace.stamp.seq
        tracer.emitted(trace)


@FAST
@given(st.one_of(groups, st.integers()), values)
def test_publish_headers_never_raises(group, existing):
    tracer = Tracer("n1")
    out = tracer.publish_headers(group, existing)
    if tracer.untraced == 0:
        assert decode_amqp_headers(out).group == str(group)
    elif existing is None or isinstance(existing, dict):  # refused: theirs kept, no stamp
        assert out == dict(existing or {})
    else:  # not headers at all: handed back untouched
        assert out is existing


@FAST
@given(values)
def test_event_data_passes_anything_it_cannot_stamp(data):
    tracer = Tracer("n1")
    trace = tracer.consumed(tracer.publish_headers("g"))
    assert tracer.event_data(None, data) is data
    out = tracer.event_data(trace, data)
    assert out is data or list(out)[0] == "mqprobe"


@FAST
@given(values)
def test_socketio_fields_and_frames_parse_or_refuse(raw):
    try:
        decoded = decode_socketio_field(raw)
    except ValueError:
        decoded = None
    else:  # what parses is a whole stamp, not a partial one
        assert isinstance(decoded.seq, int) and decoded.group
    frame = '42["message",{"mqprobe":' + repr(raw).replace("'", '"') + "}]"
    field = field_from_frame(frame)  # None or a list; never an exception
    assert field is None or isinstance(field, list)


@FAST
@given(traceparents)
def test_traceparent_follows_the_w3c_rules(value):
    try:
        trace_id, span_id, _flags = parse_traceparent(value)
    except ValueError:
        return
    assert trace_id == trace_id.lower() and trace_id != "0" * 32 and span_id != "0" * 16
    assert not value.startswith(("ff", "FF"))


def test_w3c_examples():
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    # a later version: its first four fields are read, what it appends is ignored
    assert parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    for bad in (good.upper(), good + "-extra", "ff" + good[2:]):
        try:
            parse_traceparent(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_an_invalid_traceparent_restarts_the_trace_instead_of_dropping_it():
    tracer = Tracer("n1")
    good = tracer.publish_headers("7")
    for parent in (good[TRACEPARENT].upper(), "nonsense", 12):
        trace = tracer.consumed({**good, TRACEPARENT: parent})
        assert trace is not None and trace.stamp.trace_id != good[TRACEPARENT][3:35]
    assert tracer.untraced == 0


def test_superscript_digits_and_non_dict_headers_are_untraced_not_raised():
    tracer = Tracer()
    assert tracer.consumed({AMQP_HEADER: "1;g;²;1;1"}) is None
    assert tracer.consumed([("x-mqprobe", "1;g;1;1;1")]) is None
    assert tracer.consumed(42) is None
    assert tracer.publish_headers("g", 42) == 42
    assert tracer.untraced == 4


def test_reasons_stay_bounded_however_large_or_many():
    tracer = Tracer()
    huge = "x" * 4_000_000
    for i in range(200):
        tracer.consumed({AMQP_HEADER: f"1;{huge}{i};1;1;1"})
        tracer.consumed({AMQP_HEADER: f"1;g;{i}x;1;1"})
    reasons = tracer.stats()["untraced_reasons"]
    assert len(reasons) <= 33 and sum(reasons.values()) == 400
    assert max(len(r) for r in reasons) <= 200


def test_a_malformed_clock_skew_never_breaks_an_import():
    for raw in ("inf", "nan", "-inf", "1e400", "abc", "1e12"):
        done = subprocess.run([sys.executable, "-c", "import mqprobe.embed as e; "
                               "print(e.Tracer('n').publish_headers('g')['x-mqprobe'][:2])"],
                              env={**os.environ, "MQPROBE_CLOCK_SKEW_MS": raw},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "1;", (raw, done.stderr)

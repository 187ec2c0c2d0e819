"""Bad input gets one clear sentence and a non-zero exit, never a traceback."""

import re
from pathlib import Path

import pytest

from mqprobe.broker import BrokerError, find_server_binary, free_port, redact_url

from .conftest import run_cli, run_cli_here


def _one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_wrong_flag():
    result = run_cli("compare", "--bogus-flag", "3")
    assert result.returncode == 2
    assert "--bogus-flag" in _one_sentence(result.stderr)


def test_malformed_topology_file(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[consumer]\nprefetch = -5\n')
    result = run_cli("compare", "--topologies", str(path), "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1
    line = _one_sentence(result.stderr)
    assert str(path) in line and "consumer.prefetch" in line


def test_unreachable_broker():
    url = f"amqp://someone:secret-pw@127.0.0.1:{free_port()}/"
    result = run_cli("compare", "--amqp-url", url, "--duration", "1")
    assert result.returncode == 1
    line = _one_sentence(result.stderr)
    assert "cannot reach the broker" in line
    assert "secret-pw" not in result.stderr + result.stdout


def test_bad_workload_values():
    result = run_cli("compare", "--group-sizes", "10,x", "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1
    assert "--group-sizes" in _one_sentence(result.stderr)


def test_report_of_a_missing_run(tmp_path: Path):
    result = run_cli("report", str(tmp_path / "nothing.json"))
    assert result.returncode == 1
    assert "cannot read a result" in _one_sentence(result.stderr)


def test_missing_rabbitmq_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("mqprobe.broker.managed.SERVER_CANDIDATES", ("/nonexistent/rabbitmq-server",))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerError, match="apt-get install rabbitmq-server"):
        find_server_binary()


def test_redact_url_hides_password_only():
    assert redact_url("amqp://user:pw@host:5672/vh") == "amqp://user:***@host:5672/vh"
    assert redact_url("amqp://host/") == "amqp://host/"


def test_malformed_clock_skew_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MQPROBE_CLOCK_SKEW_MS", "soon")
    result = run_cli("broker", "status")
    assert result.returncode == 2
    assert "MQPROBE_CLOCK_SKEW_MS must be a number" in _one_sentence(result.stderr)


GOOD_RUN = {"topology": "t", "layout": "per-node", "published": 1, "expected_deliveries": 1,
            "delivered": 1, "lost": 0, "duplicated": 0,
            "hops": {h: {"count": 1, "p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0}
                     for h in ("mq", "server", "delivery", "e2e", "fanout")},
            "self_lag_ms": {"p50": 0.1, "p99": 0.2, "max": 0.3},
            "verdict": {"culprit": "none", "cause": "within-budget: fine", "evidence": []}}


@pytest.mark.parametrize(("content", "says"), [
    (b"", "is not JSON"),
    (b'{"runs": [', "is not JSON"),
    (b"\xff\xfe\x00binary", "is not JSON"),
    (b"[" * 200_000, "is not JSON"),
    (b"[]", "it is not an object"),
    (b"{}", "runs is missing"),
    (b'{"runs": [5]}', "runs[0] is not an object"),
    (b'{"runs": [{"topology": "../../x"}]}', "runs[0].topology is not a name"),
    (b'{"runs": [{"topology": "[/red]x", "layout": "l"}]}', "runs[0].topology is not a name"),
])
def test_report_on_a_file_that_is_not_a_result_is_one_sentence(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    for args in (("report", str(path)), ("trace", "--group", "1", "--from", str(path))):
        result = run_cli_here(*args)
        assert result.returncode == 1, result
        assert says in _one_sentence(result.stderr)


def test_wrong_shaped_runs_and_groups_are_named(tmp_path):
    import json

    from mqprobe.errors import ResultFormatError
    from mqprobe.output.report import load_result
    from mqprobe.run.trace import replay

    for broken, says in (({"hops": {}}, "hops.mq is missing"),
                         ({"self_lag_ms": None}, "self_lag_ms is not an object"),
                         ({"verdict": "none"}, "verdict is not an object"),
                         ({"lost": "0"}, "lost is not a number")):
        path = tmp_path / "r.json"
        path.write_text(json.dumps({"runs": [{**GOOD_RUN, **broken}]}))
        with pytest.raises(ResultFormatError, match=says):
            load_result(path)
    path.write_text(json.dumps({"runs": [{**GOOD_RUN, "groups": {"1": {"members": "x"}}}]}))
    with pytest.raises(ResultFormatError, match="group 1"):
        replay(load_result(path), "1")


def test_a_run_that_delivered_nothing_shows_no_latency_not_zero(tmp_path):
    """A run whose deliveries never arrived read '0.00/0.00' in every hop (issue 40:
    nothing unmeasured reads as measured)."""
    import json

    from mqprobe.records import HopSet

    result = json.loads((Path(__file__).parent / "data" / "compare_result.json").read_text())
    run = result["runs"][0]
    result["runs"] = [run]
    run |= {"delivered": 0, "lost": run["expected_deliveries"],
            "hops": {hop: HopSet()[hop].summary() for hop in run["hops"]}}
    path = tmp_path / "nothing.json"
    path.write_text(json.dumps(result))
    shown = run_cli("report", str(path))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "single-topic" in line)
    assert "0.00" not in row and row.count(" - ") >= 4, row


def test_report_reads_at_most_a_bounded_size(tmp_path):
    from mqprobe.output.report import MAX_RESULT_BYTES

    huge = tmp_path / "huge.json"
    with open(huge, "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_RESULT_BYTES + 2)
    result = run_cli("report", str(huge))
    assert result.returncode == 1
    assert "MiB" in _one_sentence(result.stderr)


@pytest.mark.parametrize(("args", "says"), [
    (("compare", "--rate", "inf"), "--rate must be a number above 0 and at most 10000"),
    (("compare", "--rate", "nan"), "--rate must be a number"),
    (("compare", "--duration", "inf"), "--duration must be a number above 0"),
    (("compare", "--budget-ms", "-1"), "--budget-ms must be a number above 0"),
    (("compare", "--size", "999999999999"), "--size must be a number at least 0 and at most"),
    (("compare", "--rate", "10000", "--duration", "3600"), "messages in one run"),
    (("compare", "--group-size", "30000", "--swarm-processes", "1"), "open-file limit"),
    (("sweep", "--groups", "1..100000"), "--groups must be a number at least 1 and at most"),
    (("sweep", "--groups", "1,inf"), "finite"),
    (("publish", "--rate", "nan"), "--rate must be a number"),
    (("node", "--port", "99999"), "--port must be a number at least 0 and at most 65535"),
    (("compare", "--ping-interval", "0"), "--ping-interval must be a number above 0"),
    (("sweep", "--ping-timeout", "nan"), "--ping-timeout must be a number"),
    (("compare", "--tcp-keepalive", "-1"), "--tcp-keepalive must be a number at least 0"),
])
def test_numbers_are_finite_and_bounded_before_anything_starts(args, says):
    result = run_cli_here(*args, "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1, result
    assert says in _one_sentence(result.stderr)


def test_a_topology_whose_keys_amqp_cannot_carry_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "longkey.toml"
    path.write_text('name = "longkey"\n[exchange]\ntype = "topic"\n'
                    f'routing_key = "{"k" * 200}.{{group}}"\n')
    result = run_cli("compare", "--topologies", str(path), "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1
    assert "AMQP allows at most 255" in _one_sentence(result.stderr)


@pytest.mark.parametrize(("content", "says"), [
    (b'name = "x"\n\xff\xfe', "not UTF-8 text"),
    (b'name = "deep"\nx = ' + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'name = "[/red]x"\n', "must be 1-64 characters"),
    (b'name = "../../x"\n', "must be 1-64 characters"),
    (None, "is a directory"),
])
def test_hostile_topology_files_are_one_sentence_before_anything_starts(tmp_path, content, says):
    path = tmp_path / "mine.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = run_cli_here("compare", "--topologies", str(path), "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1
    assert says in _one_sentence(result.stderr)


def test_wrong_vhost_password_or_tls_are_one_sentence_without_the_password(broker):
    base = f"{broker.user}:{broker.password}@127.0.0.1:{broker.amqp_port}"
    cases = [(f"amqp://{base}/nosuchvhost", "refused virtual host 'nosuchvhost'"),
             (f"amqp://{broker.user}:wrong-pw-123@127.0.0.1:{broker.amqp_port}/",
              "refused the login"),
             (f"amqps://{base}/", "did not answer TLS")]
    for url, says in cases:
        result = run_cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                         "--duration", "1", amqp_url=url)
        assert result.returncode == 1, result.stderr
        assert says in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
        output = result.stdout + result.stderr
        assert broker.password not in output and "wrong-pw-123" not in output


def test_a_management_api_that_refuses_is_said_before_the_run(broker):
    """It once cost the run its alarms and queue evidence without a word (issue 23)."""
    management = broker.management_url.replace(f"{broker.user}:{broker.password}@",
                                               f"{broker.user}:wrong-pw-123@")
    result = run_cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                     "--duration", "1", "--management-url", management,
                     amqp_url=broker.amqp_url)
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "the management API at" in last and "did not answer: Unauthorized" in last, last
    assert "wrong-pw-123" not in result.stdout + result.stderr


def test_every_expected_failure_is_one_family_and_bugs_are_not_in_it():
    from mqprobe.broker import BrokerError
    from mqprobe.broker.topology import TopologyError
    from mqprobe.cli import USER_ERRORS
    from mqprobe.errors import InputError, MqprobeError, ResultFormatError
    from mqprobe.pieces.process import RunError
    from mqprobe.stamps import TraceFormatError

    for error in (TopologyError, TraceFormatError, ResultFormatError):
        assert issubclass(error, InputError) and issubclass(error, ValueError)
    for error in (BrokerError, RunError, InputError):
        assert issubclass(error, MqprobeError)
    # a plain ValueError, KeyError or TypeError is a bug: it keeps its traceback
    assert not any(issubclass(bug, USER_ERRORS) for bug in (ValueError, KeyError, TypeError))


def test_negative_hops_and_untraced_reasons_are_shown_never_hidden():
    from rich.console import Console

    from mqprobe.output.report import print_hops
    from mqprobe.records import HopSet

    hops = HopSet()
    for value in (1_000_000, 2_000_000, -3_210_000):  # the last: a clock behind by 3 ms
        hops["mq"].record(value)
    console = Console(record=True, width=120)
    print_hops({"delivered": 3, "hops": {"1": hops.to_json()}, "untraced": 5,
                "untraced_reasons": {"no mqprobe list first in the event's object": 4,
                                     "seq more than 65536 ahead of its group's last": 1}},
               console)
    text = console.export_text()
    assert "negative" in text and "1 (min -3.21 ms)" in text
    assert "untraced events 5: 4 x no mqprobe list first in the event's object; 1 x seq" in text


def _saved_with(doc: object, path: tuple, value: object, directory: Path) -> Path:
    """`doc` with the field at `path` (the whole of it for ()) set to `value`, saved."""
    import json

    if not path:
        doc = value
    else:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    target = directory / "r.json"
    target.write_text(json.dumps(doc))
    return target


def _leaves(node: object, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON document (lists: their first two entries)."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            found += _leaves(value, (*path, i))
    return found


@pytest.mark.parametrize("saved", ["compare_result.json", "sweep_result.json"])
def test_a_result_with_any_field_replaced_by_a_hostile_value_is_read_or_refused(saved, tmp_path):
    """Every field of a real saved result replaced by a value of the wrong type, an integer
    too large for a float, rich markup, an unknown cause: report reads the file or refuses
    it with ResultFormatError, never another exception (issue 23: 18 crash sites before)."""
    import copy
    import io
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st
    from rich.console import Console

    from mqprobe.errors import ResultFormatError
    from mqprobe.output.report import load_result, print_result

    original = json.loads((Path(__file__).parent / "data" / saved).read_text())
    paths = _leaves(original)
    hostile = st.sampled_from(["[/]", "[red]x", 10**400, -1, None, [], {}, "", "x", 1e308,
                               True, 0, [1], {"a": 1}, "AAAA!!", "within-budget: x"])

    @settings(max_examples=40, deadline=None, database=None)
    @given(st.sampled_from(paths), hostile)
    def replaced(path: tuple, value: object) -> None:
        target = _saved_with(copy.deepcopy(original), path, value, tmp_path)
        try:
            result = load_result(target)
        except ResultFormatError:
            return
        print_result(result, Console(file=io.StringIO(), width=160))

    replaced()


def test_a_fifo_or_a_device_is_not_read_as_a_result(tmp_path):
    import os

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        result = run_cli("report", str(path), timeout=20)  # a FIFO once blocked forever
        assert result.returncode == 1, result
        assert "is not a regular file" in _one_sentence(result.stderr)


@pytest.mark.parametrize(("args", "says"), [
    (("compare", "--inject", "prefetch=²"), "--inject prefetch takes a whole number"),
    (("compare", "--inject", "throttle=²%"), "--inject throttle takes a CPU quota"),
    (("compare", "--inject", "stall=²ms/1s"), "needs a duration like 50ms"),
    (("compare", "--amqp-url", "amqp://u:secret-pw@127.0.0.1:99999/"),
     "--amqp-url is not a usable URL (Port out of range"),
    (("compare", "--amqp-url", "amqp://[::1/"), "--amqp-url is not a usable URL"),
    (("compare", "--amqp-url", "http://127.0.0.1:5672/"), "--amqp-url must look like amqp://"),
    (("compare", "--management-url", "garbage"), "--management-url must look like http://"),
    (("compare", "--management-url", "http://u:secret-pw@127.0.0.1:123456/"),
     "--management-url is not a usable URL"),
    (("top", "--once", "--metrics-url", "http://[::1"), "--metrics-url is not a usable URL"),
    (("node", "--prefix", "p" * 300), "RabbitMQ allows at most 255"),
    (("publish", "--prefix", "p" * 300), "RabbitMQ allows at most 255"),
    (("compare", "--size", str(48 * 2**20)), "--size must be a number at least 0 and at most "
                                             "33554432"),
])
def test_inputs_are_checked_where_they_enter(args, says):
    """Each one was a traceback, or a failure later in a piece with the reason in its log."""
    env_url = () if "--amqp-url" in args or args[0] == "top" else ("--amqp-url",
                                                                    "amqp://127.0.0.1:1/")
    result = run_cli_here(*args, *env_url)
    assert result.returncode in (1, 2), result
    line = _one_sentence(result.stderr)
    assert says in line
    assert "secret-pw" not in result.stderr + result.stdout


def test_top_once_with_no_endpoint_answering_fails():
    """A script reading `top --once` must not take empty tables for health."""
    result = run_cli("top", "--once", "--interval", "0.2", "--metrics-url",
                     f"http://127.0.0.1:{free_port()}/metrics")
    assert result.returncode == 1
    assert "none of the 1 --metrics-url endpoint(s) answered" in result.stderr


def test_knobs_a_topology_fixes_are_said_not_applied(tmp_path):
    result = run_cli("compare", "--prefetch", "5", "--amqp-url", f"amqp://127.0.0.1:{free_port()}/")
    assert result.returncode == 1
    assert ("note: prefetch not applied to socketio-manager: python-socketio's manager fixes "
            "its own") in result.stderr


@pytest.mark.parametrize(("path", "value", "says"), [
    (("runs", 0, "hdr", "e2e"), "AAAA!!", "runs[0].hdr.e2e is not a histogram"),
    (("runs", 0, "hdr"), "x", "runs[0].hdr is not an object"),
    (("runs", 0, "timeline", "events", 0, "start_ms"), "x", "start_ms is not a number"),
    (("runs", 0, "timeline", "e2e", "rows", 0), [1, 2], "is not a row of 5 or more numbers"),
    (("runs", 0, "cpu", "series", "rows", 0, 1), None, "is not a number"),
])
def test_what_the_pictures_and_hdr_logs_read_is_checked_when_the_file_loads(
        tmp_path, path, value, says):
    """--html and --hdr-dir read the histograms, the timeline and the CPU series: a wrong
    one was a traceback in whichever picture touched it first."""
    import json

    from mqprobe.errors import ResultFormatError
    from mqprobe.output.report import load_result

    doc = json.loads((Path(__file__).parent / "data" / "compare_result.json").read_text())
    with pytest.raises(ResultFormatError, match=re.escape(says)):
        load_result(_saved_with(doc, path, value, tmp_path))


def test_a_group_of_a_saved_run_is_replayed_with_its_own_figures():
    """`mqprobe trace --from`: each run's group, its counts and hops as the run saved them."""
    import io
    import json

    from rich.console import Console

    from mqprobe.output.report import load_result
    from mqprobe.output.trace_report import print_replayed
    from mqprobe.run.trace import replay

    path = Path(__file__).parent / "data" / "compare_result.json"
    saved = json.loads(path.read_text())["runs"]
    replayed = replay(load_result(path), "2")
    assert len(replayed) == len(saved)
    out = io.StringIO()
    print_replayed("2", replayed[0], Console(file=out, width=200))
    text, group = out.getvalue(), saved[0]["groups"]["2"]
    assert (f"{saved[0]['topology']}/{saved[0]['layout']} group 2: {group['members']} members, "
            f"{group['published']} published, {group['delivered']}/{group['expected_deliveries']}"
            ) in text, text
    assert f"p99 {group['hops']['e2e']['p99_ms']:>8.3f}" in text
    assert replay(load_result(path), "nonesuch") == []


def test_a_replayed_group_whose_figures_and_samples_disagree_is_one_sentence(tmp_path):
    """A saved group emptied by hand (0 members, 0 delivered) beside samples of it printed
    '0 members, 0/0 delivered' and then those deliveries (issue 40)."""
    import json

    from mqprobe.errors import ResultFormatError
    from mqprobe.output.report import load_result
    from mqprobe.run.trace import replay

    result = json.loads((Path(__file__).parent / "data" / "compare_result.json").read_text())
    run = result["runs"][0]
    run["groups"]["1"] |= {"members": 0, "published": 0, "expected_deliveries": 0,
                           "delivered": 0, "hops": {}}
    t = 1_700_000_000_000_000_000
    run["samples"] = [["1", seq, t, t, t + 1000, t + 2000, t + 5000] for seq in range(3)]
    path = tmp_path / "emptied.json"
    path.write_text(json.dumps(result))
    with pytest.raises(ResultFormatError, match="counts 0 deliveries yet holds 3 samples"):
        replay(load_result(path), "1")
    answer = run_cli("trace", "--group", "1", "--from", str(path))
    assert answer.returncode == 1 and "Traceback" not in answer.stderr
    assert "seq" not in answer.stdout, answer.stdout

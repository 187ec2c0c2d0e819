"""Bad input gets one clear sentence and a non-zero exit, never a traceback."""

from pathlib import Path

import pytest

from mqprobe.broker import BrokerError, find_server_binary, free_port, redact_url

from .conftest import run_cli


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
    monkeypatch.setattr("mqprobe.broker.SERVER_CANDIDATES", ("/nonexistent/rabbitmq-server",))
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
    (b"[]", "no list of 'runs'"),
    (b'{"runs": [5]}', "run 1 is not an object"),
    (b'{"runs": [{"topology": "../../x"}]}', "valid 'topology'"),
    (b'{"runs": [{"topology": "[/red]x", "layout": "l"}]}', "valid 'topology'"),
])
def test_report_on_a_file_that_is_not_a_result_is_one_sentence(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    for args in (("report", str(path)), ("trace", "--group", "1", "--from", str(path))):
        result = run_cli(*args)
        assert result.returncode == 1, result
        assert says in _one_sentence(result.stderr)


def test_wrong_shaped_runs_and_groups_are_named(tmp_path):
    import json

    from mqprobe.errors import ResultFormatError
    from mqprobe.report import load_result
    from mqprobe.trace import replay

    for broken, says in (({"hops": {}}, "hop 'mq'"), ({"self_lag_ms": None}, "self_lag_ms"),
                         ({"verdict": "none"}, "verdict"), ({"lost": "0"}, "'lost'")):
        path = tmp_path / "r.json"
        path.write_text(json.dumps({"runs": [{**GOOD_RUN, **broken}]}))
        with pytest.raises(ResultFormatError, match=says):
            load_result(path)
    path.write_text(json.dumps({"runs": [{**GOOD_RUN, "groups": {"1": {"members": "x"}}}]}))
    with pytest.raises(ResultFormatError, match="group 1"):
        replay(load_result(path), "1")


def test_report_reads_at_most_a_bounded_size():
    result = run_cli("report", "/dev/zero")
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
])
def test_numbers_are_finite_and_bounded_before_anything_starts(args, says):
    result = run_cli(*args, "--amqp-url", "amqp://127.0.0.1:1/")
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
    result = run_cli("compare", "--topologies", str(path), "--amqp-url", "amqp://127.0.0.1:1/")
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


def test_every_expected_failure_is_one_family_and_bugs_are_not_in_it():
    from mqprobe.broker import BrokerError
    from mqprobe.cli import USER_ERRORS
    from mqprobe.errors import InputError, MqprobeError, ResultFormatError
    from mqprobe.process import RunError
    from mqprobe.stamps import TraceFormatError
    from mqprobe.topology import TopologyError

    for error in (TopologyError, TraceFormatError, ResultFormatError):
        assert issubclass(error, InputError) and issubclass(error, ValueError)
    for error in (BrokerError, RunError, InputError):
        assert issubclass(error, MqprobeError)
    # a plain ValueError, KeyError or TypeError is a bug: it keeps its traceback
    assert not any(issubclass(bug, USER_ERRORS) for bug in (ValueError, KeyError, TypeError))


def test_negative_hops_and_untraced_reasons_are_shown_never_hidden():
    from rich.console import Console

    from mqprobe.records import HopSet
    from mqprobe.report import print_hops

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

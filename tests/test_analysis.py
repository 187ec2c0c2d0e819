"""Injected faults on a real broker: the verdict names the culprit the fault planted."""

import json

import pytest

from .conftest import run_cli

BASE = ["--topologies", "single-topic", "--layouts", "per-node", "--nodes", "2",
        "--group-sizes", "10,10", "--budget-ms", "20"]


def _compare(broker, tmp_path, *extra: str) -> dict:
    out = tmp_path / "r.json"
    result = run_cli("compare", *BASE, *extra, "--json", str(out), "--run-dir",
                     str(tmp_path / "logs"), amqp_url=broker.amqp_url)
    assert result.returncode == 0, result.stderr + result.stdout
    (run,) = json.loads(out.read_text())["runs"]
    assert run["lost"] == 0 and run["error"] is None
    return run


def test_clean_run_is_none(broker, tmp_path):
    run = _compare(broker, tmp_path, "--rate", "5", "--duration", "2")
    assert run["verdict"]["culprit"] == "none", run["verdict"]
    assert all(g["verdict"]["culprit"] == "none" for g in run["groups"].values())


def test_server_delay_is_the_servers_handler(broker, tmp_path):
    run = _compare(broker, tmp_path, "--rate", "5", "--duration", "3",
                   "--inject", "server-delay=50ms")
    assert (run["verdict"]["culprit"], run["verdict"]["cause"].split(":")[0]) == (
        "server", "slow-handler"), run["verdict"]
    assert run["hops"]["server"]["p50_ms"] >= 50


def test_broker_delay_is_the_mq(broker, tmp_path):
    run = _compare(broker, tmp_path, "--rate", "5", "--duration", "3",
                   "--inject", "broker-delay=50ms")
    assert (run["verdict"]["culprit"], run["verdict"]["cause"].split(":")[0]) == (
        "mq", "broker-side"), run["verdict"]
    assert run["hops"]["mq"]["p50_ms"] >= 50


def test_queue_wait_from_a_slow_consumer_is_blamed_on_the_server(broker, tmp_path):
    # 20 msg/s into each node, 60 ms each, one at a time: the queue grows, the mq hop is
    # long, and yet the broker is not at fault.
    run = _compare(broker, tmp_path, "--rate", "10", "--duration", "3",
                   "--inject", "prefetch=1", "--inject", "server-delay=60ms")
    assert run["hops"]["mq"]["p99_ms"] > run["hops"]["server"]["p99_ms"]
    assert (run["verdict"]["culprit"], run["verdict"]["cause"].split(":")[0]) == (
        "server", "consumer-saturated"), run["verdict"]
    assert run["evidence"]["broker"]["max_ready"] >= 3
    assert any("prefetch window" in line for line in run["verdict"]["evidence"])
    # 20 msg/s in, at most 1/60 ms = 16.7 msg/s out: the backlog builds at about 3 msg/s
    growth = run["evidence"]["broker"]["backlog_growth"]
    assert 1 <= growth["net_in_per_s"] <= 10, growth
    assert any("faster than it drained" in line for line in run["verdict"]["evidence"])


@pytest.mark.parametrize(("kind", "how"), [("stall", "blocked"), ("spin", "saturated")])
def test_loop_stall_is_a_server_stall_blocked_or_saturated(broker, tmp_path, kind, how):
    run = _compare(broker, tmp_path, "--rate", "10", "--duration", "4",
                   "--inject", f"{kind}=200ms/1s")
    assert (run["verdict"]["culprit"], run["verdict"]["cause"].split(":")[0]) == (
        "server", "server-stall"), run["verdict"]
    assert f"event loop was {how}" in run["verdict"]["cause"], run["verdict"]
    assert any("n1 event loop could not run" in line for line in run["verdict"]["evidence"])


@pytest.mark.parametrize("bad", ["server-delay=50", "stall=200ms", "prefetch=0", "colour=red"])
def test_malformed_injection_is_one_sentence(bad):
    result = run_cli("compare", "--inject", bad, "--amqp-url", "amqp://127.0.0.1:1/")
    assert result.returncode == 1
    assert "--inject" in result.stderr and "Traceback" not in result.stderr

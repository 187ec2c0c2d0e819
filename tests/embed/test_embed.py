"""mqprobe.embed in a real python-socketio + RabbitMQ server (examples/chat_server.py)."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request

import pika
import pytest
import socketio

from mqprobe.embed import Tracer
from mqprobe.stamps import AMQP_HEADER, TRACEPARENT, decode_socketio_field, parse_traceparent

from ..conftest import REPO, run_cli


def test_publish_consume_emit_round_trip():
    tracer = Tracer("n1")
    headers = tracer.publish_headers(7, {"app": "kept"})
    assert headers["app"] == "kept"
    trace = tracer.consumed(headers)
    data = tracer.event_data(trace, {"text": "hi", "mqprobe": "theirs"})
    assert list(data)[0] == "mqprobe" and data["text"] == "hi"
    delivered = decode_socketio_field(data["mqprobe"])
    assert (delivered.group, delivered.seq, delivered.node) == ("7", 0, "n1")
    assert delivered.t_pub <= delivered.t_deq <= delivered.t_emit
    assert tracer.publish_headers(7)[AMQP_HEADER].split(";")[2] == "1"  # seq counts per group


def test_existing_opentelemetry_parent_is_continued():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = Tracer().publish_headers("g", {TRACEPARENT: parent})
    assert parse_traceparent(headers[TRACEPARENT])[0] == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("headers", [None, {}, {AMQP_HEADER: "1;g;x;1;1"}, {AMQP_HEADER: 5},
                                     {AMQP_HEADER: "1;g;²;1;1"}, ["not", "a", "dict"]])
def test_foreign_headers_never_raise_and_are_counted(headers):
    tracer = Tracer()
    assert tracer.consumed(headers) is None
    assert tracer.event_data(None, {"text": "x"}) == {"text": "x"}
    assert tracer.stats()["untraced"] == 1 and tracer.stats()["untraced_reasons"]


def test_a_group_id_that_cannot_travel_leaves_the_message_untraced():
    tracer = Tracer()
    assert tracer.publish_headers("a;b", {"k": 1}) == {"k": 1}
    assert tracer.untraced == 1


@pytest.mark.measuring  # a stall and a collection, timed on this host
def test_watch_pauses_records_a_blocked_loop_and_a_long_collection():
    import gc
    import time

    async def main() -> Tracer:
        tracer = Tracer("n1")
        tracer.watch_pauses()
        await asyncio.sleep(0.05)
        time.sleep(0.08)  # a synchronous call holds the loop
        await asyncio.sleep(0.05)
        garbage = [[i] for i in range(600_000)]  # a gen-2 collection with work to do
        gc.collect()
        del garbage
        await asyncio.sleep(0.02)
        tracer.stop_watching()
        return tracer

    tracer = asyncio.run(main())
    stalls = [p for p in tracer.pauses() if p["kind"] == "loop-stall"]
    assert any(70 <= (p["end_ns"] - p["start_ns"]) / 1e6 < 200 and p["cpu_share"] < 0.5
               for p in stalls), stalls
    assert any(p["kind"] == "gc" and p["generation"] == 2 for p in tracer.pauses())
    assert tracer.stats()["stalls"]["longest_ms"] >= 70
    count = len(tracer.pauses())
    gc.collect()  # no longer watching: nothing more is recorded
    assert len(tracer.pauses()) == count


@contextlib.contextmanager
def _chat_server(amqp_url: str, skew_ms: float = 0, port: int = 0):
    """The example server in a process of its own; skew_ms makes it pretend another host."""
    env = dict(os.environ, MQPROBE_CLOCK_SKEW_MS=str(skew_ms))
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "chat_server.py"), "--port",
                             str(port), "--node", "chat-t", "--amqp-url", amqp_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(proc.stdout.readline())
        yield f"http://127.0.0.1:{ready['port']}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def chat_server(broker):
    with _chat_server(broker.amqp_url) as url:
        yield url


def _trace(broker, url: str, out, group: str, rate: str, duration: str):
    """`mqprobe trace` probing the example server; its output and its JSON summary."""
    result = run_cli("trace", "--group", group, "--socketio-url", url, "--exchange",
                     "chat.groups", "--publish", rate, "--duration", duration, "--json",
                     str(out / "trace.json"), amqp_url=broker.amqp_url, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    return result, json.loads((out / "trace.json").read_text())


def test_trace_follows_a_group_through_the_example_server(broker, chat_server, tmp_path):
    result, summary = _trace(broker, chat_server, tmp_path, "7", "5", "1.2")
    assert summary["probes_sent"] == 6 and summary["probes_lost"] == 0
    assert summary["received"] == 6 and summary["hops"]["e2e"]["count"] == 6
    probe_lines = [line for line in result.stdout.splitlines() if line.startswith("probe")]
    assert len(probe_lines) == 6 and all("node chat-t" in line for line in probe_lines)


@pytest.mark.measuring  # a clock difference within its error bar
def test_trace_measures_a_server_clock_that_differs_and_corrects_the_hops(broker, tmp_path):
    with _chat_server(broker.amqp_url, skew_ms=-300) as url:
        result, summary = _trace(broker, url, tmp_path, "4", "10", "1.5")
    clock = summary["clocks"]["chat-t"]
    assert clock["corrected"] and clock["probes"] == 15
    assert abs(clock["offset_ms"] + 300) <= clock["uncertainty_ms"] + 0.2
    # uncorrected, mq would be near -300 ms and delivery near +300 ms
    for hop in ("mq", "delivery"):
        assert summary["hops"][hop]["max_ms"] < 100
        # early lines are corrected with the first probes' (wider) bounds
        assert summary["hops"][hop].get("min_ms", 0) > -10
    assert "±" in result.stdout and "its hops are corrected" in result.stdout


@pytest.mark.measuring  # a clock difference within its error bar
def test_trace_on_one_clock_claims_no_difference(broker, chat_server, tmp_path):
    result, summary = _trace(broker, chat_server, tmp_path, "5", "10", "1")
    clock = summary["clocks"]["chat-t"]
    assert not clock["corrected"] and clock["low_ms"] <= 0 <= clock["high_ms"]
    assert "±" not in result.stdout


def test_trace_names_probes_lost_while_its_listener_was_down(vhost_url):
    """The server goes away for a second and comes back on its port: the listener reconnects,
    and each probe lost meanwhile says its listener was disconnected, not that the broker
    lost it."""
    from mqprobe.broker import free_port
    from mqprobe.run.trace import TraceConfig, live_trace

    port, lines = free_port(), []
    config = TraceConfig(group="3", socketio_urls=[f"http://127.0.0.1:{port}"],
                         amqp_url=vhost_url, exchange="chat.groups", rate=5, duration_s=8,
                         timeout_s=2)

    async def run() -> dict:
        with contextlib.ExitStack() as first, contextlib.ExitStack() as second:
            # started and stopped off the loop, which the trace keeps running meanwhile
            await asyncio.to_thread(first.enter_context, _chat_server(vhost_url, port=port))
            # a binding of ours keeps the server's auto-delete exchange while it is away
            keep = pika.BlockingConnection(pika.URLParameters(vhost_url))
            first.callback(keep.close)
            keep.channel().queue_declare("keep", auto_delete=True)
            keep.channel().queue_bind("keep", "chat.groups", routing_key="nothing")
            trace = asyncio.get_running_loop().create_task(live_trace(config, lines.append))
            await asyncio.sleep(2)
            await asyncio.to_thread(first.pop_all().close)  # its terminate, by pid
            await asyncio.sleep(1)  # down: the probes of this second reach nobody
            await asyncio.to_thread(second.enter_context, _chat_server(vhost_url, port=port))
            return await trace

    summary = asyncio.run(run())
    assert (summary["disconnects"], summary["reconnects"], summary["down"]) == (1, 1, 0)
    lost = [line for line in lines if line["kind"] == "lost"]
    # as many as were due while it was away: a second, and the server's restart (about 4 s
    # on a host crowded by three test workers: 26 lost once); those after it arrived
    assert 3 <= len(lost) == summary["probes_lost"] < summary["probes_sent"] - 10, lost
    assert all("1 of 1 listener(s) were disconnected while it was due" in line["last_hop"]
               for line in lost), lost
    arrived = sorted(line["seq"] for line in lines if line["kind"] == "probe")
    assert arrived[0] == 0 and arrived[-1] == summary["probes_sent"] - 1  # before and after


def test_trace_reports_a_missing_exchange_in_one_sentence(broker, chat_server):
    result = run_cli("trace", "--group", "7", "--socketio-url", chat_server, "--exchange",
                     "no.such.exchange", "--publish", "2", "--duration", "1",
                     amqp_url=broker.amqp_url, timeout=60)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


async def _chat(url: str, amqp_url: str) -> tuple[list, list]:
    alice, bob = socketio.AsyncClient(), socketio.AsyncClient()
    got: list = []
    bob.on("message", lambda data: got.append(data))
    for client in (alice, bob):
        await client.connect(url, transports=["websocket"])
        assert await client.call("join", {"group": "3"}, timeout=5)
    # a foreign publisher (pika, blocking) with malformed and missing headers, then a traced
    # message stamped with the embed API through pika
    params = pika.URLParameters(amqp_url)
    connection = await asyncio.to_thread(pika.BlockingConnection, params)
    channel = connection.channel()
    for headers in ({AMQP_HEADER: "9;3;0;1;1"}, None):
        channel.basic_publish("chat.groups", "group.3", json.dumps({"text": "foreign"}).encode(),
                              pika.BasicProperties(headers=headers))
    channel.basic_publish("chat.groups", "group.3", json.dumps({"text": "via pika"}).encode(),
                          pika.BasicProperties(headers=Tracer("pika-pub").publish_headers(3)))
    connection.close()
    await alice.emit("say", {"group": "3", "text": "hello"})
    for _ in range(100):
        if len(got) >= 4:
            break
        await asyncio.sleep(0.05)
    await alice.disconnect()
    await bob.disconnect()
    return got


def test_embedded_server_traces_its_own_messages_and_passes_foreign_ones(broker, chat_server):
    got = asyncio.run(_chat(chat_server, broker.amqp_url))
    texts = sorted(message["text"] for message in got)
    assert texts == ["foreign", "foreign", "hello", "via pika"]
    traced = [m for m in got if "mqprobe" in m]
    assert sorted(m["text"] for m in traced) == ["hello", "via pika"]
    for message in traced:
        trace = decode_socketio_field(message["mqprobe"])
        assert trace.node == "chat-t" and trace.group == "3"
        assert trace.t_pub <= trace.t_deq <= trace.t_emit
    with urllib.request.urlopen(chat_server + "/mqprobe", timeout=5) as response:
        stats = json.loads(response.read())
    assert (stats["traced"], stats["untraced"], stats["published"]) == (2, 2, 1)
    assert stats["fanout_ms"]["count"] == 2


def test_rabbitmqs_own_stamps_split_the_mq_hop_when_present():
    """RabbitMQ 3.12+ stamps arrival (timestamp_in_ms), 4.x sending
    (x-opt-rabbitmq-sent-time), in ms on its clock; only 3.10 installs here, so the headers
    are set by hand. Garbled ones are counted, not read; none leaves the hop whole."""
    from mqprobe.embed import Tracer
    from mqprobe.stamps import PublishStamp, encode_amqp_headers, new_trace_id

    tracer = Tracer("n1")
    t_pub = 1_700_000_000_000_000_000  # ns, on a whole millisecond
    stamp = PublishStamp(new_trace_id(), "7", 0, t_pub, t_pub)
    both = {**encode_amqp_headers(stamp), "timestamp_in_ms": t_pub // 10**6 + 2,
            "x-opt-rabbitmq-sent-time": t_pub // 10**6 + 5}
    assert tracer.consumed(both, t_pub + 6_000_000) is not None
    split = {part: lat.summary() for part, lat in tracer.mq_split.items()}
    assert {part: s["max_ms"] for part, s in split.items()} == pytest.approx(
        {"before-broker": 2.0, "in-broker": 3.0, "after-broker": 1.0}, abs=0.01)
    arrival_only = {**encode_amqp_headers(PublishStamp(new_trace_id(), "7", 1, t_pub, t_pub)),
                    "timestamp_in_ms": t_pub // 10**6 + 1}
    tracer.consumed(arrival_only, t_pub + 4_000_000)
    assert tracer.mq_split["after-broker"].count == 2 and tracer.mq_split["in-broker"].count == 1
    for garbled in ("12", -5, True, 2**60):
        headers = {**encode_amqp_headers(PublishStamp(new_trace_id(), "7", 2, t_pub, t_pub)),
                   "timestamp_in_ms": garbled}
        assert tracer.consumed(headers, t_pub + 1) is not None  # the message is still ours
    assert tracer.broker_stamps_unreadable == 4
    assert tracer.mq_split["before-broker"].count == 2
    plain = Tracer("n2")
    plain.consumed(encode_amqp_headers(stamp), t_pub + 6_000_000)
    assert not plain.mq_split and plain.hops["mq"].total == 1

"""The managed broker, started and stopped through the code users run."""

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from mqprobe.broker import (
    BrokerError,
    BrokerState,
    ManagedBroker,
    QueueSampler,
    managed,
    management_get,
    pid_alive,
)
from mqprobe.timeline import EventKind

from ..conftest import REPO, run_cli, run_until_cancelled
from ..runs import no_broker_left, wait_until_publishing


def test_session_broker_serves_amqp_and_management_on_loopback(broker):
    with socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=2):
        pass
    overview = management_get(broker.management_url, "/api/overview")
    assert overview["rabbitmq_version"].startswith("3.")
    listeners = {(entry["protocol"], entry["ip_address"]) for entry in overview["listeners"]}
    assert ("amqp", "127.0.0.1") in listeners


def test_the_broker_keeps_its_files_in_its_data_dir(tmp_path):
    """Every path the node writes (a crash dump among them: a node that failed to start
    once left one in the repository) is under its data dir."""
    state = BrokerState(pid=0, amqp_port=1, management_port=2, dist_port=3, user="u",
                        password="p", node_name="x@localhost", started_at=0)
    env = ManagedBroker(tmp_path)._environment(state)
    paths = {k: v for k, v in env.items() if k in ("ERL_CRASH_DUMP", "HOME", "RABBITMQ_LOG_BASE",
                                                  "RABBITMQ_MNESIA_BASE", "RABBITMQ_PID_FILE")}
    assert len(paths) == 5
    assert all(v.startswith(str(tmp_path)) for v in paths.values()), paths


def test_the_brokers_ports_lie_below_the_ephemeral_range():
    """Outgoing connections (a swarm's thousands beside us) take ports from the ephemeral
    range; a port chosen there can be gone before the node binds it (CI saw it die so)."""
    low = managed._ephemeral_low()
    ports = {managed.free_port() for _ in range(20)}
    assert all(managed.LOWEST_PORT <= port < low for port in ports), (low, ports)
    assert len(ports) > 10


@pytest.mark.integration  # brokers of its own
def test_a_port_taken_while_the_node_starts_is_chosen_again(tmp_path, monkeypatch):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken, choose = holder.getsockname()[1], managed.free_port
    picks = []

    def dist_port_taken_on_the_first_start() -> int:  # the third port chosen is the dist port
        picks.append(taken if len(picks) == 2 else choose())
        return picks[-1]

    monkeypatch.setattr(managed, "free_port", dist_port_taken_on_the_first_start)
    monkeypatch.setattr(managed, "START_ATTEMPTS", 1)
    once = ManagedBroker(tmp_path / "once")
    with pytest.raises(BrokerError, match="another program took one of its ports"):
        once.up(timeout=120)
    once.down()

    picks.clear()
    monkeypatch.setattr(managed, "START_ATTEMPTS", 3)
    again = ManagedBroker(tmp_path / "again")
    try:
        state = again.up(timeout=120)
        assert state.dist_port != taken and len(picks) == 10
    finally:
        again.down()
        holder.close()


def _exists(url: str, kind: str, name: str) -> bool:
    """Is this queue or exchange on the broker (a passive declare)?"""
    import asyncio

    import aio_pika

    async def check() -> bool:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            if kind == "queue":
                await channel.declare_queue(name, passive=True)
            else:
                await channel.declare_exchange(name, passive=True)
            return True
        except aio_pika.exceptions.ChannelClosed:
            return False
        finally:
            await connection.close()

    return asyncio.run(check())


def test_cleanup_lists_then_removes_what_nothing_uses_and_keeps_the_rest(broker, vhost_url):
    import asyncio
    import subprocess
    import sys

    import aio_pika

    async def leave_behind() -> None:
        connection = await aio_pika.connect(vhost_url)
        channel = await connection.channel()
        dead = await channel.declare_queue("mqprobe.dead.n1")
        await dead.bind(await channel.declare_exchange("mqprobe.dead.groups", "topic"), "#")
        await channel.declare_exchange("mqprobe.dead.lonely", "fanout")
        await channel.declare_exchange("theirs.groups", "topic")  # not ours: never touched
        await connection.close()

    asyncio.run(leave_behind())
    consumer = subprocess.Popen([sys.executable, "-c", f"""
import asyncio, aio_pika
async def main():
    connection = await aio_pika.connect({vhost_url!r})
    channel = await connection.channel()
    queue = await channel.declare_queue("mqprobe.live.n1", auto_delete=True)
    await queue.bind(await channel.declare_exchange("mqprobe.live.groups", "topic"), "#")
    async def on_message(message): pass
    await queue.consume(on_message)
    print("consuming", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().strip() == "consuming"
        api = ("--management-url", broker.management_url)
        listed = run_cli("cleanup", "--dry-run", *api, amqp_url=vhost_url)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split("│")[2].strip(): line.split("│")[4].strip()
                for line in listed.stdout.splitlines() if line.count("│") == 5}
        assert rows == {"mqprobe.dead.n1": "would be removed",
                        "mqprobe.dead.groups": "would be removed",
                        "mqprobe.dead.lonely": "would be removed",
                        "mqprobe.live.n1": "in use: kept", "mqprobe.live.groups": "in use: kept"}
        assert "nothing removed (--dry-run)" in listed.stdout
        assert _exists(vhost_url, "queue", "mqprobe.dead.n1")  # a dry run removes nothing
        cleaned = run_cli("cleanup", *api, amqp_url=vhost_url)
        assert cleaned.returncode == 0 and "3 removed" in cleaned.stdout, cleaned.stdout
        for kind, name in (("queue", "mqprobe.dead.n1"), ("exchange", "mqprobe.dead.groups"),
                           ("exchange", "mqprobe.dead.lonely")):
            assert not _exists(vhost_url, kind, name), name
        for kind, name in (("queue", "mqprobe.live.n1"), ("exchange", "mqprobe.live.groups"),
                           ("exchange", "theirs.groups")):
            assert _exists(vhost_url, kind, name), name
        password = vhost_url.split(":")[2].split("@")[0]
        assert password not in listed.stdout + cleaned.stdout
    finally:
        consumer.kill()  # ours, by its pid
        consumer.wait()


def test_cleanup_without_a_management_api_says_how_to_get_one(broker):
    result = run_cli("cleanup", "--management-url", "http://u:secret@127.0.0.1:9/",
                     amqp_url=broker.amqp_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "rabbitmq-plugins enable rabbitmq_management" in result.stderr
    assert "secret" not in result.stderr


def test_what_no_interface_of_the_broker_answered_for_is_unknown_not_none(broker):
    """Neither the management API nor the Prometheus endpoint answers (credentials in both
    URLs): alarms, flow control and the Erlang run queue are null, never [] or 0, each
    interface's state is in the evidence, and the reason is the refused connection (it was
    'Name or service not known': urllib took `user:secret@127.0.0.1` for a host name)."""
    dead = managed.free_port()
    sampler = QueueSampler(broker.amqp_url, [], management_url=f"http://u:secret@127.0.0.1:{dead}",
                           prometheus_url=f"http://u:secret@127.0.0.1:{dead}/", interval_s=0.1)
    run_until_cancelled(0.5, sampler.run)
    evidence = sampler.summary()
    doc = evidence.to_json()
    assert (doc["alarms"], doc["blocked_connections_max"], doc["erlang_run_queue_max"]) == (
        None, None, None), doc
    assert doc["source_states"] == {"amqp": "answered", "management": "no answer",
                                    "prometheus": "no answer"}
    assert "Connection refused" in doc["prometheus_reason"], doc["prometheus_reason"]
    assert "Connection refused" in doc["management_reason"], doc["management_reason"]
    assert "secret" not in json.dumps(doc)


@pytest.mark.parametrize(("answers", "unresponsive"), [
    ("accepts and never speaks", True),  # a paused or swapping broker: the kernel accepts
    ("refuses", False)])  # a stopped one: the port is closed
def test_a_broker_that_does_not_answer_is_unresponsive_not_unreachable(answers, unresponsive):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if unresponsive:
        listener.listen(8)
    else:
        listener.close()
    sampler = QueueSampler(f"amqp://guest:guest@127.0.0.1:{port}/", ["q"], interval_s=0.1)
    try:
        run_until_cancelled(3.5, sampler.run)  # a connection attempt waits 2 s for its answer
    finally:
        listener.close()
    (kinds,) = {e.kind for e in sampler.timeline()}
    assert kinds == EventKind.BROKER_UNAVAILABLE
    assert {bool(e.detail.get("unresponsive")) for e in sampler.timeline()} == {unresponsive}


def test_an_api_that_hangs_holds_back_no_depth_sample(vhost_url):
    """The management API of a frozen broker hangs until it thaws (here: until its 3 s
    timeout); the queue depths, read over AMQP, go on every interval, each dated when it
    was answered. (Before, the API was read first in each sample: a depth read after a
    frozen broker came back was dated before it froze, and the nodes read as behind.)"""
    import aio_pika

    async def declare() -> None:
        connection = await aio_pika.connect(vhost_url)
        async with connection:
            await (await connection.channel()).declare_queue("q")

    asyncio.run(declare())
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    sampler = QueueSampler(vhost_url, ["q"], f"http://u:p@127.0.0.1:{silent.getsockname()[1]}/",
                           interval_s=0.25)
    try:
        run_until_cancelled(3.0, sampler.run)
    finally:
        silent.close()
    times = [t_s for t_s, _ready, _consumers in sampler.series["q"]]
    assert len(times) >= 6 and times[0] < 0.5, times
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 1.0, times
    assert not sampler.timeline(), "the broker answered every depth sample"


def test_a_queue_backlog_as_rabbitmqs_prometheus_endpoint_reports_it(managed_broker):
    """The managed broker serves rabbitmq_prometheus on loopback: a queue's ready
    messages and the Erlang run queue, read the way compare's broker sampler reads them."""
    import asyncio
    import time

    import aio_pika

    from mqprobe.broker.prometheus import read_broker

    state = managed_broker.running_state()
    assert state.prometheus_url.startswith("http://127.0.0.1:")

    async def backlog() -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(state.amqp_url)
        channel = await connection.channel()
        await channel.declare_queue("test.prometheus.backlog", auto_delete=False)
        for _ in range(7):
            await channel.default_exchange.publish(aio_pika.Message(b"x"),
                                                   "test.prometheus.backlog")
        return connection

    async def scenario():
        connection = await backlog()
        try:
            deadline = time.monotonic() + 15  # its figures refresh every statistics interval
            while time.monotonic() < deadline:
                seen = await asyncio.to_thread(read_broker, state.prometheus_url,
                                               {"test.prometheus.backlog"})
                if seen.ready.get("test.prometheus.backlog") == 7:
                    return seen
                await asyncio.sleep(0.5)
            return seen
        finally:
            channel = await connection.channel()
            await channel.queue_delete("test.prometheus.backlog")
            await connection.close()

    seen = asyncio.run(scenario())
    assert seen.ready == {"test.prometheus.backlog": 7} and seen.unacked == {
        "test.prometheus.backlog": 0}, seen
    assert seen.alarms == () and seen.run_queue >= 0


def test_the_brokers_cpu_as_its_prometheus_endpoint_reports_it(managed_broker):
    """For a broker compare cannot see by pid: Erlang's runtime counter on the endpoint
    grows with the work, and is the VM's user CPU (at most what /proc gives it in all); the
    broker sampler keeps it from the scrape it makes anyway, and an endpoint that does not
    answer gives no reading, never a raise."""
    import asyncio

    import aio_pika

    from mqprobe.broker.prometheus import read_broker
    from mqprobe.cpu import process_cpu_ns
    from mqprobe.watch.footprint import broker_processes

    state = managed_broker.running_state()
    pids = broker_processes(state.amqp_url)

    async def work() -> None:
        connection = await aio_pika.connect(state.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("test.prometheus.runtime", auto_delete=True)
            for _ in range(3000):
                await channel.default_exchange.publish(aio_pika.Message(b"x" * 512), queue.name)
            await channel.queue_delete(queue.name)

    def runtime_ms() -> float | None:
        return read_broker(state.prometheus_url, set()).runtime_ms

    before_ms, before_ns = runtime_ms(), sum(map(process_cpu_ns, pids))
    asyncio.run(work())
    after_ms, after_ns = runtime_ms(), sum(map(process_cpu_ns, pids))
    assert before_ms is not None and after_ms is not None
    reported, seen = after_ms - before_ms, (after_ns - before_ns) / 1e6
    assert 0 < reported <= seen * 1.1 + 20, (reported, seen)

    answering = QueueSampler(state.amqp_url, [], prometheus_url=state.prometheus_url)
    silent = QueueSampler(state.amqp_url, [], prometheus_url="http://127.0.0.1:9/")
    for sampler in (answering, silent):
        run_until_cancelled(1.8, sampler.run)
    assert len(answering.runtime) >= 2 and answering.runtime[-1][1] >= after_ms
    assert silent.runtime == [] and silent.prometheus_error  # nothing there: no reading


@pytest.mark.integration  # a broker of its own
def test_two_commands_on_one_home_share_the_broker_and_the_last_stops_it(tmp_path):
    # the first starts the managed broker and ends first; the second, still measuring,
    # must keep it (before: the first stopped it under the second, which lost deliveries)
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(tmp_path / "home")
    small = ["--topologies", "single-topic", "--layouts", "per-node", "--groups", "2",
             "--group-size", "20"]
    first = subprocess.Popen([sys.executable, "-m", "mqprobe", "compare", *small, "--duration",
                              "4", "--run-dir", str(tmp_path / "l1")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    # once it publishes it holds the broker; the second joins well within its 4 s (waiting
    # for the broker's delivery count as well outlasted a 2 s, then a 4 s run on a host
    # crowded by three test workers: the management API's figures lag)
    wait_until_publishing(tmp_path / "l1", first, tmp_path / "home" / "broker", logs="",
                           at_least=0)
    second = subprocess.Popen([sys.executable, "-m", "mqprobe", "compare", *small, "--duration",
                               "5", "--json", str(tmp_path / "second.json"), "--run-dir",
                               str(tmp_path / "l2")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    run = json.loads((tmp_path / "second.json").read_text())["runs"][0]
    assert run["lost"] == 0 and run["error"] is None and run["delivered"] > 0
    no_broker_left(tmp_path)


@pytest.mark.integration  # a broker of its own
def test_broker_up_over_a_stale_data_dir_shows_its_url_and_outlives_the_commands_using_it(
        tmp_path):
    """`broker up` over what a crashed broker left (a dead pid, an old data dir); its URL
    redacted unless asked; a compare uses it and leaves it running; `broker down` ends it."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    env["MQPROBE_HOME"] = str(tmp_path / "home")
    state_dir = tmp_path / "home" / "broker"
    (state_dir / "mnesia").mkdir(parents=True)
    (state_dir / "mnesia" / "junk").write_text("old")
    (state_dir / "state.json").write_text(json.dumps({
        "pid": 2 ** 22 + 11, "amqp_port": 1, "management_port": 1, "dist_port": 1,
        "user": "u", "password": "p", "node_name": "x@localhost", "started_at": 0}))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mqprobe", *args], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=180)

    assert cli("broker", "status", "--state-dir", str(state_dir)).returncode == 1
    absent = cli("broker", "url")
    assert absent.returncode == 1 and "mqprobe broker up" in absent.stderr
    up = cli("broker", "up")
    assert up.returncode == 0, up.stderr
    try:
        state = ManagedBroker(state_dir).load_state()
        assert state.password not in up.stdout + up.stderr
        assert not (state_dir / "mnesia" / "junk").exists()
        assert oct(os.stat(state_dir / "state.json").st_mode)[-3:] == "600"
        status = cli("broker", "status", "--json")
        assert status.returncode == 0 and state.password not in status.stdout
        info = json.loads(status.stdout)
        assert info["running"] and info["version"].startswith("3.")
        redacted = cli("broker", "url").stdout.strip()
        assert state.password not in redacted and redacted.endswith(
            f"@127.0.0.1:{state.amqp_port}/")
        shown = cli("broker", "url", "--show-password").stdout.strip()
        assert shown == f"amqp://{state.user}:{state.password}@127.0.0.1:{state.amqp_port}/"
        done = cli("compare", "--topologies", "single-topic", "--layouts", "per-node",
                   "--groups", "1", "--group-size", "5", "--duration", "1",
                   "--run-dir", str(tmp_path / "logs"))
        assert done.returncode == 0, done.stderr
        assert cli("broker", "status").returncode == 0  # still running
    finally:
        down = cli("broker", "down")
    assert down.returncode == 0 and "broker stopped" in down.stdout, down.stderr
    assert cli("broker", "status").returncode == 1
    assert not pid_alive(state.pid)  # gone, or a zombie waiting for a non-reaping init
    no_broker_left(tmp_path)


def test_a_url_asks_for_short_heartbeats_unless_it_names_its_own():
    from mqprobe.broker.connect import with_heartbeat

    assert with_heartbeat("amqp://u:p@h:5672/v", 5) == "amqp://u:p@h:5672/v?heartbeat=5"
    assert with_heartbeat("amqp://h/?name=x", 5) == "amqp://h/?name=x&heartbeat=5"
    assert with_heartbeat("amqp://h/?heartbeat=30", 5) == "amqp://h/?heartbeat=30"

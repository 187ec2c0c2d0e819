"""`mqprobe trace` on a cluster that has no mqprobe code: python-socketio's own
AsyncAioPikaManager, unmodified (tests/servers/socketio_manager.py), two nodes."""

import contextlib
import json
import subprocess
import sys

from mqprobe.broker import free_port

from ..conftest import REPO, run_cli


@contextlib.contextmanager
def _manager_nodes(amqp_url: str, count: int):
    procs, urls = [], []
    try:
        for _ in range(count):
            proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "servers" /
                                                         "socketio_manager.py"),
                                     str(free_port()), amqp_url],
                                    stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{json.loads(proc.stdout.readline())['port']}")
        yield urls
    finally:
        for proc in procs:  # ours, by pid
            proc.terminate()
            proc.wait(10)


def test_trace_probes_an_unmodified_socketio_manager_cluster_end_to_end(vhost_url, tmp_path):
    with _manager_nodes(vhost_url, 2) as urls:
        result = run_cli("trace", "--group", "7", "--socketio-url", ",".join(urls),
                         "--via", "socketio-manager", "--publish", "5", "--duration", "2",
                         "--json", str(tmp_path / "trace.json"), amqp_url=vhost_url, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((tmp_path / "trace.json").read_text())
    assert (summary["probes_sent"], summary["probes_lost"], summary["received"]) == (10, 0, 10)
    # no server stamped them: e2e only, never a hop made of a missing stamp
    assert summary["e2e_only"] and set(summary["hops"]) == {"e2e", "e2e_planned"}
    assert 0 < summary["hops"]["e2e"]["p50_ms"] < 1000 and not summary["hops"]["e2e"].get("negative")
    # each node (known by its URL) emitted every probe to its own listener
    assert set(summary["nodes"]) == set(urls)
    assert all(hops["e2e"]["count"] == 10 for hops in summary["nodes"].values())
    lines = [line for line in result.stdout.splitlines() if line.startswith("probe")]
    assert len(lines) == 20 and all(line.count("n/a") == 3 for line in lines), lines[:3]
    assert "e2e only" in result.stdout


def test_trace_listens_to_an_unmodified_cluster_and_says_why_events_are_untraced(vhost_url):
    """The cluster's own chat messages carry no mqprobe field: each is counted untraced,
    with that reason shown, and no hop is printed as a number."""
    import asyncio

    import socketio

    async def chat(url: str) -> None:
        client = socketio.AsyncClient()
        await client.connect(url, transports=["websocket"])
        for i in range(3):
            await client.emit("say", {"group": "7", "text": f"hello {i}"})
        await asyncio.sleep(0.5)
        await client.disconnect()

    with _manager_nodes(vhost_url, 2) as urls:
        trace = subprocess.Popen([sys.executable, "-m", "mqprobe", "trace", "--group", "7",
                                  "--socketio-url", urls[1], "--duration", "5"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # trace says whom it follows as it starts (a fresh clone's first imports compile
        # for seconds: a chat timed from the launch once came before the listener joined)
        first = trace.stdout.readline()
        asyncio.run(asyncio.sleep(1.5))  # the listener joins on node 2; the chat is on 1
        asyncio.run(chat(urls[0]))
        out, err = trace.communicate(timeout=60)
        out = first + out
    assert trace.returncode == 0, err
    out = " ".join(out.split())
    assert "untraced events 3: 3 x no mqprobe list first in the event's object" in out, out
    assert all(f"{hop} n/a" in out for hop in ("mq", "server", "delivery", "e2e")), out

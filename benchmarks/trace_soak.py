"""Does `mqprobe trace --duration 0` (a watch) stay flat over hours, and what does it cost?

    .venv/bin/python benchmarks/trace_soak.py [--minutes 60] [--freeze-every 15]

A broker of its own (a throwaway MQPROBE_HOME), the example chat server twice (mqprobe
embedded), and a watch of group 7 at 1 probe a second with the servers' intervals; the
broker is frozen 2 s every --freeze-every minutes, so episodes begin and end. Every
minute: the watch's RSS and CPU. At the end (SIGINT to the watch, as Ctrl-C): the
episodes it logged, and its CPU per probe. Prints Markdown for BENCHMARKS.md. Ends only
processes it started, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mqprobe.broker import ManagedBroker
from mqprobe.cpu import CLOCK_TICK_NS

REPO = Path(__file__).resolve().parent.parent


def rss_and_cpu(pid: int) -> tuple[int, float]:
    """A process's resident memory (KiB) and CPU time so far (s)."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) * CLOCK_TICK_NS / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--freeze-every", type=float, default=15, help="minutes")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mqprobe-soak-"))
    env = {**{k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"},
           "MQPROBE_HOME": str(home)}
    broker = ManagedBroker(home / "broker")
    state = broker.up()
    servers, watch = [], None
    try:
        urls = []
        for node in ("chat-1", "chat-2"):
            server = subprocess.Popen([sys.executable, str(REPO / "examples" / "chat_server.py"),
                                       "--port", "0", "--node", node, "--amqp-url",
                                       state.amqp_url], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, env=env)
            servers.append(server)
            urls.append(f"http://127.0.0.1:{json.loads(server.stdout.readline())['port']}")
        log = home / "episodes.jsonl"
        watch = subprocess.Popen(
            [sys.executable, "-m", "mqprobe", "trace", "--group", "7", "--duration", "0",
             "--socketio-url", ",".join(urls), "--exchange", "chat.groups", "--metrics-url",
             ",".join(f"{url}/metrics" for url in urls), "--log", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        print(f"\n### A watch for {args.minutes:g} min (`trace --duration 0`, 1 probe/s, the "
              f"broker frozen 2 s every {args.freeze_every:g} min)\n")
        print("| minute | RSS (MiB) | CPU so far (s) | CPU in the minute (ms) |")
        print("| --- | --- | --- | --- |")
        started, last_cpu, next_freeze = time.monotonic(), 0.0, args.freeze_every * 60
        began = time.time()  # the episodes' stamps are CLOCK_REALTIME
        rows = []
        for minute in range(1, int(args.minutes) + 1):
            while time.monotonic() - started < minute * 60:
                if time.monotonic() - started >= next_freeze:
                    os.killpg(state.pid, signal.SIGSTOP)
                    try:
                        time.sleep(2)
                    finally:
                        os.killpg(state.pid, signal.SIGCONT)
                    next_freeze += args.freeze_every * 60
                time.sleep(1)
            rss, cpu = rss_and_cpu(watch.pid)
            rows.append((minute, rss, cpu))
            print(f"| {minute} | {rss / 1024:.1f} | {cpu:.1f} | {(cpu - last_cpu) * 1000:.0f} |",
                  flush=True)
            last_cpu = cpu
        watch.send_signal(signal.SIGINT)
        _out, err = watch.communicate(timeout=120)
        episodes = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        causes = sorted({e["verdict"]["cause"].partition(":")[0] for e in episodes})
        first, last = rows[0], rows[-1]
        seconds = max(1, (last[0] - 1) * 60)  # after the first minute: probes, one a second
        print(f"\nexit {watch.returncode}; {len(episodes)} episodes logged "
              f"({', '.join(causes)}); "
              f"RSS {first[1] / 1024:.1f} MiB at minute 1, {last[1] / 1024:.1f} MiB at minute "
              f"{last[0]}; CPU after minute 1: {(last[2] - first[2]) * 1000 / seconds:.2f} "
              f"ms a probe ({(last[2] - first[2]) / seconds:.4f} cores)"
              + (f"; stderr: {err[-300:]}" if watch.returncode else ""))
        for episode in episodes:  # when each began (minutes into the watch), and its cause
            print(f"- minute {(episode['start_ns'] / 1e9 - began) / 60:.1f}, "
                  f"{episode['worst_e2e_ms']:.0f} ms at worst: {episode['verdict']['culprit']}"
                  f" - {episode['verdict']['cause'][:160]}")
    finally:
        if watch and watch.poll() is None:
            watch.kill()
        for server in servers:
            server.terminate()
            server.wait(10)
        broker.down()


if __name__ == "__main__":
    main()

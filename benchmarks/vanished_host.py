"""How long a vanished client host's connections stay on the servers, and what frees them.

The seed's diary: its load processes' host died, and the server still held 14,000
ESTABLISHED connections until TCP keepalive cured it. Here the swarm runs on a host of its
own (a network namespace, tests/hosts.py: needs root and iproute2), the nodes on another,
compare and a managed broker on this one. Mid-run the swarm's host vanishes (its interfaces
down: no FIN, no RST), and compare's evidence says what each node still held, how long
after, and why: once as python-socketio's defaults leave it, once with a short socket.io
ping, once with TCP keepalive. The run fails 10 s after the host went quiet (the agent is
taken for gone), so "nothing within the run" means nothing within those 10 s.

    .venv/bin/python benchmarks/vanished_host.py [--group-size 500] [--groups 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mqprobe.broker.managed import ManagedBroker  # noqa: E402
from tests.hosts import Hosts  # noqa: E402

VARIANTS = {
    "python-socketio's defaults": [],
    "--ping-interval 2 --ping-timeout 2": ["--ping-interval", "2", "--ping-timeout", "2"],
    "--tcp-keepalive 2": ["--tcp-keepalive", "2"],
}


def one(broker, variant: list[str], groups: int, size: int, settle_s: float) -> list[str]:
    state = broker.running_state()
    hosts = Hosts(state.amqp_port)
    try:
        hosts.start_agents(state.user, state.password, cwd=str(REPO))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            compare = subprocess.Popen(
                [sys.executable, "-m", "mqprobe", "compare", "--topologies", "single-topic",
                 "--layouts", "per-node", "--place", "node=nodes", "--place", "swarm=swarm",
                 "--groups", str(groups), "--group-size", str(size), "--rate", "1",
                 "--duration", "120", *variant, "--json", str(out / "r.json"),
                 "--run-dir", str(out / "logs"), "--amqp-url", state.amqp_url],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(settle_s)
            hosts.hosts["swarm"].vanish()
            compare.wait(timeout=300)
            run = json.loads((out / "r.json").read_text())["runs"][0]
            return [line for line in run["verdict"]["evidence"]
                    if "was last heard" in line or "has said nothing" in line]
    finally:
        hosts.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--group-size", type=int, default=500)
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds from compare's start to the vanish")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mqprobe-vanish-"))
    broker = ManagedBroker(home / "broker")
    broker.up()
    try:
        print(f"{args.groups} x {args.group_size} clients, 1 msg/s a group, "
              f"{platform.node()}, {os.cpu_count()} cores\n")
        for name, flags in VARIANTS.items():
            print(f"## {name}")
            for line in one(broker, flags, args.groups, args.group_size, args.settle):
                print(f"- {line}")
            print()
    finally:
        broker.down()


if __name__ == "__main__":
    main()

"""The official Node socket.io 4 server (tests/servers/socketio4.js, npm, installed into
.venv/node by `./dev test`) as the swarm benchmarks run it: on loopback, free ports, ended
by their pids when the benchmark ends."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mqprobe.broker import free_port

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def socketio4_servers(count: int = 1) -> Iterator[list[str]]:
    """`count` servers, each listening when this yields their URLs."""
    env = {**os.environ, "NODE_PATH": str(REPO / ".venv" / "node" / "node_modules")}
    servers, urls = [], []
    try:
        for _ in range(count):
            port = free_port()
            server = subprocess.Popen(["node", str(REPO / "tests" / "servers" / "socketio4.js"),
                                       str(port)], env=env, stdout=subprocess.PIPE, text=True)
            servers.append(server)
            if "listening" not in server.stdout.readline():
                raise SystemExit("the Node socket.io 4 server did not start: run ./dev test once "
                                 "to install it into .venv/node")
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for server in servers:  # ours, by pid
            server.terminate()
            server.wait(10)

"""Hosts that are really apart: network namespaces a test makes itself, each a network stack
of its own, joined by veth pairs and reached by addresses of those namespaces only.

    this host (compare, the broker on loopback, a relay to the broker on each link's end here)
      |-- 10.231.N.1 ---- veth ---- 10.231.N.2  host "nodes"
      |-- 10.231.N+1.1 -- veth ---- 10.231.N+1.2  host "swarm"
    host "nodes" 10.231.N+2.1 -- veth -- 10.231.N+2.2 host "swarm" (the swarm reaches the nodes)

The broker keeps listening on loopback only; each link's end on this host has a relay to it
(an address on an interface the test made, which only that namespace reaches). `vanish`
takes a host's interfaces down: a host that lost power, no FIN and no RST. Everything is
undone by `close` (the namespaces, their interfaces, the relay), and processes started in
a namespace are ended by their pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field


class NoNamespaces(Exception):
    """Namespaces cannot be made here: the reason, for a skip."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode:
        raise NoNamespaces(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass
class Host:
    name: str
    netns: str
    to_here: str  # this host's address on its link to the coordinator's host
    here_end: str  # the coordinator's end of that link (where the relay listens)
    interfaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    vanished: bool = False

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """A process in this host's network namespace (ended by close, by its pid)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *args],
                                start_new_session=True, **kwargs)
        self.processes.append(proc)
        return proc

    def vanish(self) -> None:
        """Every interface of this host down, at once: nothing more in or out."""
        self.vanished = True
        for interface in self.interfaces:
            _ip("-n", self.netns, "link", "set", interface, "down")


class Relay:
    """TCP relays on this host's ends of the links to the broker on loopback: one event
    loop in a thread of its own."""

    def __init__(self, addresses: list[str], target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        ready = threading.Event()

        async def serve() -> None:
            for address in addresses:
                server = await asyncio.start_server(self._accept, address, self.port or 0)
                self.port = self.port or server.sockets[0].getsockname()[1]
                self._servers.append(server)
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="test-relay", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise NoNamespaces("the relay to the broker did not start")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        with contextlib.suppress(asyncio.CancelledError):  # closed with the relay: done
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            relaying = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in relaying:
                task.cancel()
            await asyncio.gather(*relaying, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class Hosts:
    """Two hosts apart from this one, "nodes" and "swarm", linked to it and to each other."""

    def __init__(self, broker_port: int) -> None:
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise NoNamespaces("network namespaces need root and iproute2's `ip`")
        tag = f"mq{os.getpid() % 100000}"
        base = 3 * (os.getpid() % 80)
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []  # namespaces, to delete
        self._root_ends: list[str] = []  # interfaces on this host, to delete
        self.relay: Relay | None = None
        try:
            for index, name in enumerate(("nodes", "swarm")):
                netns, net = f"{tag}{name}", f"10.231.{base + index}"
                _ip("netns", "add", netns)
                self._made.append(netns)
                here, there = f"{tag}{name[0]}h", f"{tag}{name[0]}t"
                _ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", netns)
                self._root_ends.append(here)
                _ip("addr", "add", f"{net}.1/30", "dev", here)
                _ip("link", "set", here, "up")
                _ip("-n", netns, "addr", "add", f"{net}.2/30", "dev", there)
                _ip("-n", netns, "link", "set", there, "up")
                _ip("-n", netns, "link", "set", "lo", "up")
                self.hosts[name] = Host(name, netns, f"{net}.2", f"{net}.1", [there])
            nodes, swarm = self.hosts["nodes"], self.hosts["swarm"]
            net = f"10.231.{base + 2}"
            _ip("link", "add", f"{tag}ns", "type", "veth", "peer", "name", f"{tag}sn")
            _ip("link", "set", f"{tag}ns", "netns", nodes.netns)
            _ip("link", "set", f"{tag}sn", "netns", swarm.netns)
            _ip("-n", nodes.netns, "addr", "add", f"{net}.1/30", "dev", f"{tag}ns")
            _ip("-n", swarm.netns, "addr", "add", f"{net}.2/30", "dev", f"{tag}sn")
            for host, interface in ((nodes, f"{tag}ns"), (swarm, f"{tag}sn")):
                _ip("-n", host.netns, "link", "set", interface, "up")
                host.interfaces.append(interface)
            self.nodes_for_swarm = f"{net}.1"  # where the swarm's host reaches the nodes
            self.relay = Relay([h.here_end for h in self.hosts.values()], broker_port)
        except BaseException:
            self.close()
            raise

    def amqp_url(self, host: Host, user: str, password: str) -> str:
        """The broker's URL as that host reaches it: through the relay on its link."""
        assert self.relay is not None
        return f"amqp://{user}:{password}@{host.here_end}:{self.relay.port}/"

    def start_agents(self, user: str, password: str, vhost: str = "", cwd: str = ".",
                     skew_ms: dict[str, float] | None = None) -> None:
        """`mqprobe agent` on each host, named after it, reaching the broker through its own
        link (nodes listen where the swarm's host reaches them); returns once each is ready.
        skew_ms: a clock each host pretends to (MQPROBE_CLOCK_SKEW_MS)."""
        for host in self.hosts.values():
            env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
            if skew_ms:
                env["MQPROBE_CLOCK_SKEW_MS"] = str(skew_ms[host.name])
            listen = self.nodes_for_swarm if host.name == "nodes" else host.to_here
            proc = host.popen([sys.executable, "-m", "mqprobe", "agent", "--name", host.name,
                               "--listen-host", listen, "--amqp-url",
                               self.amqp_url(host, user, password) + vhost],
                              cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert f"agent {host.name} ready" in line, line

    def close(self) -> None:
        # ours, by pid: each with the pieces it started (a session of its own); asked to stop
        # all at once, then ended; a vanished host's cannot say goodbye and is ended at once
        processes = [(host, proc) for host in self.hosts.values() for proc in host.processes]
        for host, proc in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if host.vanished else signal.SIGTERM)
        for _host, proc in processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self.relay is not None:
            self.relay.close()
        for netns in self._made:
            with contextlib.suppress(NoNamespaces):
                _ip("netns", "del", netns)
        for interface in self._root_ends:  # gone with their peers, unless a peer never moved
            with contextlib.suppress(NoNamespaces):
                _ip("link", "del", interface)

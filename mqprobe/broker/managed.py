"""A throwaway RabbitMQ node on loopback, started on demand and shared by the commands
using it (broker_for).

Debian's /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq user and fails on
root-owned directories, so we start /usr/lib/rabbitmq/bin/rabbitmq-server with every
RABBITMQ_* path pointing into a private data dir, random free ports and random credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from mqprobe.broker.connect import BrokerError, check_reachable, management_get, redact_url
from mqprobe.cpu import pid_alive
from mqprobe.signals import signals_deferred

SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/sbin/rabbitmq-server")
INSTALL_HINT = (
    "rabbitmq-server is not installed: run `sudo apt-get install rabbitmq-server` "
    "(Debian/Ubuntu), or pass --amqp-url to use a broker you already have."
)


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000  # below it lie the well-known services' ports
PORT_TAKEN_SIGNS = ("eaddrinuse", "dist_port_already_used", "nodistribution")
START_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now, from below the kernel's
    ephemeral range where one is: a port from inside it can be handed to an outgoing
    connection (a swarm's thousands, beside us) before the node binds it, and the node
    then dies while starting."""
    low = _ephemeral_low()
    for _ in range(50):
        port = LOWEST_PORT + secrets.randbelow(low - LOWEST_PORT) if low > LOWEST_PORT else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def find_server_binary() -> str:
    for candidate in SERVER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rabbitmq-server")
    if found:
        return found
    raise BrokerError(INSTALL_HINT)


def default_state_dir() -> Path:
    return Path(os.environ.get("MQPROBE_HOME", Path.home() / ".mqprobe")) / "broker"


@dataclass
class BrokerState:
    """What `broker up` leaves behind so that status, down and other commands find the node."""

    pid: int
    amqp_port: int
    management_port: int
    dist_port: int
    user: str
    password: str
    node_name: str
    started_at: float
    kept: bool = False  # started (or adopted) by `broker up`: stays until `broker down`
    epmd_port: int = 0  # its own Erlang port mapper, stopped with it (0: the shared 4369)
    prometheus_port: int = 0  # rabbitmq_prometheus on loopback (0: a node from before it)

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.management_port}/"

    @property
    def prometheus_url(self) -> str:
        """rabbitmq_prometheus's endpoint ('' when this node runs without it)."""
        return f"http://127.0.0.1:{self.prometheus_port}/" if self.prometheus_port else ""


def _amqp_answers(amqp_url: str) -> bool:
    """Whether a client can log in over AMQP. A node whose port and management API answer
    can still close a client's connection at once while it finishes booting (seen once in
    a run of compares: 'Server connection unexpectedly closed' on the first connection)."""
    import pika

    params = pika.URLParameters(amqp_url)
    params.connection_attempts, params.socket_timeout, params.blocked_connection_timeout = 1, 2, 2
    try:
        pika.BlockingConnection(params).close()
        return True
    except Exception:  # any refusal: not ready yet, try again until the deadline
        return False


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class ManagedBroker:
    """One throwaway RabbitMQ node whose files all live in `state_dir`."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_file = self.state_dir / "state.json"

    # -- state -------------------------------------------------------------------------
    def load_state(self) -> BrokerState | None:
        try:
            data = json.loads(self.state_file.read_text())
            data.setdefault("kept", True)  # written before users were counted: never ours to stop
            return BrokerState(**data)
        except (OSError, ValueError, TypeError):
            return None

    def running_state(self) -> BrokerState | None:
        """The state of a node that is alive and answering, else None."""
        state = self.load_state()
        if state and pid_alive(state.pid) and _port_open(state.amqp_port):
            return state
        return None

    def status(self) -> dict:
        state = self.load_state()
        if state is None:
            return {"running": False, "state_dir": str(self.state_dir)}
        alive = pid_alive(state.pid)
        info = {
            "running": alive and _port_open(state.amqp_port),
            "pid": state.pid,
            "amqp_url": redact_url(state.amqp_url),
            "management_url": redact_url(state.management_url),
            "state_dir": str(self.state_dir),
            "uptime_s": round(time.time() - state.started_at, 1),
        }
        if info["running"]:
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                overview = management_get(state.management_url, "/api/overview")
                info["version"] = overview.get("rabbitmq_version")
        return info

    # -- up ----------------------------------------------------------------------------
    def up(self, timeout: float = 90.0) -> BrokerState:
        """Start the node (or return the one already running) and wait until it serves."""
        running = self.running_state()
        if running:
            return running
        binary = find_server_binary()
        stale = self.load_state()
        if stale and pid_alive(stale.pid):
            self._stop_pid(stale.pid)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start(binary, timeout)
            except _PortTaken as taken:
                _stop_epmd(taken.state.epmd_port)
                if attempt == START_ATTEMPTS:
                    raise BrokerError(f"rabbitmq-server could not start: another program took "
                                      f"one of its ports on loopback, {START_ATTEMPTS} times "
                                      f"(log in {self.state_dir})") from None
        raise AssertionError("unreachable")

    def _start(self, binary: str, timeout: float) -> BrokerState:
        """One start on fresh ports; _PortTaken when one was bound by another program
        between our choosing it and the node binding it."""
        # A throwaway node: a stale data dir (crash, reboot) is wiped, never reused.
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        os.chmod(self.state_dir, 0o700)
        state = BrokerState(
            pid=0,
            amqp_port=free_port(),
            management_port=free_port(),
            dist_port=free_port(),
            epmd_port=free_port(),
            prometheus_port=free_port(),
            user="mqprobe-" + secrets.token_hex(3),
            password=secrets.token_urlsafe(18),
            node_name="",
            started_at=time.time(),
        )
        state.node_name = f"mqprobe-{state.amqp_port}@localhost"
        env = self._environment(state)
        log = open(self.state_dir / "server.out", "wb")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            [binary],
            env=env,
            cwd=self.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        state.pid = process.pid
        self.state_file.write_text(json.dumps(asdict(state)))
        os.chmod(self.state_file, 0o600)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._stop_pid(process.pid)
                output = (self.state_dir / "server.out").read_text(errors="replace")
                if any(sign in output for sign in PORT_TAKEN_SIGNS):
                    raise _PortTaken(state)
                raise BrokerError(
                    f"rabbitmq-server exited with code {process.returncode} while starting "
                    f"(log in {self.state_dir}): {output[-600:].strip().splitlines()[-1:]}"
                )
            if _port_open(state.amqp_port):
                with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                    management_get(state.management_url, "/api/overview", timeout=1.0)
                    if _amqp_answers(state.amqp_url):
                        return state
            time.sleep(0.3)
        self._stop_pid(process.pid)
        _stop_epmd(state.epmd_port)
        raise BrokerError(f"rabbitmq-server did not become ready within {timeout:.0f} s "
                          f"(log in {self.state_dir})")

    def _environment(self, state: BrokerState) -> dict[str, str]:
        base = self.state_dir
        (base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{state.amqp_port}",
                    "management.tcp.ip = 127.0.0.1",
                    f"management.tcp.port = {state.management_port}",
                    f"default_user = {state.user}",
                    f"default_pass = {state.password}",
                    "loopback_users = none",
                    "log.console = false",
                    "log.file.level = warning",
                    # management samples every 1 s so queue depth over time has resolution
                    "collect_statistics_interval = 1000",
                    *([] if not state.prometheus_port else [
                        "prometheus.tcp.ip = 127.0.0.1",
                        f"prometheus.tcp.port = {state.prometheus_port}"]),
                    "",
                ]
            )
        )
        plugins = "rabbitmq_management" + (",rabbitmq_prometheus" if state.prometheus_port else "")
        (base / "enabled_plugins").write_text(f"[{plugins}].\n")
        (base / "rabbitmq-env.conf").write_text("")
        env = dict(os.environ)
        env.update(
            HOME=str(base),
            RABBITMQ_NODENAME=state.node_name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(state.amqp_port),
            RABBITMQ_DIST_PORT=str(state.dist_port),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
            # a node that fails to start dumps here, not in the user's working directory
            ERL_CRASH_DUMP=str(base / "erl_crash.dump"),
            # Erlang distribution and epmd on loopback only.
            ERL_EPMD_ADDRESS="127.0.0.1",
            **({"ERL_EPMD_PORT": str(state.epmd_port)} if state.epmd_port else {}),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node (diagnosis, or a test's fault); its output. The
        node need not serve AMQP (after `stop_app` it does not): its process must run."""
        command, env = self._rabbitmqctl(args)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed: "
                              f"{(done.stderr or done.stdout).strip()[-300:]}")
        return done.stdout

    def rabbitmqctl_started(self, *args: str) -> subprocess.Popen:
        """rabbitmqctl started and left running (its Erlang VM takes seconds to boot on a
        busy core: a test arms a fault with it ahead of the moment it needs it)."""
        command, env = self._rabbitmqctl(args)
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def _rabbitmqctl(self, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        state = self.load_state()
        if state is None or not pid_alive(state.pid):
            raise BrokerError(f"no managed broker is running in {self.state_dir}")
        binary = Path(find_server_binary()).with_name("rabbitmqctl")
        return [str(binary), "-n", state.node_name, *args], self._environment(state)

    # -- who uses it --------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time decides whether to start, join, leave or stop the node."""
        lock_path = self.state_dir.parent / f"{self.state_dir.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _users_file(self) -> Path:
        return self.state_dir / "users"

    def users(self) -> list[int]:
        """The processes using the node now (the dead are left out)."""
        try:
            pids = [int(line) for line in self._users_file().read_text().split()]
        except (OSError, ValueError):
            return []
        return [pid for pid in pids if pid_alive(pid)]

    def _write_users(self, pids: list[int]) -> None:
        self._users_file().write_text("".join(f"{pid}\n" for pid in sorted(set(pids))))

    def keep(self) -> None:
        """`broker up` on a node started on demand: it now stays until `broker down`."""
        state = self.load_state()
        if state and not state.kept:
            state.kept = True
            self.state_file.write_text(json.dumps(asdict(state)))

    # -- down --------------------------------------------------------------------------
    def down(self, timeout: float = 30.0) -> bool:
        """Stop the node if it runs; True when one was stopped."""
        state = self.load_state()
        if state is None:
            return False
        stopped = pid_alive(state.pid)
        if stopped:
            self._stop_pid(state.pid, timeout)
        _stop_epmd(state.epmd_port)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return stopped

    @staticmethod
    def _stop_pid(pid: int, timeout: float = 30.0) -> None:
        """End the node's process group at once (the wrapper leads its own session, so the
        group is the node's and nothing else). It is a throwaway node whose data dir goes
        next: a clean shutdown keeps nothing, and took 7 s of every managed run."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until no process of the group is left
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)


class _PortTaken(Exception):
    """The node died while starting because a port chosen for it was taken meanwhile."""

    def __init__(self, state: BrokerState) -> None:
        super().__init__(state.amqp_port)
        self.state = state


def _stop_epmd(port: int) -> None:
    """Stop the port mapper the node started on a port of its own, found by the port in its
    environment (it detaches, so it is in no process group of ours); the shared one (4369,
    other Erlang programs may use it) is never touched."""
    if not port:
        return
    mark = f"ERL_EPMD_PORT={port}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() != "epmd":
                continue
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ValueError):
            continue


@contextlib.contextmanager
def broker_for(amqp_url: str | None, state_dir: Path | None = None
               ) -> Iterator[tuple[str, str | None, str]]:
    """Yield (amqp_url, management_url or None, prometheus_url or '') for a command that
    measures: the two APIs are known for the managed broker only.

    With no URL: the managed broker, started on demand. Every command using it is listed
    as a user; the last one out stops it, unless `broker up` keeps it. So two commands on
    one MQPROBE_HOME share one node, and neither stops it under the other.
    """
    if amqp_url:
        check_reachable(amqp_url)
        yield amqp_url, None, ""
        return
    broker, me = ManagedBroker(state_dir), os.getpid()
    with broker.locked():
        state = broker.running_state()
        if state is None:
            try:
                state = broker.up()
            except BaseException:  # interrupted while it started: leave no broker behind
                with signals_deferred():
                    broker.down()
                raise
        # a node started on demand whose users are all gone is a leftover: joining it
        # makes us its user, so it is stopped when we are done
        broker._write_users([*broker.users(), me])
    try:
        yield state.amqp_url, state.management_url, state.prometheus_url
    finally:
        with signals_deferred(), broker.locked():
            others = [pid for pid in broker.users() if pid != me]
            current = broker.load_state()
            if current is not None and current.pid == state.pid:
                if others or current.kept:
                    broker._write_users(others)
                else:
                    broker.down()



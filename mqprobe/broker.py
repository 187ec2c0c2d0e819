"""A throwaway RabbitMQ node on loopback, and the checks every command makes on a broker.

Debian's /usr/sbin/rabbitmq-server wrapper switches to the rabbitmq user and fails on
root-owned directories, so we start /usr/lib/rabbitmq/bin/rabbitmq-server with every
RABBITMQ_* path pointing into a private data dir, random free ports and random credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mqprobe.errors import MqprobeError, url_problem
from mqprobe.process import signals_deferred
from mqprobe.stamps import now_ns
from mqprobe.timeline import EventKind, IntervalTracker, Recorder, TimedEvent

SERVER_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/sbin/rabbitmq-server")
INSTALL_HINT = (
    "rabbitmq-server is not installed: run `sudo apt-get install rabbitmq-server` "
    "(Debian/Ubuntu), or pass --amqp-url to use a broker you already have."
)


class BrokerError(MqprobeError):
    """A broker could not be started, reached or stopped; the message is one sentence."""


def redact_url(url: str) -> str:
    """The URL with its password replaced, safe to print or save."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL we can take apart: say nothing of it
        return "<a URL that cannot be read>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def management_get(management_url: str, path: str, timeout: float = 3.0) -> object:
    """GET a management API path (e.g. '/api/overview') and return the decoded JSON."""
    parts = urllib.parse.urlsplit(management_url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    request = urllib.request.Request(base + path)
    if parts.username:
        token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def check_management(management_url: str) -> None:
    """A management API the user named must answer (a wrong password or a wrong port would
    otherwise cost the run its alarms and queue evidence without a word)."""
    try:
        management_get(management_url, "/api/overview")
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise BrokerError(f"the management API at {redact_url(management_url)} did not answer: "
                          f"{str(reason).splitlines()[0][:160] if str(reason) else type(exc).__name__}"
                          ) from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


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
                tail = (self.state_dir / "server.out").read_text(errors="replace")[-600:]
                raise BrokerError(
                    f"rabbitmq-server exited with code {process.returncode} while starting "
                    f"(log in {self.state_dir}): {tail.strip().splitlines()[-1:]}"
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


def check_reachable(amqp_url: str, timeout: float = 5.0) -> None:
    """Raise BrokerError with one sentence when the broker at `amqp_url` cannot be reached."""
    if problem := url_problem("--amqp-url", amqp_url, ("amqp", "amqps"),
                              "amqp://user:pass@host:5672/"):
        raise BrokerError(problem)
    parts = urllib.parse.urlsplit(amqp_url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the broker at {redact_url(amqp_url)}: {exc.strerror or exc}"
        ) from None


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


def connect_problem(exc: BaseException, amqp_url: str) -> BrokerError:
    """One sentence for why an AMQP connection to amqp_url failed (never the password)."""
    parts = urllib.parse.urlsplit(amqp_url)
    where = f"the broker at {redact_url(amqp_url)}"
    text = str(exc)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    if isinstance(exc, ssl.SSLError) or "[SSL" in text:  # aiormq may wrap it
        return BrokerError(f"{where} did not answer TLS: amqps:// needs a TLS port; for a "
                           "plain AMQP port use amqp://")
    if "ACCESS_REFUSED" in text or type(exc).__name__ == "ProbableAuthenticationError":
        return BrokerError(f"{where} refused the login of user {parts.username or 'guest'!r}: "
                           "check the user name and password")
    if "NOT_ALLOWED" in text or "vhost" in text or "Connection.Close" in text:
        return BrokerError(f"{where} refused virtual host {vhost!r}: it does not exist, or user "
                           f"{parts.username or 'guest'!r} may not use it")
    if isinstance(exc, OSError | TimeoutError):
        return BrokerError(f"cannot reach {where}: {getattr(exc, 'strerror', None) or exc}")
    return BrokerError(f"{where} refused the connection: {type(exc).__name__}: "
                       f"{text.splitlines()[0][:200] if text else ''}")


async def remove_declared(amqp_url: str, exchanges: list[str], queues: list[str],
                          timeout: float = 3.0, if_unused: bool = False) -> dict:
    """Delete what a run declared on the broker (some of it outlives its users: python-
    socketio's manager declares a permanent exchange), over a connection of its own."""
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=timeout)
    except Exception:
        return {"removed": [], "left": queues + exchanges}
    try:
        return await delete_declared(connection, exchanges, queues, timeout, if_unused)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 3)


async def delete_declared(connection, exchanges: Sequence[str], queues: Sequence[str] = (),
                          timeout: float = 3.0, if_unused: bool = False) -> dict:
    """Delete queues, then exchanges, in order, on an open connection. What is already gone
    is fine; returns what was removed and what could not be, so a result says what is
    left. With `if_unused`, a queue someone consumes or an exchange still bound is left."""
    removed, left = [], []
    try:
        channel = await connection.channel()
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                try:
                    if kind == "queue":
                        await asyncio.wait_for(
                            channel.queue_delete(name, if_unused=if_unused), timeout)
                    else:
                        await asyncio.wait_for(
                            channel.exchange_delete(name, if_unused=if_unused), timeout)
                    removed.append(name)
                except Exception as exc:
                    if "NOT_FOUND" in str(exc):  # gone already (auto-delete): fine
                        removed.append(name)
                    else:
                        left.append(name)
                    if channel.is_closed:
                        channel = await connection.channel()
    except Exception:
        left += [n for n in [*queues, *exchanges] if n not in removed and n not in left]
    return {"removed": removed, "left": left}


OUR_PREFIX = "mqprobe."  # every queue and exchange mqprobe declares is named so


@dataclass(frozen=True)
class Leftover:
    """A queue or exchange of mqprobe's on a broker, and whether anything still uses it."""

    kind: str  # "queue" or "exchange"
    name: str
    in_use: bool
    detail: str


async def leftovers(amqp_url: str, management_url: str) -> list[Leftover]:
    """What mqprobe left on the broker's virtual host: the management API lists the names
    (AMQP cannot), passive declares count each queue's consumers exactly (the API's
    statistics lag by seconds). A queue is in use while something consumes it; an exchange
    while it is bound to a queue in use (the rest goes with the queues it feeds)."""
    path = urllib.parse.urlsplit(amqp_url).path
    vhost = urllib.parse.quote(urllib.parse.unquote(path[1:]) if len(path) > 1 else "/", safe="")
    try:
        queues = management_get(management_url, f"/api/queues/{vhost}?columns=name")
        exchanges = management_get(management_url, f"/api/exchanges/{vhost}?columns=name,type")
        bindings = management_get(management_url, f"/api/bindings/{vhost}")
    except urllib.error.HTTPError as exc:
        raise BrokerError(f"the management API at {redact_url(management_url)} answered "
                          f"{exc.code} {exc.reason}: it lists what is left; check its "
                          "user's rights (the monitoring tag) or give --management-url") from None
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"the management API at {redact_url(management_url)} did not answer "
            f"({_one_line(exc)}): listing what is left needs it; enable it with "
            "`rabbitmq-plugins enable rabbitmq_management` or give --management-url") from None
    ours = [q["name"] for q in queues if q["name"].startswith(OUR_PREFIX)]
    found = [Leftover("queue", name, consumers > 0,
                      f"{consumers} consumer{'s' * (consumers != 1)}, {messages} messages")
             for name, (consumers, messages) in (await _queue_counts(amqp_url, ours)).items()]
    kept = {q.name for q in found if q.in_use}
    for exchange in exchanges:
        name = exchange["name"]
        if not name.startswith(OUR_PREFIX):
            continue
        targets = [b["destination"] for b in bindings if b.get("source") == name]
        held = [t for t in targets if t in kept or t not in ours]
        found.append(Leftover("exchange", name, bool(held),
                              f"{exchange.get('type', '')}, {len(targets)} "
                              f"binding{'s' * (len(targets) != 1)}"))
    return found


async def _queue_counts(amqp_url: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """(consumers, messages) of each queue that still exists."""
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=5)
    except Exception as exc:
        raise connect_problem(exc, amqp_url) from None
    counts = {}
    try:
        channel = await connection.channel()
        for name in names:
            try:
                queue = await asyncio.wait_for(channel.declare_queue(name, passive=True), 5)
            except Exception:  # gone meanwhile: the channel closed with it
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            counts[name] = (result.consumer_count, result.message_count)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 3)
    return counts


async def remove_leftovers(amqp_url: str, found: list[Leftover]) -> dict:
    """Delete what nothing uses, queues first (their bindings go with them); what someone
    started using meanwhile is left (if-unused deletes), and said so."""
    unused = [f for f in found if not f.in_use]
    return await remove_declared(amqp_url, [f.name for f in unused if f.kind == "exchange"],
                                 [f.name for f in unused if f.kind == "queue"], if_unused=True)


def default_management_url(amqp_url: str) -> str:
    """The management API a broker usually has: same host and credentials, port 15672."""
    parts = urllib.parse.urlsplit(amqp_url)
    auth = ""
    if parts.username:
        auth = urllib.parse.quote(urllib.parse.unquote(parts.username), safe="")
        if parts.password is not None:
            auth += ":" + urllib.parse.quote(urllib.parse.unquote(parts.password), safe="")
        auth += "@"
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{auth}{host}:15672/"


UNRESPONSIVE_NS = 1_000_000_000  # a depth sample on loopback takes milliseconds


class QueueSampler:
    """What the coordinator sees of the broker while a run measures.

    Queue depth over time (AMQP passive declares: exact, no plugin needed), turned into
    backlog intervals on the timeline; when the management API answers, memory and disk
    alarms (intervals too) and flow-controlled connections. When the broker cannot be
    reached, that is an interval of its own (broker-unavailable), and sampling goes on
    reconnecting, so a broker that comes back is seen to.
    """

    def __init__(self, amqp_url: str, queues: list[str], management_url: str | None = None,
                 interval_s: float = 0.5, owners: dict[str, str] | None = None,
                 management_given: bool = True, not_sampled: str = "",
                 prometheus_url: str = "") -> None:
        self.amqp_url, self.management_url, self.interval_s = amqp_url, management_url, interval_s
        self.management_given = management_given  # False: we guessed the default port
        self.names = list(queues)
        self.owners = owners or {}  # queue -> the node consuming it
        self.not_sampled = not_sampled  # why some queues' depth is not read
        self.prometheus_url = prometheus_url
        self.prometheus_ok = 0
        self.prometheus_error = ""
        self.run_queue_max = 0.0
        self.series: dict[str, list[list[float]]] = {}
        self.alarms: set[str] = set()
        self.blocked_max = 0
        self.errors = 0
        self.management_ok = 0
        self.management_error = ""
        self.started_ns = 0
        self.events = Recorder("broker")
        self._down = IntervalTracker(self.events, EventKind.BROKER_UNAVAILABLE)
        self._alarm = IntervalTracker(self.events, EventKind.BROKER_ALARM)
        self.unavailable_reason = ""
        self._sample_started = 0

    def _raised(self, raised: list[str]) -> None:
        """An alarm interval begins with the first sample that shows one, and ends with the
        first that shows none (which keeps the alarms it had: it is what it ends)."""
        self.alarms.update(raised)
        if raised:
            self._alarm.detail = {"alarms": raised}
            self._alarm.begin()
        else:
            self._alarm.end()

    def _prometheus_sample(self) -> None:
        """Alarms and the Erlang run queue from rabbitmq_prometheus."""
        from mqprobe.prometheus import read_broker

        metrics = read_broker(self.prometheus_url, set())  # depth comes over AMQP
        self._raised(list(metrics.alarms))
        self.run_queue_max = max(self.run_queue_max, metrics.run_queue)

    def _management_sample(self) -> None:
        """Memory/disk alarms and connections under flow control."""
        raised = []
        for node in management_get(self.management_url,
                                   "/api/nodes?columns=name,mem_alarm,disk_free_alarm"):
            for alarm in ("mem_alarm", "disk_free_alarm"):
                if node.get(alarm):
                    raised.append(f"{alarm} on {node.get('name')}")
        if not self.prometheus_ok:  # alarms come from one source: the endpoint if it answers
            self._raised(raised)
        connections = management_get(self.management_url, "/api/connections?columns=state")
        blocked = sum(1 for c in connections if c.get("state") in ("blocked", "blocking", "flow"))
        self.blocked_max = max(self.blocked_max, blocked)

    def _growth(self, name: str) -> dict | None:
        """How the deepest queue's backlog built up: from its last empty sample to its peak,
        the messages a second that came in beyond what its consumer took."""
        points = self.series.get(name, [])
        if not points:
            return None
        peak_at = max(range(len(points)), key=lambda i: points[i][1])
        empty_at = max((i for i in range(peak_at) if points[i][1] == 0), default=0)
        (t0, ready0, _), (t1, ready1, _) = points[empty_at], points[peak_at]
        if t1 <= t0:
            return None
        return {"from_s": t0, "to_s": t1, "ready": ready1,
                "net_in_per_s": round((ready1 - ready0) / (t1 - t0), 1)}

    async def run(self) -> None:
        """Sample until cancelled; a failed sample is counted, never fatal."""
        self.started_ns = now_ns()
        started = time.monotonic()
        connection = channel = None
        try:
            while True:
                t_s = round(time.monotonic() - started, 2)
                if self.prometheus_url:
                    try:
                        await asyncio.to_thread(self._prometheus_sample)
                        self.prometheus_ok += 1
                    except (OSError, ValueError, TypeError, urllib.error.URLError) as exc:
                        self.errors += 1
                        self.prometheus_error = _one_line(exc)
                if self.management_url:
                    try:
                        await asyncio.to_thread(self._management_sample)
                        self.management_ok += 1
                    except (OSError, ValueError, TypeError, AttributeError,
                            urllib.error.URLError) as exc:
                        self.errors += 1
                        self.management_error = _one_line(exc)
                connection, channel = await self._sample_depths(connection, channel, t_s)
                await asyncio.sleep(self.interval_s)
        finally:
            self._unresponsive_since(self._sample_started)  # still waiting for an answer
            if self._down.since:  # never came back while we sampled
                self._down.detail = {"until_end": True}
            self._down.end()
            self._alarm.end()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 3)

    async def _sample_depths(self, connection, channel, t_s: float):
        """One depth sample of every queue. A broker that did not answer it within a second
        (paused, swapping, overloaded) was unavailable for that long, as one that refused."""
        self._sample_started = started = now_ns()
        connection, channel = await self._depths(connection, channel, t_s, started)
        self._unresponsive_since(started)
        self._sample_started = 0
        return connection, channel

    def _unresponsive_since(self, started: int) -> None:
        """A sample under way since `started` that is overdue: the broker did not answer."""
        if started and now_ns() - started > UNRESPONSIVE_NS and not self._down.since:
            self.events.add(EventKind.BROKER_UNAVAILABLE, started, now_ns(), unresponsive=True)

    def _lost_touch(self, exc: BaseException, started: int) -> None:
        """A broker that refused or closed the connection is down from `started`; one that
        only did not answer in time (paused, swapping) is not: the overdue sample says it
        was unresponsive (_unresponsive_since)."""
        self.unavailable_reason = _one_line(exc) or type(exc).__name__
        if not isinstance(exc, TimeoutError):
            self._down.begin(at=started)

    async def _depths(self, connection, channel, t_s: float, started: int):
        """(Re)connect if need be, then read every queue's depth; tracks when it cannot."""
        import aio_pika

        try:
            if connection is None or connection.is_closed:
                connection = await aio_pika.connect(self.amqp_url, timeout=2)
                channel = await connection.channel()
            self._down.end()
        except Exception as exc:  # the broker is gone (or going), or did not answer
            self.errors += 1
            self._lost_touch(exc, started)
            return None, None
        for name in list(self.names):
            try:
                queue = await asyncio.wait_for(channel.declare_queue(name, passive=True), 2)
            except Exception:  # gone or not yet there: the channel is closed by it
                self.errors += 1
                try:
                    channel = await asyncio.wait_for(connection.channel(), 2)
                except Exception as exc:
                    self._lost_touch(exc, started)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 1)
                    return None, None
                continue
            self.series.setdefault(name, []).append(
                [t_s, queue.declaration_result.message_count,
                 queue.declaration_result.consumer_count])
        return connection, channel

    def timeline(self) -> list[TimedEvent]:
        """What the broker went through, as intervals on our clock: unreachable, alarms,
        and each queue's backlogs (from the first sample that held ready messages to the
        next that held none)."""
        events = list(self.events.events)
        half = int(self.interval_s * 1e9 / 2)
        for name, points in self.series.items():
            start, peak = None, 0
            for t_s, ready, _consumers in [*points, [points[-1][0] + self.interval_s, 0, 0]]:
                at = self.started_ns + int(t_s * 1e9)
                if ready and start is None:
                    start, peak = at - half, ready
                elif ready:
                    peak = max(peak, ready)
                elif start is not None:
                    events.append(TimedEvent(EventKind.QUEUE_BACKLOG, "broker", start, at - half,
                                             {"queue": name, "node": self.owners.get(name, ""),
                                              "ready_max": peak}))
                    start = None
        return events

    def ready_at_end(self) -> int:
        """Messages ready in the run's queues at the last sample: still on their way."""
        return sum(points[-1][1] for points in self.series.values() if points)

    def summary(self) -> dict:
        peak_queue, peak = "", 0
        for name, points in self.series.items():
            for _t, ready, _consumers in points:
                if ready > peak:
                    peak_queue, peak = name, ready
        out = {"available": True, "interval_s": self.interval_s, "max_ready": peak,
               "max_ready_queue": peak_queue, "backlog_growth": self._growth(peak_queue),
               "management_api": self.management_ok > 0,
               "alarms": sorted(self.alarms), "blocked_connections_max": self.blocked_max,
               "sample_errors": self.errors,
               "queues": {"columns": ["t_s", "ready", "consumers"], **self.series}}
        if self.management_url and not self.management_ok:
            how = "given" if self.management_given else "tried on its default port 15672"
            out["management_reason"] = (f"the management API ({how}) did not answer: "
                                        f"{self.management_error or 'no sample completed'}")
        if self.unavailable_reason:
            out["unavailable_reason"] = self.unavailable_reason
        if self.not_sampled:
            out["depth_not_sampled"] = self.not_sampled
        # which source answered: queue depth always over AMQP; alarms from the Prometheus
        # endpoint when it answered, else the management API; flow control from the latter
        out["sources"] = ["amqp"] + (["prometheus"] if self.prometheus_ok else []) + (
            ["management"] if self.management_ok else [])
        if self.prometheus_url:
            out["prometheus"] = self.prometheus_ok > 0
            out["erlang_run_queue_max"] = self.run_queue_max
            if not self.prometheus_ok:
                out["prometheus_reason"] = ("the Prometheus endpoint did not answer: "
                                            f"{self.prometheus_error or 'no sample completed'}")
        return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__

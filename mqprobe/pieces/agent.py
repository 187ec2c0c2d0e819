"""Pieces on other hosts: `mqprobe agent` runs them there; their records come back over the broker.

Every host already reaches the broker, so the broker carries the measurement's own traffic
too, on two exchanges of their own:

- `mqprobe.control` (direct): commands to an agent, routing key ``agent.<name>``:
  ``hello``, ``clock`` (an NTP-style exchange, see mqprobe.clocks), ``spawn`` a piece from
  its spec (mqprobe.protocol.PieceSpec), ``send`` it a command line (reset, clock), ``stop``
  it, ``alive``.
  Both ends beat every 2 s: a coordinator that goes quiet has its pieces stopped, an
  agent that goes quiet fails the run.
- `mqprobe.results` (topic): everything a piece says (ready, progress, result, error, exit)
  and the agent's replies, routing key ``<session>.<piece>``. The coordinator (compare)
  reads its session's messages from an exclusive queue bound to ``<session>.#``.

Every agent's and coordinator's queue is also bound to both exchanges, so they stay while
anyone uses them, and the last one to stop deletes them: nothing of ours stays behind.

An agent runs each piece exactly as compare runs a local one (`process.Child`), so a remote
node or swarm is the same code with the same protocol (mqprobe.protocol); only the
pipe is longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from mqprobe import __version__
from mqprobe.broker.cleanup import delete_declared
from mqprobe.broker.connect import with_heartbeat
from mqprobe.clocks import SAME_CLOCK, ClockOffset, clock_id, from_exchanges
from mqprobe.errors import InputError
from mqprobe.model import PLACED_ROLES
from mqprobe.pieces.process import Child, Piece, RunError, wait_for_stop
from mqprobe.protocol import AgentOp, EventName, PieceSpec, SpecError
from mqprobe.stamps import check_id, now_ns

CONTROL_EXCHANGE = "mqprobe.control"
RESULTS_EXCHANGE = "mqprobe.results"
LOCAL = "local"  # the placement name of the coordinator's own host
HEARTBEAT_S = 2.0  # both ends say they are alive this often
GONE_AFTER_S = 5 * HEARTBEAT_S  # an agent or coordinator silent this long is taken for gone
AMQP_HEARTBEAT_S = 5  # the broker drops a vanished agent's or coordinator's queue in ~10 s


def parse_placement(items: list[str]) -> dict[str, list[str]]:
    """`--place node=hostb,hostc --place swarm=hostd` -> {"node": ["hostb", "hostc"], ...}."""
    placement: dict[str, list[str]] = {}
    for item in items:
        role, sep, names = item.partition("=")
        role = role.strip()
        if not sep or role not in PLACED_ROLES:
            raise InputError(f"--place takes ROLE=AGENT[,AGENT...] with ROLE one of "
                             f"{', '.join(PLACED_ROLES)}, got {item!r}")
        agents = [check_id("agent", n.strip()) for n in names.split(",") if n.strip()]
        if not agents:
            raise InputError(f"--place {role}= names no agent")
        placement[role] = agents
    return placement


def _body(payload: dict) -> aio_pika.Message:
    return aio_pika.Message(json.dumps(payload, separators=(",", ":")).encode(),
                            content_type="application/json")


async def _declare(channel: aio_pika.abc.AbstractChannel):
    control = await channel.declare_exchange(CONTROL_EXCHANGE, aio_pika.ExchangeType.DIRECT)
    results = await channel.declare_exchange(RESULTS_EXCHANGE, aio_pika.ExchangeType.TOPIC)
    return control, results


async def _leave(connection: aio_pika.abc.AbstractConnection,
                 queue: aio_pika.abc.AbstractQueue | None) -> None:
    """Delete our queue, then each of the two exchanges that nothing is bound to any more:
    the last agent or coordinator to stop leaves nothing on the broker. Every agent's and
    coordinator's queue is bound to both (with a key no message carries), so neither
    exchange goes while anyone still publishes to it.

    The queue is deleted as its own (robust) object, which forgets its consumer first: on
    a channel of its own, the broker's cancel of that consumer made aio-pika recover the
    connection and declare the queue and its bindings again, and `mqprobe.results` was left
    'in use' behind every coordinator that gave up (an agent that did not answer)."""
    if queue is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(queue.delete(if_unused=False, if_empty=False), 5)
    # one still in use (PRECONDITION_FAILED) stays
    await delete_declared(connection, [CONTROL_EXCHANGE, RESULTS_EXCHANGE], timeout=5,
                          if_unused=True)


class Agent:
    """Runs pieces on this host for a coordinator elsewhere, relaying their events."""

    def __init__(self, name: str, amqp_url: str, listen_host: str = "127.0.0.1",
                 work_dir: Path | None = None) -> None:
        self.name, self.amqp_url, self.listen_host = check_id("agent", name), amqp_url, listen_host
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="mqprobe-agent-"))
        self._own_work_dir = work_dir is None  # made here: removed when the agent stops
        self.children: dict[tuple[str, str], Child] = {}
        self.coordinators: dict[str, float] = {}  # session -> when it last said anything
        self._outbox: asyncio.Queue[tuple[str, str, dict]] = asyncio.Queue()  # session, piece

    async def run(self, on_ready=lambda agent: None) -> None:
        try:
            await self._serve(on_ready)
        finally:  # also when it never logged in: no empty directory left behind each time
            if self._own_work_dir:  # what the pieces wrote has gone back to the coordinator
                shutil.rmtree(self.work_dir, ignore_errors=True)

    async def _serve(self, on_ready) -> None:
        connection = await aio_pika.connect_robust(
            with_heartbeat(self.amqp_url, AMQP_HEARTBEAT_S), timeout=10)
        queue = None
        try:
            channel = await connection.channel()
            control, self._results = await _declare(channel)
            try:  # named and exclusive: a second agent of the same name is refused here
                queue = await channel.declare_queue(f"mqprobe.pieces.agent.{self.name}",
                                                    exclusive=True, auto_delete=True)
            except aio_pika.exceptions.ChannelClosed as exc:
                if "RESOURCE_LOCKED" not in str(exc):
                    raise
                raise RunError(f"an agent named {self.name!r} already runs on this broker: "
                               "give each host its own --name") from None
            await queue.bind(control, routing_key=f"agent.{self.name}")
            await queue.bind(self._results, routing_key=f"@holds.{self.name}")  # see _leave
            await queue.consume(self._on_command, no_ack=True)
            loop = asyncio.get_running_loop()
            forwarder, beat = loop.create_task(self._forward()), loop.create_task(self._beat())
            on_ready(self)
            try:
                await wait_for_stop(control=False)
            finally:
                beat.cancel()
                await asyncio.gather(*(self._stop(key) for key in list(self.children)))
                await self._outbox.join()
                forwarder.cancel()
        finally:
            await _leave(connection, queue)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def _publish(self, session: str, piece: str, event: dict) -> None:
        await self._results.publish(_body({"piece": piece, **event}),
                                    routing_key=f"{session}.{piece}")

    async def _beat(self) -> None:
        """Tell each coordinator with pieces here that this agent still runs them, and stop
        the pieces of a coordinator that went quiet (interrupted, or cut off)."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for session in {session for session, _ in self.children}:
                silent = time.monotonic() - self.coordinators.get(session, time.monotonic())
                if silent > GONE_AFTER_S:
                    for key in [key for key in self.children if key[0] == session]:
                        asyncio.get_running_loop().create_task(self._stop(key))
                    continue
                with contextlib.suppress(Exception):
                    await self._publish(session, "@agent", {"event": "alive", "agent": self.name})

    async def _forward(self) -> None:
        while True:
            session, piece, event = await self._outbox.get()
            try:
                with contextlib.suppress(Exception):
                    await self._publish(session, piece, event)
            finally:
                self._outbox.task_done()

    async def _on_command(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        t1 = now_ns()
        try:
            command = json.loads(message.body)
            op, session = AgentOp(command["op"]), check_id("session", command["session"])
            command["piece"] = check_id("piece", str(command.get("piece", "-")))
        except (ValueError, KeyError, TypeError):
            return  # not ours (the control exchange is shared) or unsafe as a file name
        self.coordinators[session] = time.monotonic()
        if op == AgentOp.CLOCK:
            await self._publish(session, "@agent", {"event": "clock", "agent": self.name,
                                                    "id": command.get("id"), "t0": command.get("t0"),
                                                    "t1": t1, "t2": now_ns()})
        elif op == AgentOp.HELLO:
            await self._publish(session, "@agent", {"event": "hello", "agent": self.name,
                                                    "clock": clock_id(), "version": __version__,
                                                    "listen_host": self.listen_host})
        elif op == AgentOp.SPAWN:
            await self._spawn(session, command)
        elif op == AgentOp.SEND and (session, command["piece"]) in self.children:
            await self.children[(session, command["piece"])].send(str(command.get("command", "")))
        elif op == AgentOp.STOP:
            asyncio.get_running_loop().create_task(self._stop((session, command["piece"])))

    async def _spawn(self, session: str, command: dict) -> None:
        """Run the piece a spec describes. Whoever can publish on the broker can ask: only a
        measuring piece, configured wholly by the document (nothing read, nothing written
        but its log), and the piece itself checks every field of it."""
        piece = command["piece"]
        run_dir = self.work_dir / session
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MQPROBE_AMQP_URL=self.amqp_url)

        def relay(event: dict) -> None:
            self._outbox.put_nowait((session, piece, event))

        try:
            spec = PieceSpec.from_json(command.get("spec"))
        except SpecError as exc:
            relay({"event": EventName.ERROR, "message": f"agent {self.name} refused it: {exc}"})
            return
        child = Child(piece, spec, run_dir, env, on_event=relay)
        self.children[(session, piece)] = child
        try:
            await child.start()
        except OSError as exc:
            relay({"event": EventName.ERROR, "message": f"agent {self.name} could not start it: {exc}"})

    async def _stop(self, key: tuple[str, str]) -> None:
        """Stop one piece (session, name); taken out first, so it is stopped only once."""
        child = self.children.pop(key, None)
        if child:
            await child.stop()


@dataclass
class AgentInfo:
    name: str
    clock: str
    listen_host: str


class Hub:
    """The coordinator's end: talks to agents and hands compare a `RemotePiece` per piece."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.session = uuid.uuid4().hex[:12]
        self.pieces: dict[str, RemotePiece] = {}
        self.agents: dict[str, AgentInfo] = {}
        self._replies: dict[str, asyncio.Queue[dict]] = {}
        self.heard: dict[str, float] = {}  # agent -> when it last said anything (monotonic)

    async def open(self) -> None:
        self._connection = await aio_pika.connect_robust(
            with_heartbeat(self.amqp_url, AMQP_HEARTBEAT_S), timeout=10)
        channel = await self._connection.channel()
        self._control, results = await _declare(channel)
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(results, routing_key=f"{self.session}.#")
        await self._queue.bind(self._control, routing_key=f"@holds.{self.session}")  # see _leave
        await self._queue.consume(self._on_result, no_ack=True)
        self._beat_task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        """Tell the agents this coordinator still runs; they stop its pieces when it stops."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for agent in self.agents:
                with contextlib.suppress(Exception):
                    await self.command(agent, AgentOp.ALIVE)

    async def close(self) -> None:
        self._beat_task.cancel()
        await _leave(self._connection, self._queue)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._connection.close(), 5)

    async def _on_result(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        t3 = now_ns()
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            event = json.loads(message.body)
            if event.get("piece") == "@agent":
                self.heard[str(event.get("agent"))] = time.monotonic()
                event["t3"] = t3
                self._replies.setdefault(f"{event['event']}:{event['agent']}",
                                         asyncio.Queue()).put_nowait(event)
            elif event.get("piece") in self.pieces:
                piece = self.pieces[event["piece"]]
                self.heard[piece.agent] = time.monotonic()
                piece.record(event)

    async def command(self, agent: str, op: AgentOp, **fields: object) -> None:
        await self._control.publish(_body({"op": op, "session": self.session, **fields}),
                                    routing_key=f"agent.{agent}")

    async def _reply(self, kind: str, agent: str, timeout: float) -> dict:
        queue = self._replies.setdefault(f"{kind}:{agent}", asyncio.Queue())
        return await asyncio.wait_for(queue.get(), timeout)

    async def hello(self, agent: str, timeout: float = 5.0) -> AgentInfo:
        """Check that the agent runs; raises RunError with a sentence when it does not answer."""
        await self.command(agent, AgentOp.HELLO)
        try:
            reply = await self._reply("hello", agent, timeout)
        except TimeoutError:
            raise RunError(f"agent {agent!r} did not answer over the broker within "
                           f"{timeout:.0f} s (is `mqprobe agent --name {agent}` running "
                           "against the same broker?)") from None
        if reply.get("version") != __version__:
            raise RunError(f"agent {agent!r} runs mqprobe {reply.get('version')}, this is "
                           f"{__version__}: run the same version on every host")
        info = AgentInfo(agent, str(reply.get("clock")), str(reply.get("listen_host")))
        self.agents[agent] = info
        return info

    async def clock(self, agent: str, exchanges: int = 8, timeout: float = 5.0) -> ClockOffset:
        """The agent's clock against ours; exactly 0 when it is the same clock."""
        if self.agents[agent].clock == clock_id():
            return SAME_CLOCK
        stamps = []
        for i in range(exchanges):
            await self.command(agent, AgentOp.CLOCK, id=i, t0=now_ns())
            with contextlib.suppress(TimeoutError):
                reply = await self._reply("clock", agent, timeout)
                stamps.append((reply["t0"], reply["t1"], reply["t2"], reply["t3"]))
            await asyncio.sleep(0.02)
        if not stamps:
            raise RunError(f"agent {agent!r} answered no clock exchange within {timeout:.0f} s")
        return from_exchanges(stamps)

    def piece(self, agent: str, name: str, spec: PieceSpec) -> RemotePiece:
        piece = RemotePiece(self, agent, name, spec)
        self.pieces[name] = piece
        return piece


class RemotePiece(Piece):
    """A piece an agent runs on its host; its events arrive through the results exchange."""

    def __init__(self, hub: Hub, agent: str, name: str, spec: PieceSpec) -> None:
        super().__init__(name)
        self.hub, self.agent, self.spec = hub, agent, spec
        self.started = False

    async def start(self) -> None:
        await self.hub.command(self.agent, AgentOp.SPAWN, piece=self.name, spec=self.spec.to_json())
        self.hub.heard[self.agent] = time.monotonic()
        self.started = True

    def silent_s(self) -> float:
        """How long its agent has said nothing (s)."""
        return time.monotonic() - self.hub.heard.get(self.agent, time.monotonic())

    def last_heard_ns(self) -> int:
        """When its agent last said anything (its heartbeats included)."""
        if self.agent not in self.hub.heard:
            return super().last_heard_ns()
        return time.time_ns() - int(self.silent_s() * 1e9)

    def gone(self) -> bool:
        """Its agent has been silent too long while the piece ran: taken for gone."""
        return self.started and EventName.EXIT not in self.latest and \
            self.silent_s() > GONE_AFTER_S

    def failure(self) -> str | None:
        if self.gone():
            silent = self.silent_s()
            last = time.strftime("%H:%M:%S", time.localtime(time.time() - silent))
            return (f"{self.name}: agent {self.agent!r} has said nothing for {silent:.0f} s, "
                    f"last heard at {last} (stopped, or cut off from the broker)")
        return super().failure()

    async def send(self, line: str) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                await self.hub.command(self.agent, AgentOp.SEND, piece=self.name, command=line)

    async def stop(self, timeout: float = 20.0) -> dict | None:
        self.stop_asked_ns = min(self.stop_asked_ns, time.time_ns())
        if not self.started:
            return None
        if self.gone():  # nothing will come back from a host that vanished: no wait for it
            return self.result_data()
        with contextlib.suppress(Exception):
            await self.hub.command(self.agent, AgentOp.STOP, piece=self.name)
        with contextlib.suppress(RunError):
            await self.wait_for(EventName.RESULT, timeout)
        deadline = time.monotonic() + 5
        while EventName.EXIT not in self.latest and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.result_data()

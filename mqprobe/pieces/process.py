"""The runtime of the pieces `mqprobe compare` runs as child processes, and the parent's
handle on them; what travels between the two is mqprobe.protocol's types.

A piece (node, swarm, publisher) is a `PieceRuntime` subclass that fills its hooks, as a
python-socketio manager fills its own; `serve` runs every piece the same way: start, the
`ready` event, `progress` events, commands (each answered `applied` or `refused`), and the
result when asked to stop: by the `stop` command, when stdin closes (its parent died), or on
SIGINT/SIGTERM. Logs go to stderr. The same pieces run by hand skip stdin.

`Piece` is the parent's handle on one piece: `Child` runs it here, `mqprobe.pieces.agent`'s
`RemotePiece` has an agent on another host run it and relay its events over the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mqprobe.errors import MqprobeError
from mqprobe.protocol import (
    Answer,
    Command,
    CommandRefused,
    EventName,
    PieceSpec,
    Stop,
    command_line,
    parse_command,
)

if TYPE_CHECKING:  # only run/, above the pieces, raises it with a result
    from mqprobe.result import Comparison

T = TypeVar("T")


class RunError(MqprobeError, RuntimeError):
    """A piece failed or timed out; the message is one sentence, `piece` names the piece."""

    def __init__(self, message: str, piece: str = "") -> None:
        super().__init__(message)
        self.piece = piece


class RunInterrupted(Exception):
    """A measurement was cancelled (Ctrl-C, SIGTERM); `result` holds what it measured (and
    saved, once the runner has it)."""

    def __init__(self, result: Comparison | None = None) -> None:
        super().__init__("interrupted")
        self.result = result
        self.signum = 0  # which signal, once run_measuring knows


async def run_to_the_end(work: Coroutine[Any, Any, Any]) -> tuple[Any, bool]:
    """Await `work` to its end even if we are cancelled meanwhile (a Ctrl-C while the
    pieces stop must not leave them running): its result, and whether a cancel arrived
    during it, so the caller can still count the run as interrupted."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    return task.result(), cancelled  # or its own error, if it raised one


def emit_event(kind: str, **fields: object) -> None:
    """One event line for the parent (or a script reading a piece's stdout)."""
    sys.stdout.write(json.dumps({"event": kind, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def wait_for_stop(control: bool,
                        on_command: Callable[[Command], None] | None = None) -> str:
    """Block until asked to stop; returns why ('stop', 'stdin closed', 'signal')."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def finish(reason: str) -> None:
        if not done.done():
            done.set_result(reason)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, finish, "signal")
    reader_task = None
    if control:
        reader_task = loop.create_task(_read_commands(finish, on_command))
    try:
        return await done
    finally:
        if reader_task:
            reader_task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _read_commands(finish: Callable[[str], None],
                         on_command: Callable[[Command], None] | None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            finish("stdin closed")
            return
        if not line.strip():
            continue
        # every command is answered: applied, or refused with why (compare fails the run on
        # a refusal it depends on, rather than measuring with it half-applied)
        name = "?"
        try:
            command = parse_command(line.decode(errors="replace"))
            name = command.name
            if isinstance(command, Stop):
                finish("stop")
                return
            if on_command is None:
                raise CommandRefused(f"this piece takes no commands but stop, not {name!r}")
            on_command(command)
        except CommandRefused as exc:
            refused: Answer = {"command": name, "message": str(exc)}
            emit_event(EventName.REFUSED, **refused)
        else:
            applied: Answer = {"command": name}
            emit_event(EventName.APPLIED, **applied)


class PieceRuntime:
    """What a piece fills in for `serve`: start (set up, then the ready event's fields),
    progress, command, work (its own; by default none: it serves until stopped), halt (a
    stop was asked: end the work soon), stop (its result), close (always, even when start
    failed)."""

    progress_s = 1.0  # between progress events
    controlled = False  # set by serve: a parent reads the events and sends commands

    async def start(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def progress(self) -> Mapping[str, Any]:
        return {}

    def command(self, command: Command) -> None:
        raise CommandRefused(f"this piece knows no {command.name!r} command")

    async def work(self) -> None:
        await self._halted().wait()

    def halt(self) -> None:
        self._halted().set()

    def _halted(self) -> asyncio.Event:
        if not hasattr(self, "_halt_event"):
            self._halt_event = asyncio.Event()
        return self._halt_event

    async def stop(self) -> Mapping[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def serve(piece: PieceRuntime, control: bool) -> Mapping[str, Any]:
    """Run one piece through its life; its result. In control mode it reports progress and
    takes commands; by hand it runs until its work is done or a signal stops it."""
    piece.controlled = control
    loop = asyncio.get_running_loop()
    try:
        emit_event(EventName.READY, **await piece.start())
        reporter = loop.create_task(_report(piece)) if control else None
        working = loop.create_task(piece.work())
        stopping = loop.create_task(wait_for_stop(control, piece.command))
        try:
            await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if reporter:
                reporter.cancel()
        piece.halt()
        await working  # a piece's own failure is the run's
        return await piece.stop()
    finally:
        await piece.close()


async def _report(piece: PieceRuntime) -> None:
    while True:
        await asyncio.sleep(piece.progress_s)
        emit_event(EventName.PROGRESS, **piece.progress())


class Piece:
    """The parent's view of one piece: its latest event of each kind, and commands to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latest: dict[str, dict] = {}
        self.changed = asyncio.Event()
        self.heard_ns = 0  # when it last said anything (CLOCK_REALTIME; 0: never)

    def record(self, event: dict) -> None:
        self.heard_ns = time.time_ns()
        if event.get("event") == EventName.EXIT:
            event.setdefault("at_ns", self.heard_ns)  # when we learnt it ended
        self.latest[event.get("event", "?")] = event
        self.changed.set()

    def last_heard_ns(self) -> int:
        """When anything was last heard of it (its host, for a piece on an agent)."""
        return self.heard_ns

    async def start(self) -> None:
        raise NotImplementedError

    async def send(self, line: str) -> None:
        raise NotImplementedError

    async def stop(self, timeout: float = 20.0) -> dict | None:
        raise NotImplementedError

    @property
    def died_early(self) -> bool:
        """It ended before anyone asked it to stop."""
        exit_ = self.latest.get(EventName.EXIT)
        return (exit_ is not None and bool(exit_) and EventName.RESULT not in self.latest
                and exit_.get("at_ns", 0) < self.stop_asked_ns)

    stop_asked_ns = 1 << 62  # set when stop() is first called

    def failure(self) -> str | None:
        if EventName.ERROR in self.latest:
            return f"{self.name}: {self.latest[EventName.ERROR].get('message', 'failed')}"
        if EventName.EXIT in self.latest and EventName.RESULT not in self.latest:
            return f"{self.name} exited early{self.how_it_ended()}"
        return None

    def how_it_ended(self) -> str:
        """` (killed by SIGSEGV ...; 1 line of its output unreadable: ...; its log ends:
        ...)`, from its exit event; '' before it ended or when it said nothing of it."""
        exit_ = self.latest.get(EventName.EXIT) or {}
        parts = [str(exit_.get("ended") or "")]
        if exit_.get("unreadable"):
            parts.append(f"{exit_['unreadable']} line(s) of its output unreadable, the first: "
                         f"{exit_.get('first_unreadable', '')}")
        if exit_.get("log_tail"):  # its last line of stderr
            parts.append(f"its log ends: {exit_['log_tail']}")
        said = "; ".join(p for p in parts if p)
        return f" ({said})" if said else ""

    async def command(self, command: Command, timeout: float = 10.0) -> None:
        """Send a command and wait until the piece says it applied it; RunError when it
        refuses it or does not answer."""
        self.latest.pop(EventName.APPLIED, None)
        self.latest.pop(EventName.REFUSED, None)
        await self.send(command_line(command))
        name = command.name

        def answer() -> bool | None:
            refused = self.latest.get(EventName.REFUSED)
            if refused and refused.get("command") in (name, "?"):
                raise RunError(f"{self.name} could not apply {name!r}: {refused.get('message')}",
                               self.name)
            applied = self.latest.get(EventName.APPLIED)
            return True if applied and applied.get("command") == name else None

        await self._until(answer, timeout, f"{self.name} did not answer the command {name!r} "
                          f"within {timeout:.0f} s", self.name)

    async def wait_for(self, kind: str, timeout: float) -> dict:
        return await self._until(lambda: self.latest.get(kind), timeout,
                                 f"{self.name} gave no {kind!r} within {timeout:.0f} s")

    async def _until(self, answer: Callable[[], T | None], timeout: float, silence: str,
                     piece: str = "") -> T:
        """answer() once it is not None; RunError when the piece fails first, or with
        `silence` when the timeout passes. Wakes on each event, and each second: failure()
        may be time's (an agent gone quiet)."""
        deadline = time.monotonic() + timeout
        while (value := answer()) is None:
            if problem := self.failure():
                raise RunError(problem, self.name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunError(silence, piece)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return value

    @property
    def pid(self) -> int | None:
        """Its process on this host, when it has one here (a sampler outside reads its CPU)."""
        return None

    def result_data(self) -> dict | None:
        result = self.latest.get(EventName.RESULT)
        return result.get("data") if result else None


CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE}


def ended_how(returncode: int | None) -> str:
    """`exited with status 1`, `killed by SIGSEGV (a crash: its log has the stack)`, or ''
    while it runs: a piece that ended without its result must say which."""
    if returncode is None:
        return ""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    crash = " (a crash: its log has the stack)" if -returncode in CRASH_SIGNALS else ""
    return f"killed by {name}{crash}"


class Child(Piece):
    """One piece running here: its spec saved as `<name>.spec.json` beside its log, run as
    `python -m mqprobe.pieces.piece <spec>` (mqprobe.pieces.piece: no command line to import)."""

    def __init__(self, name: str, spec: PieceSpec, log_dir: Path, env: dict[str, str],
                 on_event: Callable[[dict], None] | None = None) -> None:
        super().__init__(name)
        self.spec, self.env, self.on_event = spec, env, on_event
        self.log_path = log_dir / f"{name}.log"
        self.spec_path = log_dir / f"{name}.spec.json"
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def record(self, event: dict) -> None:
        super().record(event)
        if self.on_event:
            self.on_event(event)

    async def start(self) -> None:
        self.spec.save(self.spec_path)
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mqprobe.pieces.piece", str(self.spec_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=self.env, limit=64 * 1024 * 1024)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        """Each stdout line as an event; at its end, an `exit` event that says how the
        process ended and what could not be read (a result lost that way must say so)."""
        assert self.proc and self.proc.stdout
        unreadable, first = 0, ""
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError as exc:  # longer than the reader's limit: skipped
                unreadable, first = unreadable + 1, first or str(exc)
                continue
            if not line:
                break
            try:
                self.record(json.loads(line))
            except ValueError:
                unreadable, first = unreadable + 1, first or repr(line[:80])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        self.record({"event": EventName.EXIT, "log_tail": self._file_tail(),
                     "ended": ended_how(self.proc.returncode),
                     **({"unreadable": unreadable, "first_unreadable": first} if unreadable else {})})

    def _file_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    async def send(self, line: str) -> None:
        """One command line to the piece (command_line made it); lost if it has ended."""
        if self.proc and self.proc.returncode is None and self.proc.stdin:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(line.encode() + b"\n")
                await self.proc.stdin.drain()

    async def stop(self, timeout: float = 20.0) -> dict | None:
        """Ask for the result and wait for the process to end; None if it gave none."""
        self.stop_asked_ns = min(self.stop_asked_ns, time.time_ns())
        if self.proc is None:
            return None
        await self.send(command_line(Stop()))
        with contextlib.suppress(RunError):
            await self.wait_for(EventName.RESULT, timeout)
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return self.result_data()

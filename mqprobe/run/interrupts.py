"""The life of a measurement under signals: Ctrl-C, SIGTERM or SIGHUP (its terminal
closed) cancels the run, which stops
its pieces and saves what it measured, instead of dying where it stands (and leaving a
broker of ours running). A library caller gets the same by calling run_measuring."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from mqprobe.pieces.process import RunInterrupted


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: the command stops, after saving and cleaning up; exit 128 +
    signal."""

    def __init__(self, signum: int, said: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum
        self.said = said  # the command already told the user what it saved


STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each ends a run the same way


def raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _still_stopping() -> None:
    """Said on a second Ctrl-C; a plain write, safe inside a signal handler."""
    os.write(2, b"mqprobe: still stopping the pieces and saving what was measured\n")


def run_measuring(coro_factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a measurement; Ctrl-C, SIGTERM or SIGHUP cancels it, so it stops its pieces and saves
    what it measured (RunInterrupted), instead of dying where it stands.

    The handlers are Python's, not the loop's: asyncio puts the defaults back as its loop
    closes, and a SIGTERM in that moment would kill us with our broker left running."""
    received: list[int] = []
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1:  # cancelling again would cut the stopping short
            _still_stopping()
        elif running:
            loop, task = running[0]
            loop.call_soon_threadsafe(task.cancel)

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        if received:  # it came before the loop ran
            raise asyncio.CancelledError
        return await coro_factory()

    for signum in STOPPING:
        signal.signal(signum, on_signal)  # after a first signal, later ones say "still stopping"
    try:
        return asyncio.run(main())
    except RunInterrupted as exc:
        exc.signum = received[0] if received else signal.SIGINT
        raise
    except asyncio.CancelledError:  # cancelled before any run began: nothing to save
        raise Interrupted(received[0] if received else signal.SIGINT) from None
    finally:
        if not received:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for signum in STOPPING[1:]:
                signal.signal(signum, raise_interrupted)

"""The line protocol between `mqprobe compare` and the pieces it runs as child processes.

A child in control mode writes one JSON object per line on stdout (`ready`, `progress`,
`result`, `error`) and stops when it reads `stop` on stdin, when stdin closes (its parent
died), or on SIGINT/SIGTERM. Logs go to stderr. The same pieces run by hand skip stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable


def emit_event(kind: str, **fields: object) -> None:
    """One event line for the parent (or a script reading a piece's stdout)."""
    sys.stdout.write(json.dumps({"event": kind, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def wait_for_stop(control: bool, on_command: Callable[[str], None] | None = None) -> str:
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
                         on_command: Callable[[str], None] | None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            finish("stdin closed")
            return
        command = line.decode().strip()
        if command == "stop":
            finish("stop")
            return
        if command and on_command:
            on_command(command)

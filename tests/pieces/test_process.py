"""The parent's handle on a piece's process (mqprobe.pieces.process.Child): a piece that ends
without its result says how it ended, so a lost result is never a mystery."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from mqprobe.model import PieceRole
from mqprobe.pieces.process import Child, ended_how
from mqprobe.pieces.swarm import SwarmConfig
from mqprobe.protocol import EventName, PieceSpec, to_document


@pytest.mark.parametrize(("returncode", "said"), [
    (None, ""),
    (0, "exited with status 0"),
    (1, "exited with status 1"),
    (-signal.SIGKILL, "killed by SIGKILL"),
    (-signal.SIGSEGV, "killed by SIGSEGV (a crash: its log has the stack)"),
    (-signal.SIGABRT, "killed by SIGABRT (a crash: its log has the stack)"),
    (-200, "killed by signal 200"),
])
def test_how_a_process_ended_is_said_in_words(returncode, said):
    assert ended_how(returncode) == said


def _swarm(tmp_path) -> Child:
    config = SwarmConfig(node_urls=["http://127.0.0.1:1"], group_sizes={"1": 1})
    return Child("swarm1", PieceSpec(PieceRole.SWARM, to_document(config)), tmp_path,
                 dict(os.environ))


@pytest.mark.integration
def test_a_piece_that_crashes_is_named_by_its_signal_and_its_log_holds_the_stack(tmp_path):
    """A segfault writes no Python traceback: the piece's faulthandler writes its threads'
    stacks to its log, and the parent says it was killed by SIGSEGV, not just 'no result'."""
    async def run() -> tuple[dict | None, str]:
        swarm = _swarm(tmp_path)
        await swarm.start()
        try:
            await swarm.wait_for(EventName.READY, 30)
            assert swarm.pid
            os.kill(swarm.pid, signal.SIGSEGV)
        finally:
            result = await swarm.stop()
        return result, swarm.how_it_ended()

    result, how = asyncio.run(run())
    assert result is None
    assert how.startswith(" (killed by SIGSEGV (a crash: its log has the stack)"), how
    log = (tmp_path / "swarm1.log").read_text()
    assert "Fatal Python error: Segmentation fault" in log, log[-2000:]


def test_lines_a_piece_wrote_that_are_not_events_are_counted_never_dropped_in_silence(tmp_path):
    """A result line that cannot be read (cut, interleaved with another writer) is a lost
    result: the exit event counts such lines and shows the first."""
    async def run() -> Child:
        child = _swarm(tmp_path)
        (tmp_path / "swarm1.log").write_text("")
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            'print(\'{"event": "ready"}\'); print(\'{"event": "result", "da\'); print("x")',
            stdout=asyncio.subprocess.PIPE)
        await child._read()
        return child

    child = asyncio.run(run())
    assert EventName.READY in child.latest and EventName.RESULT not in child.latest
    exit_ = child.latest[EventName.EXIT]
    assert exit_["unreadable"] == 2
    assert exit_["first_unreadable"].startswith("b'{\"event\": \"result\"")
    assert exit_["ended"] == "exited with status 0"
    assert "2 line(s) of its output unreadable" in child.failure()

"""A piece's own process, as compare and agents start it: `python -m mqprobe.pieces.piece SPEC`.

It reads the spec (mqprobe.protocol: the role and its whole configuration), runs the piece
through process.serve under its parent's control (events on stdout, commands on stdin)
and ends. It imports the piece's own module and nothing of the command line (typer, rich,
compare): a swarm process was ready after 0.75 s of imports through the CLI, 0.17 s here,
and every run of a comparison starts three kinds of them one after another.

The broker URL is not in the spec (it holds credentials): it comes from MQPROBE_AMQP_URL;
without it a node or publisher uses the managed broker, started on demand.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mqprobe.errors import MqprobeError
from mqprobe.model import PieceRole
from mqprobe.pieces.process import PieceRuntime, emit_event, serve
from mqprobe.protocol import EventName, PieceSpec, from_document

if TYPE_CHECKING:
    from mqprobe.pieces.node import NodeConfig
    from mqprobe.pieces.publisher import PublishConfig
    from mqprobe.pieces.swarm import SwarmConfig

    PieceConfig = NodeConfig | SwarmConfig | PublishConfig  # a piece's whole configuration


def runtime_of(spec: PieceSpec) -> tuple[Callable[[str], PieceRuntime], bool]:
    """The piece a spec describes, to make for a broker URL, and whether it needs one; its
    configuration checked (SpecError, InputError: one sentence). Only the piece's own module
    is imported."""
    config: PieceConfig
    if spec.role is PieceRole.SWARM:
        from mqprobe.pieces.swarm import SwarmConfig

        config = from_document(SwarmConfig, spec.config, "the swarm's config")
    elif spec.role is PieceRole.NODE:
        from mqprobe.pieces.node import NodeConfig

        config = from_document(NodeConfig, spec.config, "the node's config", amqp_url="")
    else:
        from mqprobe.pieces.publisher import PublishConfig

        config = from_document(PublishConfig, spec.config, "the publisher's config",
                               amqp_url="")
    return runtime_for(config)


def runtime_for(config: PieceConfig) -> tuple[Callable[[str], PieceRuntime], bool]:
    """A piece's config, checked: how to make its piece for a broker URL, and whether it
    needs one (compare's pieces and `mqprobe node`, `swarm`, `publish` alike)."""
    config.check()
    return config.make, config.NEEDS_BROKER


def run(spec_path: Path, amqp_url: str | None) -> int:
    """Run the piece of a spec file to its end; its exit status. A spec or a broker it
    cannot use is an `error` event for the parent, and one sentence on stderr."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # a crash (SIGSEGV in the interpreter or a C extension) leaves no traceback of its own:
    # this writes every thread's stack to the log, and the parent names the signal
    faulthandler.enable()
    try:
        make, needs_broker = runtime_of(PieceSpec.load(spec_path))
        if not needs_broker:
            _serve(lambda: make(""))
        else:
            from mqprobe.broker.managed import broker_for

            with broker_for(amqp_url) as (url, _management, _prometheus):
                _serve(lambda: make(url))
    except (MqprobeError, OSError) as exc:
        emit_event(EventName.ERROR, message=str(exc))
        print(f"mqprobe: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(runtime: Callable[[], PieceRuntime]) -> None:
    async def measured() -> None:
        result = await serve(runtime(), control=True)
        # Hand the result over before asyncio tears down: a library task that retries on
        # cancellation (python-socketio's manager does) must not hold it back.
        emit_event(EventName.RESULT, data=result)
        os._exit(0)

    asyncio.run(measured())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m mqprobe.pieces.piece SPEC (a piece spec, mqprobe.protocol; the broker "
              "URL in MQPROBE_AMQP_URL)", file=sys.stderr)
        return 2
    return run(Path(args[0]), os.environ.get("MQPROBE_AMQP_URL") or None)


if __name__ == "__main__":
    sys.exit(main())

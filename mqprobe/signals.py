"""Holding Ctrl-C and SIGTERM across work that must not be cut in half: a piece's stop and
the managed broker's both use it, so it lives below them."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done (stopping a broker must not be cut
    in half); one that arrived meanwhile is delivered at the end, as usual."""
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)

"""A server's connections through a run: how many its kernel holds ESTABLISHED and its
socket.io server counts connected, once a second, and why each one ended.

The seed's diary: after its load clients' host died, the server still held 14,000
ESTABLISHED connections until TCP keepalive cured it, and nobody measured how long they
stayed or what freed them. A connection whose peer vanished (no FIN, no RST) stays
ESTABLISHED in the kernel and connected in socket.io until something gives up on it: the
socket.io ping timeout (engine.io's reason `ping timeout`), the kernel (keepalive probes or
TCP_USER_TIMEOUT: the read fails, `transport error`), or nothing within the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Callable

from mqprobe.stamps import now_ns

# engine.io's reasons a connection ended, and ours for a websocket read that timed out on a
# client that had left the last ping unanswered (engine.io says `transport close`)
PING_TIMEOUT, TRANSPORT_CLOSE = "ping timeout", "transport close"
PING_UNANSWERED = "transport close (last ping unanswered)"
SILENT = (PING_TIMEOUT, PING_UNANSWERED)  # the client had stopped answering

EVERY_S = 1.0
KERNEL_EVERY_S = 5.0  # the kernel's table is read this often at most (null between): its
KERNEL_SHARE = 0.01  # generation costs far more than socket.io's count; and at most 1% of
# the time (3,000 connections' table took 18 ms here)
MAX_ROWS = 3600  # an hour of seconds; later ones replace the first (a ring)


def established_on(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")
                   ) -> int | None:
    """The connections this network namespace holds ESTABLISHED on a local TCP port (one
    read of the kernel's tables, matched in C: a Python split per line was 4% of a node's
    loop at 6,000 connections; None where they cannot be read)."""
    pattern = re.compile(rb":%04X [0-9A-F]+:[0-9A-F]{4} 01 " % port)
    found, read_any = 0, False
    for table in tables:
        try:
            with open(table, "rb") as file:
                found += len(pattern.findall(file.read()))
        except OSError:
            continue
        read_any = True
    return found if read_any else None


def keep_alive(sock: socket.socket, idle_s: float) -> None:
    """A listening socket whose accepted connections (they inherit it, on Linux) probe a
    silent peer after `idle_s`, every third of it (at least 1 s), three times, and give up
    on data the peer has not acknowledged after as long: a peer that vanished is dropped
    after about twice `idle_s`, whether or not the server is still writing to it
    (keepalive alone never probes while data waits for an acknowledgement)."""
    idle = max(1, round(idle_s))
    every = max(1, round(idle_s / 3))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", every), ("TCP_KEEPCNT", 3),
                          ("TCP_USER_TIMEOUT", (idle + 3 * every) * 1000)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _this_second() -> int:
    """Now, in ns, down to the whole second the counts are kept by."""
    return now_ns() // 1_000_000_000 * 1_000_000_000


class ConnectionWatch:
    """Rows of [t_ns, established (None: not read that time), connected] once every
    EVERY_S (the kernel's count every KERNEL_EVERY_S or less often, read in a thread, and
    at the end), the disconnects by reason in each second: [t_ns of the second, reason,
    count], and the connects in each second: [t_ns of the second, count]."""

    def __init__(self, port: int, connected: Callable[[], int], every_s: float = EVERY_S) -> None:
        self.port, self.connected, self.every_s = port, connected, every_s
        self.rows: deque[list] = deque(maxlen=MAX_ROWS)
        self.ended: Counter[tuple[int, str]] = Counter()
        self.began: Counter[int] = Counter()
        self._task: asyncio.Task | None = None
        self._kernel_due = False  # the kernel's count at the next row (measuring began)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_kernel = 0.0
        while True:
            established = None
            if self._kernel_due or time.monotonic() >= next_kernel:  # in a thread: no stall
                self._kernel_due = False
                began = time.monotonic()
                established = await asyncio.to_thread(established_on, self.port)
                # at most KERNEL_SHARE of the time: 27,000 connections take a large table
                took = time.monotonic() - began
                next_kernel = began + max(KERNEL_EVERY_S, took / KERNEL_SHARE)
            self.rows.append([now_ns(), established, self.connected()])
            await asyncio.sleep(self.every_s)

    def sample(self) -> None:
        """Where it stands now, the kernel's count included."""
        self.rows.append([now_ns(), established_on(self.port), self.connected()])

    def on_disconnect(self, reason: str) -> None:
        self.ended[(_this_second(), reason)] += 1

    def on_connect(self) -> None:
        self.began[_this_second()] += 1

    def reset(self) -> None:
        """Count afresh: the set-up's joins are not the run's; the kernel's count with the
        next row, so the measuring starts with one."""
        self.rows.clear()
        self.ended.clear()
        self.began.clear()
        self._kernel_due = True

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(Exception):
                self.sample()  # where it stood as measuring ended

    def to_json(self) -> dict:
        return {"every_s": self.every_s, "port": self.port, "rows": [list(r) for r in self.rows],
                "ended": [[t, reason, n] for (t, reason), n in sorted(self.ended.items())],
                "began": [[t, n] for t, n in sorted(self.began.items())]}

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
import socket
from collections import Counter, deque
from collections.abc import Callable

from mqprobe.stamps import now_ns

EVERY_S = 1.0
MAX_ROWS = 3600  # an hour of seconds; later ones replace the first (a ring)
ESTABLISHED = "01"  # /proc/net/tcp's st column


def established_on(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")
                   ) -> int | None:
    """The connections this network namespace holds ESTABLISHED on a local TCP port (one
    read of the kernel's tables; None where they cannot be read)."""
    want = f":{port:04X} "
    found, read_any = 0, False
    for table in tables:
        try:
            with open(table, "rb") as file:
                text = file.read().decode("ascii", "replace")
        except OSError:
            continue
        read_any = True
        for line in text.splitlines()[1:]:
            fields = line.split(None, 4)
            if len(fields) > 3 and fields[3] == ESTABLISHED and (fields[1] + " ").endswith(want):
                found += 1
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


class ConnectionWatch:
    """Rows of [t_ns, established (None: unread), connected] once every EVERY_S, and the
    disconnects by reason in each second: [t_ns of the second, reason, count]."""

    def __init__(self, port: int, connected: Callable[[], int], every_s: float = EVERY_S) -> None:
        self.port, self.connected, self.every_s = port, connected, every_s
        self.rows: deque[list] = deque(maxlen=MAX_ROWS)
        self.ended: Counter[tuple[int, str]] = Counter()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def sample(self) -> None:
        self.rows.append([now_ns(), established_on(self.port), self.connected()])

    def on_disconnect(self, reason: str) -> None:
        second = now_ns() // 1_000_000_000 * 1_000_000_000
        self.ended[(second, reason)] += 1

    def reset(self) -> None:
        """Count afresh: the set-up's joins are not the run's."""
        self.rows.clear()
        self.ended.clear()

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(Exception):
                self.sample()  # where it stood as measuring ended

    def to_json(self) -> dict:
        return {"every_s": self.every_s, "port": self.port, "rows": [list(r) for r in self.rows],
                "ended": [[t, reason, n] for (t, reason), n in sorted(self.ended.items())]}

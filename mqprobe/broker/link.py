"""An AMQP link's round trip through a run: what a slow network, a proxy or a load balancer
between a piece and RabbitMQ would all show.

Twice a second a LinkWatch times a synchronous AMQP method (basic.qos on a channel of its
own: no queue, no state, answered by the channel's process) on the piece's own connection,
so the ping travels the same TCP connection, proxy and load balancer as the piece's
messages; and it reads the kernel's least round trip of that connection's socket lately
(TCP_INFO's min_rtt), which a proxy hides (its peer is the proxy) and a slow network shows. The AMQP
round trip holds the broker's answer too: the verdict takes off what the broker's own
counters explain before it charges the rest to the path (verdict.attribution).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque

from mqprobe.stamps import now_ns

PING_EVERY_S = 0.5
PING_TIMEOUT_S = 5.0  # a ping not answered by then is recorded as that long, and dropped
MAX_PINGS = 7200  # an hour at PING_EVERY_S: a link's rows stay bounded
NOT_READ = -1  # a row's kernel round trip where it could not be read
STOP_S = 2.0  # the most stopping a link watch may take
# struct tcp_info (linux/tcp.h): tcpi_min_rtt (us) after 8 one-byte fields, 24 u32s, four
# u64s, three u32s (Linux 4.10 and later; an older kernel gives a shorter struct)
_TCP_INFO_MIN_RTT_OFFSET = 148


def tcp_rtt_ns(sock: socket.socket | None) -> int:
    """The kernel's least round trip of a TCP socket lately (tcpi_min_rtt, ns): the path's
    own, where its smoothed round trip is not (a peer slow to answer delays its ACKs, and
    each sample with them); NOT_READ where it cannot be read (not Linux, an old kernel, not
    a TCP socket, closed)."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return NOT_READ
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
        (rtt_us,) = struct.unpack_from("=I", info, _TCP_INFO_MIN_RTT_OFFSET)
    except (OSError, struct.error):
        return NOT_READ
    return rtt_us * 1000 if 0 < rtt_us < 0xFFFFFFFF else NOT_READ


def connection_socket(connection) -> socket.socket | None:
    """The socket under an aio-pika connection, or None. aiormq keeps its stream writer only
    in its writer task, so it is read from there (tested on the aio-pika and aiormq
    versions pyproject.toml allows; None elsewhere, and the kernel's RTT is then unread)."""
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        transport = getattr(connection, "transport", None)
        underlay = getattr(transport, "connection", transport)
        task = underlay._writer_task  # type: ignore[union-attr]  # None: AttributeError
        writer = task.get_coro().cr_frame.f_locals["writer"]
        return writer.get_extra_info("socket")
    return None


class LinkWatch:
    """The round trips of one piece's AMQP connection, twice a second until stopped: rows
    of [t_send_ns, amqp_rtt_ns, tcp_rtt_ns] (NOT_READ where the kernel's was not read; a
    ping unanswered within PING_TIMEOUT_S is recorded as that long)."""

    def __init__(self, connection, ring: bool = False) -> None:
        self.connection = connection
        # a server that embeds it for hours keeps the latest hour, not the first
        self.rows: list[list[int]] | deque[list[int]] = deque(maxlen=MAX_PINGS) if ring else []
        self.failures = 0  # pings that could not be sent (a closed channel, a reconnect)
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        # found once (a frame read), again only after the connection came back: the pieces'
        # loops are sampled from other threads already, and frame reads are what CPython
        # 3.11's crash reports have in common
        self._socket: socket.socket | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def halt(self) -> None:
        """No more pings (the rows are kept): the loop ends after the ping under way."""
        self._stopping.set()

    async def stop(self) -> None:
        """No more pings, within STOP_S whatever the channel does: a piece stops it on its way
        to handing over its result, which must never wait on a ping. The loop ends between
        pings (aiormq closes a channel whose call is cancelled, inside the cancellation);
        only one that has not ended by then is cancelled, and not waited for (asyncio.wait,
        unlike wait_for, never waits for a cancelled task to finish)."""
        self._stopping.set()
        if self._task:
            await asyncio.wait({self._task}, timeout=STOP_S)
            if not self._task.done():
                self._task.cancel()

    def reset(self) -> None:
        """Measure from now on (a run's set-up is not its figures)."""
        self.rows.clear()
        self.failures = 0

    async def _run(self) -> None:
        channel = None
        try:
            while not self._stopping.is_set():
                if channel is None or channel.is_closed:
                    try:
                        channel = await asyncio.wait_for(self.connection.channel(
                            publisher_confirms=False), PING_TIMEOUT_S)
                    except Exception:
                        self.failures += 1
                        channel = None
                        await self._pause()
                        continue
                await self._ping(channel)
                await self._pause()
        finally:
            if channel is not None:  # closed in the background, never waited on
                closing = asyncio.ensure_future(channel.close())
                closing.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _pause(self) -> None:
        """PING_EVERY_S, or until stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), PING_EVERY_S)

    async def _ping(self, channel) -> None:
        sent = now_ns()
        try:
            await asyncio.wait_for(channel.set_qos(prefetch_count=0), PING_TIMEOUT_S)
        except TimeoutError:
            rtt = int(PING_TIMEOUT_S * 1e9)
        except Exception:
            self.failures += 1
            return
        else:
            rtt = now_ns() - sent
        if len(self.rows) < MAX_PINGS or isinstance(self.rows, deque):
            self.rows.append([sent, rtt, self._kernel_rtt()])

    def _kernel_rtt(self) -> int:
        if self._socket is None:
            self._socket = connection_socket(self.connection)
        rtt = tcp_rtt_ns(self._socket)
        if rtt == NOT_READ:  # closed: a reconnect made another; look again next time
            self._socket = None
        return rtt

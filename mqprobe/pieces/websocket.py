"""The swarm's websocket: one non-blocking socket per connection and nothing else.

aiohttp's client websocket costs about 18 KB per connection and a task reading each one;
at 18,000 connections that is most of the swarm's memory. Here a connection is a socket,
a small buffer and a callback: the event loop calls `_readable` when the kernel has bytes
(loop.add_reader), frames are cut out of the buffer, and each text frame goes to the
swarm's handler with its receive stamp. No task, no queue, no thread per connection.

Receive stamps. With SO_TIMESTAMPNS the kernel stamps every packet when it arrives, and
recvmsg hands the stamp over with the bytes (TCP: the stamp of the last packet read), so
t_recv is when the frame reached this host, not when a busy loop got round to it: the
swarm's own loop lag stops inflating `delivery`. Each frame goes out with its stamp's
source (STAMP_*): the moment of the read where the kernel gives no stamp, the kernel's,
or the kernel's shared by several frames of one read (frames that queued while the loop
was busy: the stamp is the last one's, an upper bound for the earlier ones). The kernel
starts stamping shortly after the first socket of the host asks (a deferred switch): the
first frames of a process may carry read stamps, and are counted as such.

Only what socket.io servers send is spoken: plain ws:// (http URLs), text frames, possibly
fragmented, ping, pong and close; no extensions. Frames to the server are masked, as
RFC 6455 requires of a client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from hashlib import sha1
from urllib.parse import urlsplit

from mqprobe.stamps import CLOCK_SKEW_NS, now_ns

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: tv_sec, tv_nsec
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_SIZE = 65536
MAX_FRAME = 64 << 20  # a frame larger than this is not a socket.io event we can use

STAMP_READ, STAMP_KERNEL, STAMP_KERNEL_SHARED = 0, 1, 2  # where a frame's t_recv came from
TextHandler = Callable[[str, int, int], None]  # (frame text, t_recv ns, STAMP_*)


class ConnectionClosed(ConnectionError):
    """The server closed the connection (or it broke) before the handshake was done."""


class UpgradeRefused(ConnectionError):
    """The server answered the websocket upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status


class WebSocket:
    """One client connection. Before `listen`, frames are awaited one at a time (the
    handshake); after it, each arrives at the handler as the socket becomes readable."""

    __slots__ = ("sock", "loop", "kernel_stamps", "_buffer", "_fragments", "_on_text",
                 "_on_close", "_waiter", "_pending", "_out", "closed")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, rest: bytes,
                 kernel_stamps: bool = True) -> None:
        self.sock, self.loop = sock, loop
        self.kernel_stamps = kernel_stamps and _stamp_kernel(sock)
        self._buffer = bytearray(rest)
        self._fragments: list[bytes] | None = None
        self._on_text: TextHandler | None = None
        self._on_close: Callable[[], None] | None = None
        self._waiter: asyncio.Future | None = None
        self._pending: list[tuple[str, int, int]] = []  # frames cut before anyone listened
        self._out = bytearray()
        self.closed = False
        self._cut_frames(now_ns(), False)  # frames that came with the upgrade reply

    # -- opening -----------------------------------------------------------------------
    @classmethod
    async def connect(cls, url: str, resource: str, kernel_stamps: bool = True) -> WebSocket:
        """Open a websocket to `resource` (path and query) on the server of an http URL;
        kernel_stamps=False stamps frames when they are read (to compare the two)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "ws"):
            raise ConnectionError(f"{url}: the swarm speaks plain http (ws://) only")
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        family, kind, proto, address = await _resolve(loop, host, port)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            key = base64.b64encode(os.urandom(16)).decode()
            path = (parts.path.rstrip("/") + resource) if parts.path not in ("", "/") else resource
            await loop.sock_sendall(sock, (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            rest = await _upgrade_reply(loop, sock, key)
        except BaseException:
            sock.close()
            raise
        return cls(sock, loop, rest, kernel_stamps)

    # -- handshake: one frame at a time --------------------------------------------------
    async def receive(self) -> str:
        """The next text frame (during the handshake, before `listen`)."""
        while not self._pending:
            if self.closed:
                raise ConnectionClosed("the server closed the connection")
            self._waiter = self.loop.create_future()
            self.loop.add_reader(self.sock.fileno(), self._readable)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if not self.closed and self._on_text is None:
                    self.loop.remove_reader(self.sock.fileno())
        return self._pending.pop(0)[0]

    def listen(self, on_text: TextHandler, on_close: Callable[[], None]) -> None:
        """From now on every text frame goes to on_text(text, t_recv, source); on_close
        once, when the connection ends (not after `close`)."""
        self._on_text, self._on_close = on_text, on_close
        pending, self._pending = self._pending, []
        for frame in pending:
            on_text(*frame)
        if self.closed:
            on_close()
        else:
            self.loop.add_reader(self.sock.fileno(), self._readable)

    # -- reading -------------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            if self.kernel_stamps:
                data, ancillary, _flags, _addr = self.sock.recvmsg(READ_SIZE, _ANCILLARY)
                t_recv = _kernel_stamp(ancillary)
            else:
                data, t_recv = self.sock.recv(READ_SIZE), 0
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, t_recv = b"", 0
        if not data:
            self._ended()
            return
        head = self._one_text_frame(data)
        if head:  # the swarm's usual read: one emit's frame, decoded where it lies
            self._text(memoryview(data)[head:], t_recv or now_ns(),
                       STAMP_KERNEL if t_recv else STAMP_READ)
            return
        self._buffer += data
        self._cut_frames(t_recv or now_ns(), bool(t_recv))

    def _one_text_frame(self, data: bytes) -> int:
        """Where the payload begins when `data` is exactly one whole, unfragmented text
        frame of under 64 KB and nothing waits before it; else 0 (the long way: the
        buffer, a masked or longer frame, several or part of one)."""
        if self._buffer or self._fragments is not None or len(data) < 2 or data[0] != 0x81:
            return 0
        length, head = data[1], 2  # (a masked frame's second byte is 128 or more)
        if length == 126:
            length, head = int.from_bytes(data[2:4], "big"), 4
        elif length > 126:
            return 0
        return head if len(data) == head + length else 0

    def _cut_frames(self, t_recv: int, kernel: bool) -> None:
        """Every complete frame in the buffer, in order; a partial one waits for more. A
        frame no server may send (masked, or over MAX_FRAME) ends the connection after the
        frames before it."""
        buffer, at, end = self._buffer, 0, len(self._buffer)
        frames, broken = [], False
        while end - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if end - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2:at + 4], "big"), 4
            elif length == 127:
                if end - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2:at + 10], "big"), 10
            if second & 0x80 or length > MAX_FRAME:
                broken = True
                break
            if end - at < head + length:
                break
            frames.append((first, bytes(buffer[at + head:at + head + length])))
            at += head + length
        if at:
            del buffer[:at]
        source = (STAMP_READ if not kernel else STAMP_KERNEL if len(frames) == 1
                  else STAMP_KERNEL_SHARED)
        for first, payload in frames:
            self._frame(first & 0x80, first & 0x0F, payload, t_recv, source)
            if self.closed:
                return
        if broken:
            self._ended()

    def _frame(self, fin: int, opcode: int, payload: bytes, t_recv: int, source: int) -> None:
        if opcode == 0x1 or opcode == 0x0:  # text, or a continuation of one
            if opcode == 0x1 and fin:
                self._text(payload, t_recv, source)
                return
            if opcode == 0x1:
                self._fragments = [payload]
            elif self._fragments is not None:
                self._fragments.append(payload)
            if fin and self._fragments is not None:
                whole, self._fragments = b"".join(self._fragments), None
                self._text(whole, t_recv, source)
        elif opcode == 0x9:  # ping: the same payload back
            self._send(0xA, payload)
        elif opcode == 0x8:  # close
            self._ended()

    def _text(self, payload: bytes | memoryview, t_recv: int, source: int) -> None:
        try:
            text = str(payload, "utf-8")
        except UnicodeDecodeError:
            text = str(payload, "utf-8", "replace")
        if self._on_text is not None:
            self._on_text(text, t_recv, source)
            return
        self._pending.append((text, t_recv, source))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- writing -------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        """Send one text frame now (small frames fit the socket buffer; what does not is
        written when the socket can take it)."""
        self._send(0x1, text.encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.closed:
            return
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes((0x80 | opcode, 0x80 | length))
        elif length < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
        frame = head + mask + _masked(payload, mask)
        if self._out:
            self._out += frame
            return
        try:
            sent = self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._ended()
            return
        if sent < len(frame):
            self._out += frame[sent:]
            self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._ended()
            return
        del self._out[:sent]
        if not self._out:
            self.loop.remove_writer(self.sock.fileno())

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close without telling anyone (on_close is for the server's doing)."""
        self._on_close = None
        self._shut()

    def _ended(self) -> None:
        on_close = self._on_close
        self._on_close = None
        self._shut()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if on_close is not None:
            on_close()

    def _shut(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
        with contextlib.suppress(OSError):
            if not self._out:  # a polite close frame when it can go at once
                self.sock.send(bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
        self.sock.close()


_RESOLVED: dict[tuple[str, int], tuple] = {}


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> tuple:
    """(family, type, proto, address) of host:port, resolved once per process: thousands of
    members of one server must not each take a trip through the resolver's thread pool."""
    found = _RESOLVED.get((host, port))
    if found is None:
        family, kind, proto, _name, address = (await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM))[0]
        found = _RESOLVED[(host, port)] = (family, kind, proto, address)
    return found


async def _upgrade_reply(loop: asyncio.AbstractEventLoop, sock: socket.socket, key: str) -> bytes:
    """Read the server's answer to the upgrade; returns the bytes after its headers."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = await loop.sock_recv(sock, READ_SIZE)
        if not chunk:
            raise ConnectionClosed("the server closed the connection during the upgrade")
        reply += chunk
        if len(reply) > 65536:
            raise ConnectionError("the server's upgrade reply has no end of headers")
    head, _, rest = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    try:
        status = int(status_line[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"the server's upgrade reply is not HTTP: {lines[0][:80]!r}") from None
    if status != 101:
        raise UpgradeRefused(status, status_line[2] if len(status_line) > 2 else "")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:])}
    expected = base64.b64encode(sha1(key.encode() + _MAGIC).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise ConnectionError("the server's upgrade reply has a wrong Sec-WebSocket-Accept")
    return rest


def _masked(payload: bytes, mask: bytes) -> bytes:
    """payload XOR the repeated 4-byte mask, as one big-integer operation."""
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        len(payload), "little")


def _stamp_kernel(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received packets; False where it will not."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _kernel_stamp(ancillary: list) -> int:
    """The SCM_TIMESTAMPNS stamp in recvmsg's ancillary data, in ns (0: none)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds * 1_000_000_000 + nanoseconds + CLOCK_SKEW_NS
    return 0

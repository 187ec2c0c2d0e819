"""What the swarm pays in Python to turn one read into its text frame: through the buffer
(bytearray, cut, copied out, decoded: the long way every read took before) or decoded
where it lies when the read is exactly one whole text frame (WebSocket._one_text_frame),
for a 1 KB and a 20 KB (the seed's) message body. The socket is a stand-in that returns
the frame (no system call: that cost is the kernel's, the same either way).

    .venv/bin/python benchmarks/swarm_read.py
"""

from __future__ import annotations

import asyncio
import timeit

from mqprobe.pieces.websocket import WebSocket


class OneFrame:
    """A socket whose every read returns the same frame."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, _size: int) -> bytes:
        return self.data


class LongWay(WebSocket):
    """Every read through the buffer, as every read went before."""

    __slots__ = ()

    def _one_text_frame(self, data: bytes) -> int:
        return 0


def frame(payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    return bytes((0x81, 126)) + length.to_bytes(2, "big") + payload


def per_read_us(ws: WebSocket, number: int = 50_000) -> float:
    return min(timeit.repeat(ws._readable, number=number, repeat=5)) / number * 1e6


def main() -> None:
    loop = asyncio.new_event_loop()
    for size in (1024, 20480):
        data = frame(b'42["message",{"mqprobe":[1,"4bf92f3577b34da6a3ce929d0e0e4736","17",12,'
                     b'"n1",1,2,3,4],"body":"' + b"x" * size + b'"}]')
        ws = WebSocket.__new__(WebSocket)
        ws.sock, ws.loop, ws.kernel_stamps = OneFrame(data), loop, False
        ws._buffer, ws._fragments, ws._pending, ws._out = bytearray(), None, [], bytearray()
        ws._waiter, ws._on_close, ws.closed = None, None, False
        ws._on_text = lambda text, t_recv, source: None
        quick = per_read_us(ws)
        ws.__class__ = LongWay
        long_way = per_read_us(ws)
        print(f"{size} B body: through the buffer {long_way:.2f} us a read, "
              f"decoded where it lies {quick:.2f} us")


if __name__ == "__main__":
    main()

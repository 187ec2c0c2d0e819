"""The swarm's websocket on one end of a loopback TCP pair: RFC 6455 framing as servers send it,
fragments, control frames, what no server may send, and each frame's stamp source."""

import asyncio
import socket

import pytest

from mqprobe.pieces.websocket import (
    STAMP_KERNEL,
    STAMP_KERNEL_SHARED,
    STAMP_READ,
    WebSocket,
    _masked,
)

# The kernel turns receive stamping on for the host shortly after the first socket asks
# (a deferred switch), and off when the last one closes: each test's socket waits for it.
KERNEL_SWITCH_S = 0.1


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection (the kernel stamps TCP, not unix sockets)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs, _address = server.accept()
    return ours, theirs


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True, masked: bool = False) -> bytes:
    """A frame as a server writes it (unmasked), in all three length encodings."""
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = bytes((first, length))
    elif length < 1 << 16:
        head = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + length.to_bytes(8, "big")
    if masked:
        return bytes((head[0], head[1] | 0x80)) + head[2:] + b"abcd" + _masked(payload, b"abcd")
    return head + payload


def unmask(data: bytes) -> tuple[int, bytes]:
    """What the client sent: its opcode and payload (a client must mask)."""
    assert data[1] & 0x80, "client frames are masked"
    length, at = data[1] & 0x7F, 2
    if length == 126:
        length, at = int.from_bytes(data[2:4], "big"), 4
    mask = data[at:at + 4]
    return data[0] & 0x0F, _masked(data[at + 4:at + 4 + length], mask)


async def exchange(chunks: list[bytes], kernel_stamps: bool = True, pause: float = 0.05):
    """Feed the chunks (a pause between them) to a listening WebSocket; what it handed on."""
    ours, theirs = tcp_pair()
    ours.setblocking(False)
    got, closed = [], []
    ws = WebSocket(ours, asyncio.get_running_loop(), b"", kernel_stamps)
    ws.listen(lambda text, t_recv, source: got.append((text, t_recv, source)),
              lambda: closed.append(True))
    await asyncio.sleep(KERNEL_SWITCH_S)
    for chunk in chunks:
        theirs.sendall(chunk)
        await asyncio.sleep(pause)
    theirs.setblocking(False)
    try:
        sent = theirs.recv(65536)
    except BlockingIOError:
        sent = b""
    theirs.close()
    await asyncio.sleep(pause)
    return got, closed, sent, ws


def test_frames_of_every_length_encoding_and_split_anywhere_arrive_whole():
    big, huge = "x" * 300, "y" * 70_000
    data = frame(b"42[1]") + frame(big.encode()) + frame(huge.encode())
    chunks = [data[:1], data[1:7], data[7:400], data[400:]]  # cut inside headers and payloads
    got, closed, _sent, _ws = asyncio.run(exchange(chunks))
    assert [text for text, _t, _s in got] == ["42[1]", big, huge]
    assert closed == [True]  # the peer went away: on_close, once


def test_a_fragmented_text_message_is_joined_and_a_ping_is_answered():
    chunks = [frame(b"42[\"a", fin=False) + frame(b"bc\"", opcode=0x0, fin=False)
              + frame(b"ping!", opcode=0x9) + frame(b"]", opcode=0x0)]
    got, _closed, sent, _ws = asyncio.run(exchange(chunks))
    assert [text for text, _t, _s in got] == ['42["abc"]']
    assert unmask(sent) == (0xA, b"ping!")  # pong with the ping's payload, masked


def test_what_no_server_may_send_ends_the_connection_after_the_frames_before_it():
    chunks = [frame(b"first") + frame(b"masked", masked=True) + frame(b"never")]
    got, closed, _sent, ws = asyncio.run(exchange(chunks))
    assert [text for text, _t, _s in got] == ["first"] and closed == [True] and ws.closed


def test_a_close_frame_ends_it_and_sending_after_is_a_no_op():
    got, closed, _sent, ws = asyncio.run(exchange([frame(b"", opcode=0x8)]))
    assert got == [] and closed == [True]
    ws.send_text("2")  # nothing to send on, nothing raised


def test_each_frame_says_where_its_stamp_came_from():
    one_at_a_time = [frame(b"a"), frame(b"b")]
    together = [frame(b"c") + frame(b"d")]
    got, *_ = asyncio.run(exchange(one_at_a_time))
    assert [s for _t, _r, s in got] == [STAMP_KERNEL, STAMP_KERNEL]
    got, *_ = asyncio.run(exchange(together))  # queued in one read: they share its stamp
    assert [s for _t, _r, s in got] == [STAMP_KERNEL_SHARED] * 2 and got[0][1] == got[1][1]
    got, *_ = asyncio.run(exchange(one_at_a_time, kernel_stamps=False))
    assert [s for _t, _r, s in got] == [STAMP_READ, STAMP_READ]


def test_the_kernel_stamp_is_when_the_bytes_arrived_not_when_the_loop_read_them():
    import time

    async def run() -> tuple[int, int]:
        ours, theirs = tcp_pair()
        ours.setblocking(False)
        got = []
        ws = WebSocket(ours, asyncio.get_running_loop(), b"")
        ws.listen(lambda text, t_recv, source: got.append(t_recv), lambda: None)
        await asyncio.sleep(KERNEL_SWITCH_S)
        theirs.sendall(frame(b"late"))
        sent_at = time.time_ns()
        time.sleep(0.2)  # the loop is blocked: it reads the frame 200 ms after it came
        await asyncio.sleep(0.05)
        theirs.close()
        ws.close()
        return got[0], sent_at

    t_recv, sent_at = asyncio.run(run())
    assert abs(t_recv - sent_at) < 50_000_000, (t_recv - sent_at) / 1e6  # not ~200 ms late


def _bare() -> WebSocket:
    """A WebSocket with nothing buffered and no socket: for its pure decisions."""
    ws = WebSocket.__new__(WebSocket)
    ws._buffer, ws._fragments = bytearray(), None
    return ws


@pytest.mark.parametrize(("data", "head"), [
    (frame(b"42[1]"), 2),
    (frame(b"x" * 125), 2),
    (frame(b"x" * 126), 4),  # the 16-bit length
    (frame(b"x" * 65535), 4),
    (frame(b"x" * 65536), 0),  # the 64-bit length: the long way
    (frame(b"42[1]", masked=True), 0),  # no server may send it: the long way ends it
    (frame(b"42[1]", fin=False), 0),  # the first of fragments
    (frame(b"ping", opcode=0x9), 0),
    (frame(b"42[1]") + frame(b"2"), 0),  # two frames in one read: a shared stamp
    (frame(b"42[1]")[:-1], 0),  # part of one
    (frame(b"x" * 300)[:3], 0),  # part of a 16-bit length
    (b"\x81", 0),
])
def test_a_read_of_one_whole_text_frame_is_decoded_where_it_lies(data, head):
    assert _bare()._one_text_frame(data) == head


def test_not_the_quick_way_while_anything_waits_before_the_read():
    buffered, fragmented = _bare(), _bare()
    buffered._buffer += b"\x81"
    fragmented._fragments = [b"42["]
    assert buffered._one_text_frame(frame(b"1")) == 0
    assert fragmented._one_text_frame(frame(b"1", opcode=0x0)) == 0


def test_single_frames_of_each_size_and_bad_utf8_arrive_as_the_long_way_gives_them():
    texts = [b"42[1]", b"x" * 125, b"y" * 126, b"z" * 65535, b"\xff42"]
    got, *_ = asyncio.run(exchange([frame(t) for t in texts]))
    assert [text for text, _t, _s in got] == [t.decode(errors="replace") for t in texts]
    assert {source for _t, _r, source in got} == {STAMP_KERNEL}

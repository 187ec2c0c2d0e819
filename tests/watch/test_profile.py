"""The loop profiler on a real event loop: no broker, no node."""

import asyncio
import gc
import sys
import threading
import time

import pytest

from mqprobe.timeline import EventKind, Recorder
from mqprobe.watch.profile import (
    GC,
    HEARTBEATS,
    IDLE,
    LoopProfiler,
    busy_line,
    heartbeat_work,
    serves_connections,
    work_here,
)


def _planted_hot(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _profiled(work) -> dict:
    async def main() -> dict:
        profiler = LoopProfiler(every_s=0.002)
        profiler.start()
        try:
            await work()
        finally:
            profiler.stop()
            profiler.join()
        return profiler.summary()
    return asyncio.run(main())


def test_a_planted_hot_function_is_the_busiest_and_a_sleeping_loop_is_idle():
    async def hot_then_idle() -> None:
        asyncio.get_running_loop().call_soon(_planted_hot, 0.3)
        await asyncio.sleep(0.45)  # 0.3 s hot, then 0.15 s waiting in select

    profile = _profiled(hot_then_idle)
    assert profile["samples"] > 50
    (busiest, share), *_ = profile["top"]
    assert busiest.endswith("test_profile.py in _planted_hot") and share > 0.4, profile
    assert 0.15 < profile["kinds"][IDLE] < 0.6, profile
    line = busy_line("n1", profile)
    assert line.startswith("n1's loop (profiled 500/s): ") and "_planted_hot" in line


def test_collections_are_counted_as_garbage_collection():
    async def collecting() -> None:
        loop = asyncio.get_running_loop()
        junk = [[[] for _ in range(50)] for _ in range(20_000)]  # much for the collector
        for _ in range(20):
            loop.call_soon(gc.collect)
            await asyncio.sleep(0.01)
        del junk

    profile = _profiled(collecting)
    assert profile["kinds"].get(GC, 0) > 0, profile
    assert busy_line("n1", {"samples": 0}) == ""


def test_the_embed_api_profiles_its_hosts_loop_when_asked():
    from mqprobe.embed import Tracer

    tracer = Tracer("n1")
    assert tracer.loop_time() == {"samples": 0}

    async def host() -> dict:
        tracer.watch_loop_time(every_s=0.002)
        asyncio.get_running_loop().call_soon(_planted_hot, 0.2)
        await asyncio.sleep(0.3)
        tracer.stop_watching()
        return tracer.loop_time()

    seen = asyncio.run(host())
    assert seen["samples"] > 20 and seen["top"][0][0].endswith("in _planted_hot"), seen


def test_the_samplers_have_ended_when_stop_returns():
    """Both threads read the loop thread's frames (and the watchdog a descriptor of its own):
    once stop() returns, neither runs, so the loop can tear its tasks down under nobody."""
    from mqprobe.watch.loop import Watchdog

    async def main() -> list[bool]:
        profiler, watchdog = LoopProfiler(every_s=0.001), Watchdog(late_ns=1, every_s=0.001)
        profiler.start()
        watchdog.start()
        await asyncio.sleep(0.05)
        assert profiler.samples and watchdog.samples
        alive = []
        for sampler in (profiler, watchdog):
            sampler.stop()
            alive.append(sampler.is_alive())
        assert watchdog._schedstat is None
        return alive

    assert asyncio.run(main()) == [False, False]


def test_a_summary_read_while_the_sampler_still_counts_never_raises():
    """Two matrix runs (of 210) lost a node's result to `dictionary changed size during
    iteration`: its stop read the summary while the sampler thread, throttled, still added
    functions. A writer thread stands in for it here, with the GIL handed over often."""
    import sys
    import threading

    profiler = LoopProfiler()
    profiler.kinds[IDLE] = 1
    done = threading.Event()

    def add_functions() -> None:  # the dict grows and shrinks: its size always changing
        n = 0
        while not done.is_set():
            profiler.functions[f"f{n % 2000}"] += 1
            n += 1
            if n % 2000 == 0:
                profiler.functions.clear()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=add_functions)
    writer.start()
    try:
        for _ in range(300):
            profiler.summary()
    finally:
        done.set()
        writer.join()
        sys.setswitchinterval(interval)


class _Packet:
    """An engine.io packet as its socket's frames hold one (engineio/packet.py)."""

    def __init__(self, packet_type: int) -> None:
        self.packet_type = packet_type


def _frames(*chain: tuple[str, ...]) -> list:
    """The frames of calls through functions named as in `chain` (outermost first), each
    compiled as if from that library file, with the locals a third item assigns (`pkt =
    Packet(2)`): innermost first, as the profiler reads them."""
    source = "def f_0(): return sys._getframe()\n"
    namespace: dict = {"sys": sys}
    exec(compile(source, "inner.py", "exec"), namespace)
    inner = namespace["f_0"]
    for path, name, *assigned in reversed(chain):
        namespace = {"inner": inner, "Packet": _Packet}
        body = f"{assigned[0]}; " if assigned else ""
        exec(compile(f"def {name}():\n    {body}return inner()\n", f"/site-packages/{path}",
                     "exec"), namespace)
        inner = namespace[name]
    frame, out = inner().f_back, []
    for _ in chain:
        out.append(frame)
        frame = frame.f_back
    return out


@pytest.mark.parametrize(("chain", "connection"), [
    # a join: socket.io's event handling, then the room entered: connection work
    ([("engineio/async_socket.py", "receive"), ("socketio/async_server.py", "_handle_event"),
      ("mqprobe/pieces/node.py", "_on_join"), ("socketio/async_server.py", "enter_room")], True),
    # a pong read, under the engine.io connect every websocket's life runs inside: steady
    ([("engineio/async_server.py", "_handle_connect"),
      ("engineio/async_socket.py", "_websocket_handler"),
      ("engineio/async_socket.py", "receive")], False),
    # the websocket handshake itself
    ([("engineio/async_server.py", "_handle_connect"),
      ("engineio/async_drivers/aiohttp.py", "__call__"), ("aiohttp/web_ws.py", "prepare")], True),
    # an emit's write
    ([("engineio/async_socket.py", "writer"), ("aiohttp/web_ws.py", "send_str")], False),
])
def test_the_innermost_marker_says_whether_a_callback_serves_connections(chain, connection):
    assert serves_connections(_frames(*chain)) is connection


SOCKET = "engineio/async_socket.py"


@pytest.mark.parametrize(("chain", "heartbeat"), [
    # a ping's write: the socket's writer with a PING packet in hand
    ([(SOCKET, "writer", "packets = [pkt := Packet(2)]"), ("aiohttp/web_ws.py", "send_str")],
     True),
    # a message's write through the same writer
    ([(SOCKET, "writer", "packets = [pkt := Packet(4)]"), ("aiohttp/web_ws.py", "send_str")],
     False),
    # the writer waiting on its queue, the last packet (a ping) still in its locals
    ([(SOCKET, "writer", "pkt = Packet(2); packets = None"), (SOCKET, "poll")], False),
    # the ping timer's send, through the socket's send and its timeout check
    ([(SOCKET, "_send_ping"), (SOCKET, "send"), (SOCKET, "check_ping_timeout")], True),
    # a pong read, under the engine.io connect every websocket's life runs inside
    ([("engineio/async_server.py", "_handle_connect"), (SOCKET, "_websocket_handler", "p = '3'"),
      (SOCKET, "receive", "pkt = Packet(3)"), (SOCKET, "schedule_ping")], True),
    # a pong's raw packet, before it is decoded
    ([(SOCKET, "_websocket_handler", "p = '3'")], True),
    # a join: the client's message read, then socket.io's event: not a heartbeat
    ([(SOCKET, "receive", "pkt = Packet(4)"), ("socketio/async_server.py", "_handle_event"),
      ("socketio/async_server.py", "enter_room")], False),
    # the liveness walk over every socket
    ([("engineio/async_server.py", "_service_task"), (SOCKET, "check_ping_timeout")], True),
    # ... until it finds a client timed out and closes it: that client going
    ([("engineio/async_server.py", "_service_task"), (SOCKET, "check_ping_timeout"),
      (SOCKET, "close")], False),
])
def test_engine_ios_frames_and_the_packet_in_hand_say_whether_it_is_a_heartbeat(chain, heartbeat):
    assert heartbeat_work(_frames(*chain)) is heartbeat


def test_a_collection_begun_by_a_pings_write_says_it_began_in_heartbeats():
    """A real collection, begun on a real loop inside engine.io's writer with a ping in
    hand (compiled as if from that file): the node's collector callback names the work."""
    namespace: dict = {"gc": gc, "Packet": _Packet}
    exec(compile("def writer():\n    packets = [pkt := Packet(2)]\n    gc.collect()\n",
                 f"/site-packages/{SOCKET}", "exec"), namespace)
    recorder = Recorder("n1")
    garbage = [[i, str(i)] for i in range(300_000)]  # enough to scan for well over 1 ms

    async def run() -> None:
        loop_thread = threading.get_ident()
        recorder.gc_began_in = lambda frame: work_here(frame, loop_thread)
        recorder.watch_gc()
        try:
            asyncio.get_running_loop().call_soon(namespace["writer"])
            await asyncio.sleep(0.05)
            # and one from another thread: named as that thread, not as the loop's work
            other = threading.Thread(target=gc.collect, name="sampler")
            other.start()
            other.join()
        finally:
            recorder.unwatch_gc()

    asyncio.run(run())
    del garbage
    began = [e.detail.get("began_in") for e in recorder.events if e.kind == EventKind.GC
             and e.detail.get("generation") == 2]
    assert began[:2] == [HEARTBEATS, "another thread (sampler)"], began

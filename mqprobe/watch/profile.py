"""What a node's event loop spent its time on: its thread's stack, sampled at a low rate
from another thread (sys._current_frames) while the run measures, counted by kind of work
(connections coming and going, heartbeats, AMQP consume and ack, socket.io encode, websocket
write, mqprobe's own, garbage collection, idle) and by function. The loop is never touched:
the sampler only reads. Its own cost is in BENCHMARKS.md ("What profiling the loop costs").

The samples of connection work (handshakes, joins, disconnects) and of heartbeats (engine.io's
pings, its clients' pongs, its liveness checks) are also kept as spans of time (`spans`): the
node's timeline has them, and the verdict charges a message that waited for its node's loop
the part of its wait those spans cover (connection-churn, heartbeats)."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter
from types import FrameType

from mqprobe.stamps import now_ns
from mqprobe.watch.loop import STDLIB, callback_frames, join_sampler, short_path

# kinds of work, in the order they are looked for among a callback's frames: a node's emit
# runs mqprobe's code around socket.io's around aiohttp's, and is the innermost kind
KINDS = (
    ("websocket write", ("aiohttp/web_ws", "aiohttp/_websocket", "aiohttp/http_websocket",
                         "engineio/async_drivers/aiohttp", "engineio/async_socket",
                         "mqprobe/pieces/websocket")),
    ("socket.io encode", ("socketio/packet", "engineio/packet", "socketio/async_server",
                          "socketio/async_manager", "socketio/base_manager", "json/")),
    ("AMQP consume and ack", ("aiormq/", "aio_pika/", "pamqp/")),
    ("mqprobe's node", ("mqprobe/",)),
)
IDLE, GC, LOOP, OTHER = "idle (waiting in select)", "garbage collection", "the loop's own work", "other"
CONNECTIONS = "connections (handshakes, joins, disconnects)"
HEARTBEATS = "heartbeats (pings, pongs, liveness checks)"

# The innermost of these among a callback's frames (innermost first) says whether it serves
# a connection coming or going, or one that is up. A websocket's whole life runs inside the
# request (and engine.io's connect) that opened it, so only the innermost marker counts: a
# pong read under engine.io's _handle_connect is steady work, a join's enter_room under
# socket.io's _handle_event is not. (path prefix, function names)
Markers = tuple[tuple[str, set[str]], ...]
COMING_AND_GOING: Markers = (
    ("socketio/", {"_handle_connect", "_handle_disconnect", "_handle_eio_connect",
                   "_handle_eio_disconnect", "enter_room", "leave_room", "disconnect", "connect",
                   "basic_enter_room", "basic_leave_room", "basic_disconnect", "_send_connect"}),
    ("engineio/", {"_handle_connect", "handle_request", "handle_get_request", "close",
                   "disconnect", "_upgrade_websocket", "__call__"}),
    ("aiohttp/web_ws", {"prepare", "_pre_start", "_handshake", "_post_start", "close"}),
    ("aiohttp/web_protocol", {"connection_made", "connection_lost", "_handle_request",
                              "finish_response"}),
    ("aiohttp/web_request", set()), ("aiohttp/web_response", set()), ("aiohttp/helpers", set()),
    ("mqprobe/pieces/node", {"_on_join", "_on_connect", "_on_disconnect"}),
    # the loop's own part of an accept and a close (asyncio's transports, the socket)
    ("asyncio/selector_events", {"_accept_connection", "_accept_connection2",
                                 "_call_connection_lost", "__init__"}),
    ("/socket.py", {"accept", "_real_close", "close"}),
)
STEADY: Markers = (
    ("engineio/", {"receive", "send", "writer", "websocket_wait", "_websocket_handler",
                   "_send_ping", "check_ping_timeout", "poll", "send_packet", "wait"}),
    ("socketio/", {"emit", "send", "_send_packet", "_send_eio_packet", "_handle_event",
                   "_handle_ack", "_handle_eio_message", "_emit_internal", "can_disconnect"}),
    ("aiohttp/_websocket", set()), ("aiohttp/web_ws", {"send_str", "send_frame", "receive",
                                                        "_send_frame"}),
    ("aiormq/", set()), ("aio_pika/", set()), ("pamqp/", set()),
)


def _marker(path: str, name: str, table: Markers) -> bool:
    """Whether (path, function) is one of a table's: a path part with no names takes all."""
    return any(prefix in path and (not names or name in names)
               for prefix, names in table)


def serves_connections(inside: list[FrameType]) -> bool:
    """Whether a callback's frames (innermost first) serve a connection coming or going."""
    for frame in inside:
        path, name = short_path(frame.f_code.co_filename), frame.f_code.co_name
        if _marker(path, name, STEADY):
            return False
        if _marker(path, name, COMING_AND_GOING):
            return True
    return False


# engine.io's packet types (engineio/packet.py): a ping the server writes, the pong it reads
PING, PONG = 2, 3


def _heartbeat(frame: FrameType) -> bool | None:
    """Whether one of engine.io's frames says its callback is heartbeat work (None: this
    frame does not say). Pings and messages share the socket's writer and reader, so those
    frames are read for the packet in hand: the sampler holds the GIL, the loop thread is
    paused between two bytecodes, and the locals are only read."""
    path, name = short_path(frame.f_code.co_filename), frame.f_code.co_name
    if path.startswith("engineio/async_server") and name == "_service_task":
        return True  # its walk over every socket, checking each one's last pong
    if not path.startswith("engineio/async_socket"):
        return None
    if name in ("_send_ping", "schedule_ping"):
        return True
    if name == "writer":  # `packets` is None while it waits on its queue (poll)
        local = frame.f_locals
        return local.get("packets") is not None and \
            getattr(local.get("pkt"), "packet_type", None) == PING
    if name == "receive":
        return getattr(frame.f_locals.get("pkt"), "packet_type", None) == PONG
    if name == "_websocket_handler":  # the raw packet read, before it is decoded
        return frame.f_locals.get("p") in (str(PONG), str(PONG).encode())
    if name == "poll":
        return False
    return None


def heartbeat_work(inside: list[FrameType]) -> bool:
    """Whether a callback's frames (innermost first) are engine.io's heartbeats: its ping
    timer's send and the ping's write, a pong's read, its walk over the sockets' last pongs.
    The innermost of its frames that says decides, unless a connection coming or going is
    inside it (a ping that finds its client timed out and closes it is the client going)."""
    for frame in inside:
        said = _heartbeat(frame)
        if said is not None:
            return said
        if _marker(short_path(frame.f_code.co_filename), frame.f_code.co_name, COMING_AND_GOING):
            return False
    return False


def kind_of(inside: list[FrameType]) -> str:
    """The kind of work a callback's frames are doing: the first of KINDS among them."""
    paths = [short_path(frame.f_code.co_filename) for frame in inside]
    for kind, prefixes in KINDS:
        if any(path.startswith(prefixes) for path in paths):
            return kind
    return OTHER


def work_of(inside: list[FrameType]) -> str:
    """The kind of work a callback's frames (innermost first) are doing: heartbeats,
    connections coming and going, else the first of KINDS among them."""
    if heartbeat_work(inside):
        return HEARTBEATS
    return CONNECTIONS if serves_connections(inside) else kind_of(inside)


def work_here(frame: FrameType | None, loop_thread: int) -> str:
    """The kind of work the calling thread is doing, from a frame of it (a collection's
    callback asks, in the thread whose allocation began it): in the loop's thread, its
    callback's kind (the loop's own work where it runs none); in another, that thread."""
    if threading.get_ident() != loop_thread:
        return f"another thread ({threading.current_thread().name})"
    inside, runner = callback_frames(frame)
    return work_of(inside) if runner is not None else LOOP


def function_of(inside: list[FrameType]) -> str:
    """`aiohttp/web_ws.py in send_str`: the innermost frame outside the standard library."""
    frame = next((f for f in inside if not f.f_code.co_filename.startswith(STDLIB)), inside[0])
    return f"{short_path(frame.f_code.co_filename)} in {frame.f_code.co_name}"


# 50 a second: at 100 the sampler was 3.8% of a reference node's CPU at the default
# workload, most of what the node's instruments cost it (BENCHMARKS "What the instrument
# weighs"); each sample stands for the time since the one before, so shares are unbiased
EVERY_S = 0.02
MAX_SPANS = 50_000  # spans kept of each kind (a span per sample at most: 16 minutes)
JOIN_NS = 1_000_000  # a span that begins this close to the last one's end extends it


class LoopProfiler(threading.Thread):
    """Samples the thread that made it (the loop's) every `every_s` until stopped."""

    def __init__(self, every_s: float = EVERY_S, top: int = 8) -> None:
        super().__init__(name="mqprobe-profiler", daemon=True)
        self.loop_thread = threading.get_ident()
        self.every_s, self.top = every_s, top
        # ns of the loop's time per kind and function: each sample stands for the time since
        # the one before, because the sampler needs the GIL to look, and a loop computing in
        # Python hands it over only every switch interval (5 ms): counted sample by sample,
        # busy time came out at half its share beside idle time
        self.kinds: Counter[str] = Counter()
        self.functions: Counter[str] = Counter()
        self.samples = 0
        # kind -> [start_ns, end_ns] on the pieces' clock (stamps.now_ns): the loop's time
        # on connections and on heartbeats, a sample's span each, contiguous ones joined
        self.spans: dict[str, list[list[int]]] = {CONNECTIONS: [], HEARTBEATS: []}
        self.cpu_ns = 0
        self._last = 0
        self._stopped = threading.Event()
        self._collecting = False  # set by the collector's callback, read by the sampler

    def _on_gc(self, phase: str, _info: dict) -> None:
        self._collecting = phase == "start"

    def run(self) -> None:
        gc.callbacks.append(self._on_gc)
        began = time.thread_time_ns()
        try:
            while not self._stopped.wait(self.every_s):
                self._sample()
                self.cpu_ns = time.thread_time_ns() - began  # its own cost, in the result
        finally:
            if self._on_gc in gc.callbacks:
                gc.callbacks.remove(self._on_gc)

    def _sample(self) -> None:
        now = time.monotonic_ns()
        weight, self._last = (now - self._last if self._last else 0), now
        self.samples += 1
        if self._collecting:
            self.kinds[GC] += weight
            return
        frame = sys._current_frames().get(self.loop_thread)
        try:
            inside, runner = callback_frames(frame)
            if runner is None:
                self.kinds[IDLE if _selecting(frame) else LOOP] += weight
                return
            kind = work_of(inside)
            self.kinds[kind] += weight
            self.functions[function_of(inside)] += weight
            if kind in self.spans and weight:
                self._span(self.spans[kind], weight)
        except Exception:  # a frame caught mid-change: this sample only
            self.kinds[OTHER] += weight
        finally:
            del frame

    @staticmethod
    def _span(spans: list[list[int]], weight: int) -> None:
        end = now_ns()
        if spans and spans[-1][1] >= end - weight - JOIN_NS:
            spans[-1][1] = end
        elif len(spans) < MAX_SPANS:
            spans.append([end - weight, end])

    def stop(self) -> None:
        self._stopped.set()
        join_sampler(self)

    def summary(self) -> dict:
        """Shares of the loop's sampled time by kind of work, and the busiest functions
        (shares of all of it, idle included): what the loop's time went to. Read from
        copies (dict.copy runs in C, under the GIL: whole): a sampler still running, as one
        a throttled node's stop waited on in vain, adds functions while this reads, and
        iterating the live dict then raised, losing the node's whole result."""
        kinds, functions = Counter(dict.copy(self.kinds)), Counter(dict.copy(self.functions))
        total = sum(kinds.values())
        if not total:
            return {"samples": 0}
        return {"samples": self.samples, "every_ms": round(self.every_s * 1000, 3),
                "own_cpu_ms": round(self.cpu_ns / 1e6, 1), "sampled_ms": round(total / 1e6, 1),
                "kinds": {k: round(n / total, 4) for k, n in kinds.most_common()},
                "top": [[f, round(n / total, 4)] for f, n in functions.most_common(self.top)]}


def _selecting(frame: FrameType | None) -> bool:
    """Whether the loop thread waits in its selector (idle), not runs its own work."""
    while frame is not None:
        if frame.f_code.co_name in ("select", "poll", "epoll") and \
                frame.f_code.co_filename.endswith("selectors.py"):
            return True
        frame = frame.f_back
    return False


def busy_line(node: str, profile: dict, shown: int = 3) -> str:
    """`n1's loop (profiled 50/s): idle (waiting in select) 63%, mqprobe's node 18%, ...;
    busiest: asyncio/selector_events.py in write 18%, mqprobe/pieces/node.py in _stall 17%`, for a
    verdict's evidence; '' if unsampled."""
    if not profile.get("samples"):
        return ""
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in list(profile["kinds"].items())[:shown])
    top = profile.get("top") or []
    busiest = ("; busiest: " + ", ".join(f"{f} {share:.0%}" for f, share in top[:2])) if top else ""
    rate = round(1000 / profile["every_ms"]) if profile.get("every_ms") else "?"
    return f"{node}'s loop (profiled {rate}/s): {kinds}{busiest}"

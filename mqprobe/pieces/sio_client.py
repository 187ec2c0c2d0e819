"""The socket.io client the swarm's members speak, as functions of a URL: a server's
preflight (which engine.io version it speaks, or why it cannot be joined, in one sentence),
a member's handshake and join, the engine.io and socket.io packet types, and the backoff of
a member coming back. Two generations:

- engine.io 4 / socket.io 5 (socket.io 3 and 4, python-socketio 5): the client sends `40`
  and waits for `40{"sid":...}` before its join; the server pings, the client pongs.
- engine.io 3 / socket.io 4 (socket.io 2, netty-socketio 1.x): the server connects the
  default namespace itself (a bare `40`); the client must ping every pingInterval, or the
  server drops it after pingInterval + pingTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from dataclasses import dataclass

from mqprobe.pieces.websocket import ConnectionClosed, UpgradeRefused, WebSocket


class HandshakeError(ConnectionError):
    """A server could not be joined; the message is one sentence naming it and why."""


class VersionRefused(HandshakeError):
    """The server said it does not speak the engine.io version asked for."""


@dataclass(frozen=True)


class Protocol:
    """What one server speaks, as its preflight handshake found it."""

    eio: int  # 3 or 4
    ping_interval_s: float = 25.0  # engine.io 3: how often the client must ping

    @property
    def resource(self) -> str:
        return f"/socket.io/?EIO={self.eio}&transport=websocket"


# The text frames the swarm reads and writes begin with an engine.io packet type (python-
# engineio's packet.py: OPEN 0, CLOSE 1, PING 2, PONG 3, MESSAGE 4); a MESSAGE carries a
# socket.io packet, its type next (python-socketio's packet.py: CONNECT 0, DISCONNECT 1,
# EVENT 2, ACK 3, CONNECT_ERROR 4).
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG = "0", "1", "2", "3"
SIO_CONNECT, SIO_DISCONNECT, SIO_EVENT, SIO_ACK, SIO_CONNECT_ERROR = "40", "41", "42", "43", "44"

# Reconnecting: the first retry after about RECONNECT_FIRST_S, doubling to RECONNECT_MAX_S,
# each delay drawn from its upper half so thousands of members do not return in step.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 8.0


async def preflight(url: str, asked_eio: int | None, timeout_s: float) -> Protocol | str:
    """One handshake with a server before its members: the protocol it speaks, or why
    it cannot be joined (one sentence)."""
    tries = (asked_eio,) if asked_eio else (4, 3)
    reason = ""
    for eio in tries:
        try:
            async with asyncio.timeout(timeout_s):
                return await _probe(url, eio, asked_eio)
        except Exception as exc:
            reason = reason or why_failed(exc, url, eio, asked_eio, timeout_s)
            if isinstance(exc, VersionRefused | UpgradeRefused):
                continue  # it may speak only the other version
            return reason
    return reason


async def _probe(url: str, eio: int, asked_eio: int | None) -> Protocol:
    ws = await WebSocket.connect(url, Protocol(eio).resource)
    try:
        try:
            opening = await ws.receive()
        except ConnectionClosed:
            if refusal := await _refusal(url, eio):
                raise VersionRefused(f"{url} refuses engine.io {eio} ({refusal})"
                                     + (": leave --eio out" if asked_eio else "")
                                     ) from None
            raise
        interval = _open_packet(opening, url)
        if eio == 4:
            ws.send_text(SIO_CONNECT)
        reply = await ws.receive()
        if reply == SIO_CONNECT:  # an engine.io 3 server connects the default namespace by itself
            if asked_eio == 4:
                raise HandshakeError(f"{url} speaks socket.io 2 (engine.io 3): pass --eio 3 "
                                     "or leave --eio out")
            return Protocol(3, interval)
        _connect_reply(reply, url)
        if eio == 3:
            raise HandshakeError(f"{url} did not connect the socket.io namespace by itself, "
                                 "as engine.io 3 servers do: pass --eio 4 or leave --eio out")
        return Protocol(4, interval)
    finally:
        ws.close()


def why_failed(exc: BaseException, url: str, eio: int, asked_eio: int | None,
               timeout_s: float) -> str:
    """Why a handshake failed, in one sentence that names the server."""
    if isinstance(exc, HandshakeError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return (f"{url} did not finish the socket.io handshake within "
                f"{timeout_s:g} s")
    if isinstance(exc, UpgradeRefused):
        hint = (" (or one that refuses this engine.io version: leave --eio out)"
                if asked_eio else "")
        return (f"{url} answered HTTP {exc.status} to a socket.io websocket (engine.io {eio}): "
                f"is it a socket.io server, on the default path /socket.io/{hint}?")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {url}: connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot connect to {url}: {exc.strerror}"
    if isinstance(exc, ConnectionClosed | ConnectionResetError | BrokenPipeError):
        return f"{url} closed the connection during the socket.io handshake"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {url}: {exc.strerror}"
    return f"{url}: {exc}" if isinstance(exc, ConnectionError) else \
        f"{url}: {type(exc).__name__}: {exc}"


async def handshake(url: str, protocol: Protocol, group: str, kernel_stamps: bool) -> WebSocket:
    """Open, connect and send the join of one member of `group`, in the server's protocol."""
    ws = await WebSocket.connect(url, protocol.resource, kernel_stamps)
    try:
        _open_packet(await ws.receive(), url)
        if protocol.eio == 4:
            ws.send_text(SIO_CONNECT)
        # socket.io 4 closes a connection that sends events before its connect reply
        _connect_reply(await ws.receive(), url)
        ws.send_text(f'{SIO_EVENT}0["join",{{"group":"{group}"}}]')  # ack id 0
    except BaseException:
        ws.close()
        raise
    return ws


def _open_packet(frame: str, url: str) -> float:
    """The engine.io open packet (`0{...}`); returns its pingInterval in seconds."""
    if not frame.startswith(EIO_OPEN):
        raise HandshakeError(f"{url} sent no engine.io open packet ({frame[:80]!r})")
    try:
        return float(json.loads(frame[1:]).get("pingInterval", 25000)) / 1000
    except (ValueError, TypeError, AttributeError):
        raise HandshakeError(f"{url} sent an engine.io open packet that is not JSON") from None


def _connect_reply(frame: str, url: str) -> None:
    """The server's reply to the namespace connect: `40...`, anything else is refused."""
    if not frame.startswith(SIO_CONNECT):
        refused = frame.startswith(SIO_CONNECT_ERROR)
        raise HandshakeError(f"{url} {'refused' if refused else 'did not accept'} the socket.io "
                             f"connect ({frame[:80]!r})")


async def _refusal(url: str, eio: int) -> str:
    """What a server says to a plain HTTP (polling) handshake in engine.io `eio` when its
    websocket gave no open packet: engine.io servers name a version they refuse (socket.io
    4 writes its HTTP 400 into the upgraded socket, where a websocket client cannot read it)."""
    import aiohttp

    with contextlib.suppress(Exception):
        async with asyncio.timeout(5), aiohttp.ClientSession() as session:
            async with session.get(
                    url.rstrip("/") + f"/socket.io/?EIO={eio}&transport=polling") as response:
                if response.status >= 400:
                    text = (await response.text())[:200]
                    with contextlib.suppress(ValueError, AttributeError):
                        text = json.loads(text).get("message", text)
                    return f"HTTP {response.status}: {text}"
    return ""


def backoff(attempt: int) -> float:
    """Seconds before reconnect attempt n: exponential, capped, drawn from its upper half."""
    delay = min(RECONNECT_MAX_S, RECONNECT_FIRST_S * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)

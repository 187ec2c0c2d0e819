"""Nothing a run declares outlives it: what a run declared is removed by name, and what
runs that died left behind (named mqprobe.*) is found and removed by `mqprobe cleanup`."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from mqprobe.broker.connect import BrokerError, connect_problem, management_get, one_line, redact_url
from mqprobe.model import AmqpEntity


async def remove_declared(amqp_url: str, exchanges: list[str], queues: list[str],
                          timeout: float = 3.0, if_unused: bool = False) -> dict:
    """Delete what a run declared on the broker (some of it outlives its users: python-
    socketio's manager declares a permanent exchange), over a connection of its own."""
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=timeout)
    except Exception:
        return {"removed": [], "left": queues + exchanges}
    try:
        return await delete_declared(connection, exchanges, queues, timeout, if_unused)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 3)


async def delete_declared(connection, exchanges: Sequence[str], queues: Sequence[str] = (),
                          timeout: float = 3.0, if_unused: bool = False) -> dict:
    """Delete queues, then exchanges, in order, on an open connection. What is already gone
    is fine; returns what was removed and what could not be, so a result says what is
    left. With `if_unused`, a queue someone consumes or an exchange still bound is left."""
    removed, left = [], []
    try:
        channel = await connection.channel()
        for kind, names in ((AmqpEntity.QUEUE, queues), (AmqpEntity.EXCHANGE, exchanges)):
            for name in names:
                try:
                    if kind == AmqpEntity.QUEUE:
                        await asyncio.wait_for(
                            channel.queue_delete(name, if_unused=if_unused), timeout)
                    else:
                        await asyncio.wait_for(
                            channel.exchange_delete(name, if_unused=if_unused), timeout)
                    removed.append(name)
                except Exception as exc:
                    if "NOT_FOUND" in str(exc):  # gone already (auto-delete): fine
                        removed.append(name)
                    else:
                        left.append(name)
                    if channel.is_closed:
                        channel = await connection.channel()
    except Exception:
        left += [n for n in [*queues, *exchanges] if n not in removed and n not in left]
    return {"removed": removed, "left": left}


OUR_PREFIX = "mqprobe."  # every queue and exchange mqprobe declares is named so


@dataclass(frozen=True)
class Leftover:
    """A queue or exchange of mqprobe's on a broker, and whether anything still uses it."""

    kind: AmqpEntity
    name: str
    in_use: bool
    detail: str


async def leftovers(amqp_url: str, management_url: str) -> list[Leftover]:
    """What mqprobe left on the broker's virtual host: the management API lists the names
    (AMQP cannot), passive declares count each queue's consumers exactly (the API's
    statistics lag by seconds). A queue is in use while something consumes it; an exchange
    while it is bound to a queue in use (the rest goes with the queues it feeds)."""
    path = urllib.parse.urlsplit(amqp_url).path
    vhost = urllib.parse.quote(urllib.parse.unquote(path[1:]) if len(path) > 1 else "/", safe="")
    try:
        queues = management_get(management_url, f"/api/queues/{vhost}?columns=name")
        exchanges = management_get(management_url, f"/api/exchanges/{vhost}?columns=name,type")
        bindings = management_get(management_url, f"/api/bindings/{vhost}")
    except urllib.error.HTTPError as exc:
        raise BrokerError(f"the management API at {redact_url(management_url)} answered "
                          f"{exc.code} {exc.reason}: it lists what is left; check its "
                          "user's rights (the monitoring tag) or give --management-url") from None
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"the management API at {redact_url(management_url)} did not answer "
            f"({one_line(exc)}): listing what is left needs it; enable it with "
            "`rabbitmq-plugins enable rabbitmq_management` or give --management-url") from None
    ours = [q["name"] for q in queues if q["name"].startswith(OUR_PREFIX)]
    found = [Leftover(AmqpEntity.QUEUE, name, consumers > 0,
                      f"{consumers} consumer{'s' * (consumers != 1)}, {messages} messages")
             for name, (consumers, messages) in (await _queue_counts(amqp_url, ours)).items()]
    kept = {q.name for q in found if q.in_use}
    for exchange in exchanges:
        name = exchange["name"]
        if not name.startswith(OUR_PREFIX):
            continue
        targets = [b["destination"] for b in bindings if b.get("source") == name]
        held = [t for t in targets if t in kept or t not in ours]
        found.append(Leftover(AmqpEntity.EXCHANGE, name, bool(held),
                              f"{exchange.get('type', '')}, {len(targets)} "
                              f"binding{'s' * (len(targets) != 1)}"))
    return found


async def _queue_counts(amqp_url: str, names: list[str]) -> dict[str, tuple[int, int]]:
    """(consumers, messages) of each queue that still exists."""
    import aio_pika

    try:
        connection = await aio_pika.connect(amqp_url, timeout=5)
    except Exception as exc:
        raise connect_problem(exc, amqp_url) from None
    counts: dict[str, tuple[int, int]] = {}
    try:
        channel = await connection.channel()
        for name in names:
            try:
                queue = await asyncio.wait_for(channel.declare_queue(name, passive=True), 5)
            except Exception:  # gone meanwhile: the channel closed with it
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            counts[name] = (result.consumer_count or 0, result.message_count or 0)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 3)
    return counts


async def remove_leftovers(amqp_url: str, found: list[Leftover]) -> dict:
    """Delete what nothing uses, queues first (their bindings go with them); what someone
    started using meanwhile is left (if-unused deletes), and said so."""
    unused = [f for f in found if not f.in_use]
    return await remove_declared(amqp_url, [f.name for f in unused if f.kind == AmqpEntity.EXCHANGE],
                                 [f.name for f in unused if f.kind == AmqpEntity.QUEUE], if_unused=True)



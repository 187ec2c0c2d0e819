"""A small, real socket.io + RabbitMQ group chat, with mqprobe embedded (lines marked # mqprobe).

Clients `join` a group and `say` something; every node publishes what it hears to a topic
exchange (routing key group.<id>) and emits what it consumes to the group's room. Run two
and they chat across nodes:

    .venv/bin/mqprobe broker up                       # or pass --amqp-url
    .venv/bin/python examples/chat_server.py --port 8080 --node chat-1 &
    .venv/bin/python examples/chat_server.py --port 8081 --node chat-2 &

Probe it: follow group 7 hop by hop, with 2 probe messages a second,

    .venv/bin/mqprobe trace --group 7 --socketio-url http://127.0.0.1:8080 \\
        --exchange chat.groups --publish 2 --duration 10

or load it: clients on both nodes and the standard publisher (its exchange is
<prefix>groups, so --prefix chat. reaches this server's chat.groups),

    .venv/bin/mqprobe swarm --node-urls http://127.0.0.1:8080,http://127.0.0.1:8081 \\
        --group-sizes 50,50 &
    .venv/bin/mqprobe publish --prefix chat. --groups 1,2 --rate 10 --duration 10

`GET /mqprobe` on a node shows what its tracer counted (traced, untraced and why, fan-out);
`GET /metrics` exports per-hop and per-group latency in the Prometheus text format, which
`mqprobe top` shows live, and `GET /metrics/intervals` the node's pauses, loop CPU, link
and queue, which `mqprobe trace --metrics-url` judges a late group with:

    .venv/bin/mqprobe trace --group 7 --socketio-url http://127.0.0.1:8080 \\
        --exchange chat.groups --publish 2 --duration 10 \\
        --metrics-url http://127.0.0.1:8080/metrics,http://127.0.0.1:8081/metrics

`--stall 200` blocks a node's loop 200 ms once a second in its handler: a fault to find.
`mqprobe top` shows the metrics live:

    .venv/bin/mqprobe top --metrics-url http://127.0.0.1:8080/metrics,http://127.0.0.1:8081/metrics

`--sample 0.01` traces one message in a hundred (what a production node would leave on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import aio_pika
import socketio
from aiohttp import web

from mqprobe.broker import ManagedBroker
from mqprobe.embed import Tracer  # mqprobe


async def serve(amqp_url: str, host: str, port: int, node: str, exchange_name: str,
                sample: float = 1.0, stall_ms: float = 0.0) -> None:
    tracer = Tracer(node=node, sample=sample)  # mqprobe
    tracer.watch_pauses()  # mqprobe: GC pauses and loop stalls, exported too
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    app.router.add_get("/mqprobe", lambda request: web.json_response(tracer.stats()))  # mqprobe
    tracer.mount_metrics(app)  # mqprobe: GET /metrics

    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)
    exchange = await channel.declare_exchange(exchange_name, "topic", auto_delete=True)
    queue = await channel.declare_queue(f"{exchange_name}.{node}", auto_delete=True)
    await queue.bind(exchange, routing_key="group.*")
    # mqprobe: its link's round trips and its queue, served beside /metrics for `trace`
    tracer.watch_link(connection, queue=queue.name)
    consumer = tracer.consumer(queue.name, prefetch=100)  # mqprobe: full window, busy handler
    stalled_at = [0.0]

    @sio.on("join")
    async def join(sid: str, data: dict) -> bool:
        await sio.enter_room(sid, f"group.{data['group']}")
        return True

    @sio.on("say")
    async def say(sid: str, data: dict) -> None:
        group = str(data["group"])
        body = json.dumps({"text": str(data.get("text", ""))}).encode()
        headers = tracer.publish_headers(group)  # mqprobe
        await exchange.publish(aio_pika.Message(body, headers=headers), f"group.{group}")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        consumer.arrived()  # mqprobe
        consumer.busy.enter()  # mqprobe
        try:
            await handle(message)
        finally:
            consumer.busy.leave()  # mqprobe
            consumer.acked()  # mqprobe (acked as message.process() ends)

    async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            trace = tracer.consumed(message.headers)  # mqprobe
            group = (message.routing_key or "").removeprefix("group.")
            if stall_ms and time.monotonic() - stalled_at[0] >= 1.0:  # --stall: a demo fault
                stalled_at[0] = time.monotonic()
                time.sleep(stall_ms / 1000)  # a synchronous call in the handler blocks the loop
            try:
                text = json.loads(message.body)["text"]
            except (ValueError, KeyError, TypeError):
                text = message.body.decode("utf-8", "replace")
            await tracer.emit(sio, "message", {"group": group, "text": text},  # mqprobe
                              room=f"group.{group}", trace=trace)

    await queue.consume(on_message)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "ready", "node": node, "port": bound}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await connection.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="A group-chat node with mqprobe embedded.")
    parser.add_argument("--amqp-url", default=os.environ.get("MQPROBE_AMQP_URL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--node", default="chat-1")
    parser.add_argument("--exchange", default="chat.groups")
    parser.add_argument("--sample", type=float, default=1.0,
                        help="Share of messages traced (by trace id), 0..1.")
    parser.add_argument("--stall", type=float, default=0.0, metavar="MS",
                        help="A fault to find: block the event loop this many ms in the "
                        "handler, once a second (mqprobe trace names it).")
    args = parser.parse_args()
    url = args.amqp_url
    if not url:
        state = ManagedBroker().running_state()
        if state is None:
            sys.exit("chat_server: no broker: run `mqprobe broker up` or pass --amqp-url")
        url = state.amqp_url
    try:
        asyncio.run(serve(url, args.host, args.port, args.node, args.exchange, args.sample,
                          args.stall))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""A python-socketio node on AsyncAioPikaManager, with no mqprobe code: what a deployment
that never heard of mqprobe runs. Clients join a group's room with `join` {"group": id}
and `say` {"group": id, "text": ...} to it, through the manager (so to every node).

    python socketio_manager.py PORT AMQP_URL [STALL_MS]

With STALL_MS its event loop is blocked that long once a second (a synchronous call in
the server): a fault a trace from outside must find.
"""

import asyncio
import json
import sys
import time

import socketio
from aiohttp import web


async def stall(ms: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        time.sleep(ms / 1000)


async def main(port: int, amqp_url: str, stall_ms: float = 0.0) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp",
                               client_manager=socketio.AsyncAioPikaManager(amqp_url))
    app = web.Application()
    sio.attach(app)

    @sio.on("join")
    async def join(sid: str, data: dict) -> bool:
        await sio.enter_room(sid, f"group.{data['group']}")
        return True

    @sio.on("say")
    async def say(sid: str, data: dict) -> None:
        await sio.emit("message", {"text": data["text"]}, room=f"group.{data['group']}")

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    # as a deployment that has had clients: its manager consumes before the first connection
    sio.manager_initialized = True
    sio.manager.initialize()
    await asyncio.sleep(1.0)
    if stall_ms:
        stalling = asyncio.get_running_loop().create_task(stall(stall_ms))  # noqa: F841
    print(json.dumps({"event": "ready", "port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if sys.argv[3:] else 0.0))

"""What a stream consumer's restart costs, by where it starts reading again.

    .venv/bin/python benchmarks/stream_restart.py [--history 100000] [--rate 600] [--gap 1.0]

A node reading a stream (`queue_type = "stream"`) that restarts must say where to start:
`x-stream-offset` next (mqprobe's default), last (the last chunk), first (everything the
stream holds) or a number (the offset after the last one it handled, which each delivery
carries in its `x-stream-offset` header). On the managed broker: a stream with `--history`
1 KB messages in it, a publisher at `--rate` msg/s, a consumer that reads live, is cancelled,
and `--gap` seconds later consumes again from each start. For each: the time from
basic.consume to the first delivery, the messages delivered again (replayed), those
published in the gap and not delivered within the read (missed, or not reached yet), and
the time until it reads live again (a delivery less than 50 ms after its publish).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass

import aio_pika

from mqprobe.broker import broker_for

STREAM = "mqprobe.bench.stream-restart"
BODY = b"x" * 1024
LIVE_MS = 50.0  # a delivery this soon after its publish: the consumer reads live again
PREFETCH = 100


@dataclass(frozen=True)
class Restart:
    start: str
    first_delivery_ms: float
    replayed: int
    missed: int
    live_after_ms: float | None
    delivered_until_live: int


class Publisher:
    """Sequenced messages at a steady rate, each stamped with its publish time."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel, self.seq = channel, 0

    async def publish(self) -> None:
        message = aio_pika.Message(BODY, headers={"seq": self.seq, "t_pub": time.time_ns()})
        self.seq += 1
        await self.channel.default_exchange.publish(message, routing_key=STREAM)

    async def fill(self, count: int) -> None:
        for start in range(0, count, 1000):
            await asyncio.gather(*(self.publish() for _ in range(min(1000, count - start))))

    async def steady(self, rate: float, stop: asyncio.Event) -> None:
        period, due = 1.0 / rate, time.monotonic()
        while not stop.is_set():
            await self.publish()
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))


class Reader:
    """One consumer from one start, noting what it is handed."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.first_ns = 0
        self.live_ns = 0
        self.until_live = 0
        self.last_offset = -1

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.time_ns()
        headers = message.headers or {}
        self.seqs.append(int(headers["seq"]))
        self.last_offset = int(headers.get("x-stream-offset", self.last_offset))
        if not self.first_ns:
            self.first_ns = now
        if not self.live_ns:
            self.until_live += 1
            if (now - int(headers["t_pub"])) / 1e6 < LIVE_MS:
                self.live_ns = now
        await message.ack()


async def read(channel, start: str | int, seconds: float) -> tuple[Reader, int]:
    """Consume from `start` for `seconds`; (what it read, when basic.consume was sent)."""
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(STREAM, ensure=False)
    reader = Reader()
    asked = time.time_ns()
    tag = await queue.consume(reader.on_message, arguments={"x-stream-offset": start})
    await asyncio.sleep(seconds)
    await queue.cancel(tag)
    return reader, asked


async def restart_from(connection, publisher: Publisher, start: str, gap: float,
                       read_s: float) -> Restart:
    """Read live, stop, wait `gap`, read again from `start`; what the restart cost."""
    channel = await connection.channel()
    before, _ = await read(channel, "next", 1.0)
    await channel.close()
    seen_until = max(before.seqs) if before.seqs else -1
    await asyncio.sleep(gap)
    gap_end = publisher.seq  # every seq below this was published before the new consume
    offset: str | int = before.last_offset + 1 if start == "stored" else start
    channel = await connection.channel()
    after, asked = await read(channel, offset, read_s)
    await channel.close()
    delivered = set(after.seqs)
    return Restart(
        start=start if start != "stored" else "stored offset + 1",
        first_delivery_ms=(after.first_ns - asked) / 1e6 if after.first_ns else float("nan"),
        replayed=sum(1 for seq in after.seqs if seq <= seen_until),
        missed=sum(1 for seq in range(seen_until + 1, gap_end) if seq not in delivered),
        live_after_ms=(after.live_ns - asked) / 1e6 if after.live_ns else None,
        delivered_until_live=after.until_live)


async def main(history: int, rate: float, gap: float, read_s: float) -> None:
    with broker_for(None) as (url, _management, _prometheus):
        connection = await aio_pika.connect_robust(url)
        async with connection:
            setup = await connection.channel()
            with contextlib.suppress(Exception):
                await setup.queue_delete(STREAM)
            await setup.declare_queue(STREAM, durable=True,
                                      arguments={"x-queue-type": "stream"})
            publisher = Publisher(await connection.channel(publisher_confirms=False))
            started = time.monotonic()
            await publisher.fill(history)
            print(f"history: {history:,} messages of 1 KB in {time.monotonic() - started:.1f} s; "
                  f"then {rate:g} msg/s; restart after a {gap:g} s gap\n")
            stop = asyncio.Event()
            steady = asyncio.create_task(publisher.steady(rate, stop))
            rows = [await restart_from(connection, publisher, start, gap, read_s)
                    for start in ("next", "last", "stored", "first")]
            stop.set()
            await steady
            await setup.queue_delete(STREAM)
    print(f"| start | first delivery after consume (ms) | replayed | published in the gap, not "
          f"delivered in {read_s:g} s | reads live after (ms) | deliveries until live |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        live = f"{row.live_after_ms:,.0f}" if row.live_after_ms is not None else f"> {read_s:g} s"
        print(f"| {row.start} | {row.first_delivery_ms:.1f} | {row.replayed:,} | {row.missed:,} "
              f"| {live} | {row.delivered_until_live:,} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=600.0)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--read", type=float, default=10.0, help="seconds read after restart")
    args = parser.parse_args()
    asyncio.run(main(args.history, args.rate, args.gap, args.read))

"""The quota cgroups the throttle fault makes: a node that ended without removing its own
leaves it to the next quota made, never to the machine."""

from __future__ import annotations

import os

import pytest

from mqprobe.errors import InputError
from mqprobe.pieces.inject import _remove_stale, parse_injections


def test_a_quota_cgroup_whose_node_is_gone_is_removed_and_a_live_ones_is_kept(tmp_path):
    gone, alive = f"mqprobe-n1-{2**22 + 7}", f"mqprobe-n2-{os.getpid()}"
    for name in (gone, alive, "someone-elses-9999999", "mqprobe-n3-notapid"):
        (tmp_path / name).mkdir()
    _remove_stale(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive, "someone-elses-9999999", "mqprobe-n3-notapid"])


@pytest.mark.integration  # sockets of its own, on loopback
def test_a_jittered_link_keeps_every_byte_in_order_and_adds_its_delay():
    """link-delay=10ms+20ms: every chunk held 10-30 ms, yet in the order it was sent (a
    proxy that scheduled each chunk on a timer of its own once sent RabbitMQ connection.open
    before tune-ok: timers due at the same moment keep no order)."""
    import asyncio
    import time

    from mqprobe.pieces.inject import DelayingProxy

    async def main() -> tuple[bytes, float]:
        received = bytearray()
        done = asyncio.Event()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                received.extend(chunk)
                if len(received) >= 3000:
                    done.set()
            writer.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        proxy = DelayingProxy("127.0.0.1", server.sockets[0].getsockname()[1], 0.01, 0.02)
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.start())
        began = time.monotonic()
        for i in range(1000):  # 1,000 writes of 3 bytes, a chunk each as often as not
            writer.write(f"{i % 1000:03d}".encode())
            if i % 3 == 0:
                await asyncio.sleep(0.0005)
        await asyncio.wait_for(done.wait(), 10)
        took = time.monotonic() - began
        writer.close()
        proxy.stop()
        server.close()
        return bytes(received), took

    received, took = asyncio.run(main())
    assert received == b"".join(f"{i:03d}".encode() for i in range(1000))
    assert took >= 0.01  # held at least the delay


def test_churn_and_a_client_stall_ask_for_a_load_process():
    faults = parse_injections(["churn=200/s", "client-stall=2500ms/4s"])
    assert (faults.churn_per_s, faults.client_stall_s, faults.client_stall_every_s) == (
        200.0, 2.5, 4.0)
    assert faults.load and not parse_injections(["stall=200ms/2s"]).load


@pytest.mark.parametrize("item", ["churn=200", "churn=0/s", "churn=fast/s",
                                  "client-stall=3s", "client-stall=4s/3s"])
def test_a_malformed_churn_or_client_stall_is_one_sentence(item):
    with pytest.raises(InputError, match=f"--inject {item.partition('=')[0]}"):
        parse_injections([item])

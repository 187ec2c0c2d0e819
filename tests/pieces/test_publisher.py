"""The publisher run by hand on a real broker."""

from mqprobe.broker import management_get

from ..conftest import run_cli


def test_publish_by_hand_leaves_no_unused_exchange(broker):
    result = run_cli("publish", "--prefix", "typo.", "--groups", "1,2", "--rate", "4",
                     "--duration", "0.5", amqp_url=broker.amqp_url)
    assert result.returncode == 0, result.stderr
    exchanges = [e["name"] for e in management_get(broker.management_url, "/api/exchanges")]
    assert not [name for name in exchanges if name.startswith("typo.")], exchanges


def _declare_exchange(url: str, name: str, **options) -> None:
    import asyncio

    import aio_pika

    async def declare() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        await channel.declare_exchange(name, "topic", **options)
        await connection.close()

    asyncio.run(declare())


def test_publish_into_an_existing_exchange_as_it_is(vhost_url, tmp_path):
    import json

    from ..broker.test_broker import _exists

    _declare_exchange(vhost_url, "theirs.durable", durable=True)
    out = tmp_path / "p.json"
    result = run_cli("publish", "--exchange", "theirs.durable", "--groups", "1,2", "--rate",
                     "10", "--duration", "0.5", "--json", str(out), amqp_url=vhost_url)
    assert result.returncode == 0, result.stderr
    published = json.loads(out.read_text())
    assert published["confirmed"] == published["sent"] == 10 and published["errors"] == 0
    assert _exists(vhost_url, "exchange", "theirs.durable")  # theirs: never deleted
    assert not _exists(vhost_url, "exchange", "mqprobe.groups")  # nothing of ours made


def test_a_missing_or_conflicting_exchange_is_one_sentence(vhost_url):
    missing = run_cli("publish", "--exchange", "nope", "--duration", "0.5", amqp_url=vhost_url)
    assert missing.returncode == 1
    assert "exchange 'nope' does not exist" in missing.stderr
    _declare_exchange(vhost_url, "mqprobe.groups", durable=True)  # what single-topic declares
    clash = run_cli("publish", "--duration", "0.5", amqp_url=vhost_url)
    assert clash.returncode == 1
    assert "already exists with other settings" in clash.stderr
    assert "--exchange mqprobe.groups" in clash.stderr
    for result in (missing, clash):
        assert "Traceback" not in result.stderr and "ERROR" not in result.stderr


def test_the_managers_first_emits_at_once_are_all_published(monkeypatch):
    """python-socketio's manager connects on its first emit; emits that come meanwhile
    publish on an exchange not yet there and are dropped ('giving up'): seq 0 of 2 of 6
    groups at 100 msg/s. The transport connects before measuring. No broker: the manager's
    connection steps are AsyncMocks that yield, as real ones do."""
    import asyncio
    from unittest.mock import AsyncMock, MagicMock

    import socketio

    from mqprobe.broker.topology import resolve
    from mqprobe.pieces.publisher import ManagerTransport, PublishConfig
    from mqprobe.stamps import PublishStamp

    exchange = MagicMock()
    exchange.publish = AsyncMock()

    def yielding(value):
        async def step(*_args):
            await asyncio.sleep(0.02)  # a round trip to the broker
            return value
        return AsyncMock(side_effect=step)

    monkeypatch.setattr(socketio.AsyncAioPikaManager, "_connection", yielding(MagicMock()))
    monkeypatch.setattr(socketio.AsyncAioPikaManager, "_channel", yielding(MagicMock()))
    monkeypatch.setattr(socketio.AsyncAioPikaManager, "_exchange", yielding(exchange))
    transport = ManagerTransport(PublishConfig(
        amqp_url="amqp://u:p@127.0.0.1:1/", topology=resolve("socketio-manager"),
        groups=[str(g) for g in range(1, 7)], rate=100, size=10, duration_s=1))

    async def first_emits() -> None:  # on the schedule: one group's seq 0 every 8 ms
        await transport.connect()
        sends = []
        for g in range(1, 7):
            stamp = PublishStamp("a" * 32, str(g), 0, 1, 2)
            sends.append(asyncio.ensure_future(transport.send(stamp, b"x" * 10)))
            await asyncio.sleep(0.008)
        await asyncio.gather(*sends)

    asyncio.run(first_emits())
    assert exchange.publish.await_count == 6

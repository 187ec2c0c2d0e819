"""The reference node on a real broker: malformed headers pass untraced and are counted."""

import asyncio

import aio_pika

from mqprobe.broker.topology import resolve
from mqprobe.pieces.node import Node, NodeConfig
from mqprobe.pieces.swarm import Swarm, SwarmConfig
from mqprobe.stamps import AMQP_HEADER, PublishStamp, encode_amqp_headers, new_trace_id, now_ns


async def _scenario(amqp_url: str) -> tuple[Node, Swarm]:
    topology = resolve("single-topic")
    node = Node(NodeConfig(node_id="n1", amqp_url=amqp_url, topology=topology,
                           layout="per-node", groups=["1"], prefix="test.node.", port=0))
    await node.start()
    swarm = Swarm(SwarmConfig(node_urls=[f"http://127.0.0.1:{node.port}"], group_sizes={"1": 3}))
    await swarm.start()
    assert swarm.progress()["joined"] == 3
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("test.node.groups", "topic", auto_delete=True)
    foreign = [{AMQP_HEADER: "9;1;0;1;1"}, {AMQP_HEADER: "1;1;zero;1;1"}, {"x-other": "1"}, None]
    for headers in foreign:
        await exchange.publish(aio_pika.Message(b"foreign", headers=headers), "group.1")
    stamp = PublishStamp(new_trace_id(), "1", 0, now_ns(), now_ns())
    await exchange.publish(aio_pika.Message(b"ours", headers=encode_amqp_headers(stamp)), "group.1")
    for _ in range(100):
        if swarm.delivered == 3:
            break
        await asyncio.sleep(0.05)
    await connection.close()
    await swarm.stop()
    await node.stop()
    return node, swarm


def test_malformed_headers_are_counted_and_the_node_goes_on(broker):
    node, swarm = asyncio.run(_scenario(broker.amqp_url))
    assert node.tracer.untraced == 4
    assert node.stats.handled == 1
    assert swarm.delivered == 3 and swarm.untraced == 0


def test_a_node_declares_its_queues_as_the_topologys_queue_type(vhost_url, managed_broker):
    """Quorum and stream queues as RabbitMQ reports them (its management API); the node
    stopped, what it declared is deleted by name (they cannot auto-delete), as compare
    does. That they carry a run is tests/run/test_compare.py's."""
    import urllib.parse
    from dataclasses import replace

    from mqprobe.broker import management_get, remove_declared
    from mqprobe.broker.topology import QueueKnobs
    from mqprobe.model import QueueType

    state = managed_broker.running_state()
    vhost = urllib.parse.quote(vhost_url.rsplit("/", 1)[1], safe="")

    async def declared(queue_type: QueueType) -> dict:
        topology = resolve("per-group").with_queue_type(queue_type)
        if queue_type == QueueType.QUORUM:  # and its knobs, as RabbitMQ's arguments
            topology = replace(topology, queue=QueueKnobs(delivery_limit=3,
                                                          single_active_consumer=True))
        node = Node(NodeConfig(node_id="n1", amqp_url=vhost_url, topology=topology,
                               layout="per-group", groups=["1", "2"], prefix="test.qt.", port=0))
        await node.start()
        try:
            found = {q["name"]: q for q in management_get(
                state.management_url, f"/api/queues/{vhost}?columns=name,type,durable,"
                "auto_delete,arguments")}
        finally:
            await node.stop()
            await remove_declared(vhost_url, topology.exchanges("test.qt.", ["1", "2"]),
                                  node.queue_names)
        left = management_get(state.management_url, f"/api/queues/{vhost}?columns=name")
        assert not left, left
        return {name: found[name] for name in node.queue_names}

    for queue_type in (QueueType.QUORUM, QueueType.STREAM):
        queues = asyncio.run(declared(queue_type))
        assert sorted(queues) == ["test.qt.n1.g1", "test.qt.n1.g2"]
        for queue in queues.values():
            assert (queue["type"], queue["durable"], queue["auto_delete"]) == (
                queue_type.value, True, False), queue
            if queue_type == QueueType.QUORUM:
                assert queue["arguments"]["x-delivery-limit"] == 3, queue
                assert queue["arguments"]["x-single-active-consumer"] is True, queue


def test_a_throttled_node_leaves_its_quota_before_it_stops():
    """Shutting down is not the run's fault: under an 8% quota, a node's stop (samplers
    joined, the result built and written) once outlasted compare's wait and its figures
    were lost. It leaves the quota first, and only once."""
    from unittest.mock import AsyncMock

    order: list[str] = []

    class Quota:
        def remove(self) -> None:
            order.append("quota left")

    node = Node(NodeConfig(node_id="n1", amqp_url="amqp://u:p@127.0.0.1:1/",
                           topology=resolve("single-topic"), layout="per-node", groups=["1"]))
    node._quota = Quota()
    node.loop_lag.stop = lambda: order.append("loop monitor stopped")
    node.intake.stop = AsyncMock(side_effect=lambda: order.append("intake stopped"))
    node.result = lambda: order.append("result built") or {}
    asyncio.run(node.stop())
    assert order == ["quota left", "loop monitor stopped", "intake stopped", "result built"]

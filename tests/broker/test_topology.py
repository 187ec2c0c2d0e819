from pathlib import Path

import pytest

from mqprobe.broker.topology import TopologyError, available, load, resolve

SHIPPED = ("single-topic", "per-group", "fanout", "socketio-manager")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topologies_load(name):
    assert name in available()
    topology = resolve(name)
    assert topology.name == name
    assert topology.layouts


def test_exchange_per_group_and_routing():
    single, per_group = resolve("single-topic"), resolve("per-group")
    assert single.exchanges("p.", ["1", "2"]) == ["p.groups"]
    assert single.routing_key_for("7") == "group.7"
    assert per_group.exchanges("p.", ["1", "2"]) == ["p.group.1", "p.group.2"]


def test_socketio_manager_knobs_are_fixed():
    manager = resolve("socketio-manager")
    assert (manager.consumer.prefetch, manager.consumer.ack) == (1, "after")
    assert manager.layouts == ("per-node",)
    with pytest.raises(TopologyError, match="fixed"):
        manager.with_knobs(prefetch=10)


def test_knob_override_is_validated():
    assert resolve("fanout").with_knobs(prefetch=1).consumer.prefetch == 1
    with pytest.raises(TopologyError, match="consumer.ack"):
        resolve("fanout").with_knobs(ack="sometimes")


@pytest.mark.parametrize("text, field", [
    ('name = "x"\n[exchange]\ntype = "topic"\n[consumer]\nprefetch = "lots"\n', "consumer.prefetch"),
    ('name = "x"\n[consumer]\nprefetch = 0\n', "consumer.prefetch"),
    ('name = "x"\n[exchange]\ntype = "headers"\n', "exchange.type"),
    ('name = "x"\n[exchange]\ncolour = "red"\n', "exchange.colour"),
    ('[exchange]\ntype = "topic"\n', "name"),
    ('name = "x"\n[exchange]\nrouting_key = "group.{id}"\n', "routing_key"),
    # accepted once, then the node failed as "Event loop is closed" (issue 23)
    ('name = "x"\n[exchange]\nrouting_key = "group.{group.x}"\n', "routing_key"),
    ('name = "x"\n[exchange]\nbinding_key = "group.{group[0]}"\n', "binding_key"),
    ('name = "x"\n[exchange]\nname = "g.{group!r}"\n', "exchange.name"),
    ('name = "x"\n[exchange]\nrouting_key = "{group:>300}"\n', "routing_key"),
    ('name = "x"\n[exchange]\nrouting_key = "{group"\n', "routing_key"),
    ('name = "x"\nlayouts = ["per-host"]\n', "layouts"),
    ('name = "x"\n[exchange]\ntype = "fanout"\nfilter_locally = false\n', "filter_locally"),
    ('name = "x"\n[consumer\n', "not valid TOML"),
    ('name = "x"\nqueue_type = "mirrored"\n', "queue_type must be one of classic, quorum, stream"),
    ('name = "x"\nqueue_type = "stream"\n[consumer]\nack = "auto"\n', "a stream queue needs"),
    ('name = "x"\nmanager = "socketio"\nqueue_type = "quorum"\n', "queue_type and [queue] are fixed"),
    ('name = "x"\n[queue]\ndelivery_limit = 3\n', "queue.delivery_limit is a quorum queue's"),
    ('name = "x"\nqueue_type = "stream"\n[queue]\nstream_offset = "yesterday"\n',
     "queue.stream_offset must be one of next, first, last"),
    ('name = "x"\nqueue_type = "quorum"\n[queue]\ndelivery_limit = -1\n', "queue.delivery_limit"),
    ('name = "x"\n[queue]\nprefetch = 3\n', "queue.prefetch"),
])
def test_malformed_file_names_file_and_field(tmp_path: Path, text, field):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)


def test_unknown_name_lists_known_ones():
    with pytest.raises(TopologyError, match="single-topic"):
        resolve("no-such-topology")


def test_names_over_amqps_limit_are_named_before_anything_declares_them():
    topology = resolve("per-group")
    assert topology.names_problem("mqprobe.", ["1", "2"], "per-group", "n1") == ""
    problem = topology.names_problem("p" * 250, ["1"], "per-group", "n1")
    assert "RabbitMQ allows at most 255" in problem and "--prefix" in problem


def test_queue_types_are_declared_as_rabbitmq_needs_them():
    from mqprobe.model import QueueType

    topology = resolve("single-topic")
    assert topology.queue_arguments() == ({"auto_delete": True}, {})
    quorum = topology.with_queue_type(QueueType.QUORUM)
    assert quorum.name == "single-topic.quorum"
    assert quorum.queue_arguments() == ({"durable": True, "arguments": {"x-queue-type": "quorum"}}, {})
    stream = topology.with_queue_type(QueueType.STREAM)
    assert stream.queue_arguments()[1] == {"x-stream-offset": "next"}
    assert stream.to_json()["table"]["queue_type"] == "stream"
    assert type(stream).from_json(stream.to_json()) == stream  # what a piece is sent
    with pytest.raises(TopologyError, match="a stream queue needs"):
        stream.with_knobs(ack="auto")


def test_queue_knobs_become_rabbitmqs_arguments(tmp_path: Path):
    path = tmp_path / "q.toml"
    path.write_text('name = "q"\nqueue_type = "quorum"\n[queue]\ndelivery_limit = 5\n'
                    'single_active_consumer = true\n')
    declare, consume = load(path).queue_arguments()
    assert declare["arguments"] == {"x-queue-type": "quorum", "x-delivery-limit": 5,
                                    "x-single-active-consumer": True} and consume == {}
    path.write_text('name = "s"\nqueue_type = "stream"\n[queue]\nstream_offset = "first"\n')
    assert load(path).queue_arguments()[1] == {"x-stream-offset": "first"}
    assert load(path).describe_knobs()["queue_stream_offset"] == "first"

"""The publisher run by hand on a real broker."""

from mqprobe.broker import management_get

from .conftest import run_cli


def test_publish_by_hand_leaves_no_unused_exchange(broker):
    result = run_cli("publish", "--prefix", "typo.", "--groups", "1,2", "--rate", "4",
                     "--duration", "0.5", amqp_url=broker.amqp_url)
    assert result.returncode == 0, result.stderr
    exchanges = [e["name"] for e in management_get(broker.management_url, "/api/exchanges")]
    assert not [name for name in exchanges if name.startswith("typo.")], exchanges

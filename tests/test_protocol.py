"""The typed protocol between compare and its pieces: commands, specs, config documents, and
the piece runtime; no broker, no process."""

import asyncio
import json

import pytest

from mqprobe.broker.topology import available, resolve
from mqprobe.model import PieceRole
from mqprobe.pieces.inject import Faults
from mqprobe.pieces.node import NodeConfig
from mqprobe.pieces.process import Piece, PieceRuntime, RunError, serve
from mqprobe.pieces.publisher import PublishConfig
from mqprobe.pieces.swarm import SwarmConfig
from mqprobe.protocol import (
    CommandRefused,
    PieceSpec,
    Reset,
    SetClock,
    SpecError,
    Stop,
    command_line,
    from_document,
    parse_command,
    to_document,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("command", [Reset(), Stop(), SetClock(-5, {"n1": 250_000_000, "n2": 0})])
def test_every_command_reads_back_from_its_line(command):
    line = command_line(command)
    assert "\n" not in line and parse_command(line) == command


def test_a_bare_word_is_a_command_without_fields():
    assert parse_command("stop\n") == Stop() and parse_command("reset") == Reset()


@pytest.mark.parametrize("line, says", [
    ("dance", "unknown command 'dance'"),
    ('{"command": "clock"', "not a JSON command"),
    ('{"command": "clock", "publisher_ns": 0}', "missing 'nodes_ns'"),
    ('{"command": "clock", "publisher_ns": 1.5, "nodes_ns": {}}', "publisher_ns must be a whole"),
    ('{"command": "clock", "publisher_ns": 0, "nodes_ns": {"n1": "x"}}', "nodes_ns.n1 must be"),
    ('{"command": "reset", "now": true}', "unknown field 'now'"),
    ("[1]", "unknown command '\\[1\\]'"),
])
def test_a_malformed_command_is_refused_with_why(line, says):
    with pytest.raises(CommandRefused, match=says):
        parse_command(line)


def test_configs_travel_whole_and_read_back_equal_without_their_local_fields():
    topology = resolve("per-group").with_knobs(prefetch=7, ack="before")
    node = NodeConfig("n2", "amqp://user:secret@host/", topology, "per-group", ["1", "2"],
                      prefix="mqprobe.ab12.", port=0, faults=Faults(server_delay_s=0.05))
    doc = json.loads(json.dumps(to_document(node)))  # as it travels
    assert "amqp_url" not in doc and "secret" not in json.dumps(doc)
    assert from_document(NodeConfig, doc, "node", amqp_url=node.amqp_url) == node
    swarm = SwarmConfig(["http://127.0.0.1:5000"], {"1": 100, "2": 3}, 1, 2, eio=3, samples=9)
    assert from_document(SwarmConfig, json.loads(json.dumps(to_document(swarm))), "swarm") == swarm
    publisher = PublishConfig("amqp://x/", resolve("socketio-manager"), ["1"], 10.0, 64, 2.0)
    assert from_document(PublishConfig, to_document(publisher), "publisher",
                         amqp_url="amqp://x/") == publisher


@pytest.mark.parametrize("name", available())
def test_every_topology_reads_back_from_its_document(name):
    topology = resolve(name)
    assert type(topology).from_json(json.loads(json.dumps(topology.to_json()))) == topology


@pytest.mark.parametrize("change, says", [
    ({"port": "80"}, "port must be a whole number"),
    ({"groups": "1,2"}, "groups must be a list"),
    ({"faults": {"stall_s": "long"}}, "stall_s must be a number"),
    ({"topology": {"source": "x", "table": {"name": "x", "manager": "celery"}}}, "manager must be"),
    ({"shell": "rm -rf /"}, "unknown field 'shell'"),
    ({"amqp_url": "amqp://elsewhere/"}, "unknown field 'amqp_url'"),  # never from a document
])
def test_a_config_document_that_cannot_be_used_names_its_field(change, says):
    node = NodeConfig("n1", "", resolve("single-topic"), "per-node", ["1"])
    doc = {**to_document(node), **change}
    with pytest.raises(ValueError, match=says):
        from_document(NodeConfig, doc, "the node's config", amqp_url="amqp://x/")


def test_a_missing_field_is_named():
    with pytest.raises(SpecError, match="missing 'group_sizes'"):
        from_document(SwarmConfig, {"node_urls": ["http://x"]}, "the swarm's config")


@pytest.mark.parametrize("doc", [None, [], {"role": "broker", "config": {}}, {"role": "node"},
                                 {"role": "node", "config": []},
                                 {"role": "node", "config": {}, "argv": ["--json", "/x"]}])
def test_a_spec_is_a_known_role_and_one_config_object(doc):
    with pytest.raises(SpecError):
        PieceSpec.from_json(doc)


def test_a_spec_saved_loads_back(tmp_path):
    spec = PieceSpec(PieceRole.SWARM, to_document(SwarmConfig(["http://x"], {"1": 1})))
    assert PieceSpec.load(spec.save(tmp_path / "s.json")) == spec
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="is not JSON"):
        PieceSpec.load(tmp_path / "bad.json")


def test_piece_command_fails_the_run_on_a_refusal_and_on_silence():
    class Refuses(Piece):
        async def send(self, line: str) -> None:
            name = json.loads(line)["command"]
            self.record({"event": "refused", "command": name, "message": "not today"})

    class Silent(Piece):
        async def send(self, line: str) -> None:
            pass

    async def run() -> None:
        with pytest.raises(RunError, match="p1 could not apply 'clock': not today"):
            await Refuses("p1").command(SetClock(0, {}))
        with pytest.raises(RunError, match="p2 did not answer the command 'reset'"):
            await Silent("p2").command(Reset(), timeout=0.2)

    asyncio.run(run())


class Scripted(PieceRuntime):
    """A piece whose own work ends after a while, and which says what was called."""

    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start

    async def start(self) -> dict:
        self.calls.append("start")
        if self.fail_start:
            raise OSError("port taken")
        return {"port": 1}

    async def work(self) -> None:
        await asyncio.sleep(0.05)
        self.calls.append("worked")

    async def stop(self) -> dict:
        self.calls.append("stop")
        return {"done": True}

    async def close(self) -> None:
        self.calls.append("close")


def test_serve_runs_a_piece_through_its_life_and_always_closes_it(capsys):
    piece = Scripted()
    assert asyncio.run(serve(piece, control=False)) == {"done": True}
    assert piece.calls == ["start", "worked", "stop", "close"]
    assert json.loads(capsys.readouterr().out) == {"event": "ready", "port": 1}
    failing = Scripted(fail_start=True)
    with pytest.raises(OSError):
        asyncio.run(serve(failing, control=False))
    assert failing.calls == ["start", "close"]


def test_a_piece_refuses_commands_it_does_not_know():
    with pytest.raises(CommandRefused, match="knows no 'clock' command"):
        Scripted().command(SetClock(0, {}))

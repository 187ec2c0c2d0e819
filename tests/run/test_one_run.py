"""One run's orchestration (one_run: OneRun, _follow, stop_and_clean) with scripted
pieces in place of processes, and no broker: what happens to the run when a piece dies, gives
no result, refuses a command, or the run is cancelled. (httpx ships a MockTransport beside
its transport base; python-socketio swaps `_publish` for an AsyncMock: the same habit.)
The real pieces and broker prove the wiring in test_compare and test_faults."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import mqprobe.run.one_run as one_run
from mqprobe.broker import QueueSampler
from mqprobe.broker.topology import resolve
from mqprobe.model import Culprit, Layout, PieceRole
from mqprobe.pieces.node import NodeConfig
from mqprobe.pieces.process import Piece, RunInterrupted
from mqprobe.pieces.publisher import PublishConfig
from mqprobe.pieces.swarm import SwarmConfig
from mqprobe.protocol import EventName, NodeResult, parse_command
from mqprobe.records import Latency
from mqprobe.run.one_run import run_one, silent_swarm
from mqprobe.run.placement import Placement
from mqprobe.run.workload import Workload

AMQP_URL = "amqp://user:secret@127.0.0.1:1/"  # never dialled: nothing here talks to a broker


class ScriptedPiece(Piece):
    """A piece that answers as its process would: ready when started, `applied` to every
    command, and its result when asked to stop; `script` changes one of those."""

    def __init__(self, name: str, role: PieceRole, config, script: dict) -> None:
        super().__init__(name)
        self.role, self.config, self.script = role, config, script
        self.stopped = False
        self.commands: list[str] = []

    async def start(self) -> None:
        if self.role == PieceRole.NODE:
            self.record({"event": EventName.READY, "node": self.config.node_id,
                         "host": "127.0.0.1", "port": 1, "queues": []})
        elif self.role == PieceRole.SWARM:
            planned = sum(self.config.group_sizes.values())
            self.record({"event": EventName.PROGRESS, "joined": planned, "delivered": 0})
            self.record({"event": EventName.READY, "joined": planned})
        else:
            self.record({"event": EventName.READY})

    async def _publish(self) -> None:
        await asyncio.sleep(0.05)
        if self.script.get("dies") == self.name:  # the process ended before its result
            self.record({"event": EventName.EXIT, "log_tail": "Killed",
                         "ended": "killed by SIGKILL"})
            return
        published = {g: 1 for g in self.config.groups}
        self.record({"event": EventName.PROGRESS, "sent": len(published)})
        self.record({"event": EventName.RESULT, "data": {
            "published": published, "sent": len(published), "confirmed": len(published),
            "t0_ns": time.time_ns()}})

    async def send(self, line: str) -> None:
        command = parse_command(line)
        self.commands.append(command.name)
        if command.name == "reset":
            self.reset_at = time.monotonic_ns()
        if self.script.get("refuses") == (self.name, command.name):
            self.record({"event": EventName.REFUSED, "command": command.name,
                         "message": "not now"})
        else:
            self.record({"event": EventName.APPLIED, "command": command.name})
            if self.role == PieceRole.PUBLISHER:  # it sends from its reset
                asyncio.get_running_loop().create_task(self._publish())
        if self.script.get("cancel_at") == (self.name, command.name):
            self.script["run_task"].cancel()

    async def stop(self, timeout: float = 20.0) -> dict | None:
        self.stop_asked_ns = min(self.stop_asked_ns, time.time_ns())
        self.stopped = True
        if self.script.get("exits_on_stop") == self.name:  # it crashed as it stopped
            self.record({"event": EventName.EXIT, "log_tail": "TypeError: not serializable",
                         "ended": "exited with status 1"})
        if self.script.get("no_result") == self.name or EventName.EXIT in self.latest:
            return None
        if self.role == PieceRole.SWARM:
            return silent_swarm(self.script["workload"], self.config.slice_index,
                                self.config.slice_count) | {"silent": False}
        if self.role == PieceRole.NODE:
            return _idle_node(self.config.node_id)
        return self.result_data()


def _idle_node(node_id: str) -> NodeResult:
    """A node's result with every field, having handled nothing."""
    return {"node": node_id, "handled": 0, "untraced": 0, "filtered": 0, "stalls": 0,
            "unacked_max": 0, "prefetch": 50, "busy_ratio": {}, "loop_lag": Latency().to_json(),
            "loop_worst": {}, "loop_cpu": {}, "fanout": {}, "emits": {}, "timeline": {},
            "gc": {}}


class ScriptedPlacement(Placement):
    """Every piece here, scripted, and kept for the test to look at."""

    def __init__(self, script: dict) -> None:
        super().__init__(listen_host="127.0.0.1")
        self.script = script
        self.pieces: dict[str, ScriptedPiece] = {}

    def make(self, role: PieceRole, index: int, name: str, config, log_dir: Path, env: dict,
             label: str) -> Piece:
        piece = self.pieces[name] = ScriptedPiece(name, role, config, self.script)
        return piece


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list:
    """The broker-facing helpers compare calls, answered here: what remove_declared was
    asked to remove is kept in the list returned."""
    removed: list = []

    async def remove_declared(url: str, exchanges: list[str], queues: list[str]) -> dict:
        removed.append((exchanges, queues))
        return {"removed": {"exchanges": exchanges, "queues": queues}, "left": []}

    async def sampling_nothing(self: QueueSampler) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(one_run, "remove_declared", remove_declared)
    monkeypatch.setattr(one_run, "broker_processes", lambda url: [])
    monkeypatch.setattr(QueueSampler, "run", sampling_nothing)
    return removed


def _run(tmp_path: Path, script: dict, layout: Layout = Layout.PER_GROUP):
    """One run of single-topic on two nodes and two swarms, scripted: its result (or the
    RunInterrupted it raised) and the placement that holds its pieces."""
    workload = Workload(topologies=["single-topic"], layouts=[layout], nodes=2,
                        group_sizes=[3, 4, 5], rate=10, duration_s=0.1, swarm_processes=2,
                        drain_s=2)
    script["workload"] = workload
    placement = ScriptedPlacement(script)
    phases: list = []

    async def main():
        task = asyncio.get_running_loop().create_task(run_one(
            resolve("single-topic"), layout, workload, AMQP_URL, tmp_path, "single-topic/"
            + layout, phases.append, placement=placement))
        script["run_task"] = task
        try:
            return await task
        except RunInterrupted as interrupted:
            return interrupted

    return asyncio.run(main()), placement, phases


def _planned_queues(layout: str) -> set[str]:
    topology = resolve("single-topic")
    return {name for node in ("n1", "n2")
            for name, _ in topology.queue_plan("P.", layout, node, ["1", "2", "3"])}


def test_a_publisher_that_dies_mid_run_fails_it_and_every_piece_is_still_stopped(
        tmp_path, no_broker):
    run, placement, phases = _run(tmp_path, {"dies": "publisher"})
    assert run.error == "publisher exited early (killed by SIGKILL; its log ends: Killed)", \
        run.error
    assert run.verdict.culprit == Culprit.CLIENT, run.verdict
    assert run.verdict.evidence[0].startswith("run failed: publisher exited early")
    assert all(piece.stopped for piece in placement.pieces.values()), placement.pieces
    assert phases[-1].phase == one_run.RunPhase.FAILED
    # what the run declared is removed, even what no node named (they named no queue here)
    ((exchanges, queues),) = no_broker
    prefix = run.declared["prefix"]
    assert {q.replace(prefix, "P.") for q in queues} == _planned_queues("per-group")
    assert exchanges == resolve("single-topic").exchanges(prefix, ["1", "2", "3"])


def test_a_swarm_that_gives_no_result_is_named_and_its_members_count_as_lost(tmp_path, no_broker):
    run, placement, _ = _run(tmp_path, {"no_result": "swarm2"})
    assert run.error == ("swarm2 gave no result when asked to stop: its figures are "
                            "missing"), run.error
    members = sum(s.latest[EventName.READY]["joined"] for name, s in placement.pieces.items()
                  if name == "swarm2")
    assert members > 0
    assert run.counts.lost == run.counts.expected_deliveries - run.counts.delivered > 0
    assert json.dumps(run.to_json())  # the whole run is JSON as it is


def test_a_piece_that_ends_without_its_result_is_named_with_its_last_log_line(tmp_path,
                                                                              no_broker):
    run, _placement, _ = _run(tmp_path, {"exits_on_stop": "node2"})
    assert run.error == ("node2 gave no result when asked to stop: its figures are missing "
                            "(exited with status 1; its log ends: TypeError: not serializable)"), \
        run.error


def test_a_command_a_piece_refuses_fails_the_run_with_its_reason(tmp_path, no_broker):
    run, placement, _ = _run(tmp_path, {"refuses": ("node2", "reset")})
    assert run.error == "node2 could not apply 'reset': not now", run.error
    assert placement.pieces["publisher"].commands == []  # never told to send
    assert all(piece.stopped for piece in placement.pieces.values())


def test_a_cancelled_run_stops_every_piece_and_hands_over_what_it_had(tmp_path, no_broker):
    interrupted, placement, _ = _run(tmp_path, {"cancel_at": ("swarm1", "reset")})
    assert isinstance(interrupted, RunInterrupted), interrupted
    assert interrupted.result is not None
    (run,) = interrupted.result.runs
    assert run.error == one_run.INTERRUPTED_PROSE
    assert all(piece.stopped for piece in placement.pieces.values())
    assert no_broker, "what the run declared was not removed"


def test_every_piece_gets_the_configuration_of_its_role(tmp_path, no_broker):
    run, placement, _ = _run(tmp_path, {})
    pieces = placement.pieces
    assert sorted(pieces) == ["node1", "node2", "publisher", "swarm1", "swarm2"]
    assert all(isinstance(pieces[n].config, NodeConfig) for n in ("node1", "node2"))
    assert isinstance(pieces["publisher"].config, PublishConfig)
    swarms = [pieces[n].config for n in ("swarm1", "swarm2")]
    assert all(isinstance(s, SwarmConfig) for s in swarms)
    assert [s.slice_index for s in swarms] == [0, 1] and {s.slice_count for s in swarms} == {2}
    # every piece was reset: the nodes and swarms measure, then the publisher sends
    # measuring starts (reset) and ends (settle, the nodes' and swarms' figures taken then)
    assert pieces["publisher"].commands == ["reset"]
    assert all(pieces[n].commands == ["reset", "settle"] for n in pieces if n != "publisher")
    assert pieces["publisher"].reset_at > max(pieces[n].reset_at for n in pieces
                                              if n != "publisher")
    assert run.error is None and run.counts.published == 3


def test_each_phase_of_a_run_is_timed_in_its_result(tmp_path, no_broker):
    """Where a run's wall time goes: a default compare is mostly not measuring (issue 24)."""
    run, _placement, _ = _run(tmp_path, {})
    phases = run.phases_s
    assert list(phases) == ["start", "join", "clocks", "drain", "measure", "stop", "assemble"]
    assert all(seconds >= 0 for seconds in phases.values()), phases
    failed, _, _ = _run(tmp_path / "failed", {"dies": "publisher"})
    assert "stop" in failed.phases_s and "assemble" in failed.phases_s

"""Where each role's pieces run (here, or on agents reached through the broker), and
each piece's clock against ours."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mqprobe.clocks import SAME_CLOCK, ClockOffset, clock_id
from mqprobe.model import PieceRole, is_node_piece
from mqprobe.pieces.agent import LOCAL, Hub
from mqprobe.pieces.node import NodeConfig
from mqprobe.pieces.process import Child, Piece, RunError
from mqprobe.protocol import PieceSpec, SetClock, to_document
from mqprobe.run.workload import Workload

if TYPE_CHECKING:
    from mqprobe.pieces.piece import PieceConfig


@dataclass
class Placement:
    """Where each role's pieces run: here, or on agents reached through the broker."""

    roles: dict[str, list[str]] = field(default_factory=dict)
    hub: Hub | None = None
    listen_host: str = "127.0.0.1"

    def agent_for(self, role: str, index: int) -> str:
        names = self.roles.get(role) or [LOCAL]
        return names[index % len(names)]

    def make(self, role: PieceRole, index: int, name: str, config: PieceConfig, log_dir: Path,
             env: dict[str, str], label: str) -> Piece:
        """The piece for one role's config: run here, or by the agent placed for it (a node
        listens on the address that agent said it can be reached at)."""
        agent = self.agent_for(role, index)
        if isinstance(config, NodeConfig):
            config = replace(config, host=self.listen_host_of(agent))
        spec = PieceSpec(role, to_document(config))
        if agent == LOCAL or self.hub is None:
            return Child(name, spec, log_dir, env)
        # the piece's name travels as an id (check_id): label may hold '=' (sweeps)
        remote_name = re.sub(r"[^A-Za-z0-9_.:-]", "-", f"{label}.{name}")[-64:]
        return self.hub.piece(agent, remote_name, spec)

    def listen_host_of(self, agent: str) -> str:
        return self.listen_host if agent == LOCAL or not self.hub else self.hub.agents[agent].listen_host

    def machine_of(self, agent: str) -> str:
        """Host and boot of an agent (a pretend skew does not make another machine)."""
        clock = clock_id() if agent == LOCAL or not self.hub else self.hub.agents[agent].clock
        return clock.split("~")[0]

    def check_reachable(self, nodes: int, swarms: int) -> None:
        """A swarm on another machine cannot reach a node listening on loopback: say so now."""
        for i in range(nodes):
            node = self.agent_for("node", i)
            host = self.listen_host_of(node)
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                continue
            for j in range(swarms):
                swarm = self.agent_for("swarm", j)
                if self.machine_of(swarm) != self.machine_of(node):
                    where = "--listen-host on this command" if node == LOCAL else \
                        f"`mqprobe agent --listen-host` on {node}"
                    raise RunError(f"the swarm on {swarm} cannot reach nodes on {node}'s loopback "
                                   f"address {host}: give {where} an address it can reach")

    async def clocks(self, nodes: int, swarms: int) -> dict[str, ClockOffset]:
        """Each piece's clock against ours, measured now (clocks drift between runs); pieces
        on one agent share one measurement, so a hop between them has no error bar."""
        pieces = {"publisher": self.agent_for("publisher", 0),
                  **{f"n{i + 1}": self.agent_for("node", i) for i in range(nodes)},
                  **{f"swarm{i + 1}": self.agent_for("swarm", i) for i in range(swarms)}}
        measured = {LOCAL: SAME_CLOCK}
        for agent in dict.fromkeys(pieces.values()):
            if agent not in measured and self.hub:
                measured[agent] = await self.hub.clock(agent)
        return {piece: measured.get(agent, SAME_CLOCK) for piece, agent in pieces.items()}


@contextlib.asynccontextmanager
async def placed(workload: Workload, amqp_url: str):
    """The workload's placement, with a hub on the broker when some piece runs elsewhere."""
    remote = sorted({a for agents in workload.placement.values() for a in agents} - {LOCAL})
    if not remote:
        yield Placement(workload.placement, None, workload.listen_host)
        return
    hub = Hub(amqp_url)
    await hub.open()
    try:
        for agent in remote:
            await hub.hello(agent)
        placement = Placement(workload.placement, hub, workload.listen_host)
        placement.check_reachable(workload.nodes, workload.swarms)
        yield placement
    finally:
        await hub.close()


def clock_command(clocks: dict[str, ClockOffset], swarm: str) -> SetClock:
    """The command that puts a swarm's hops onto its own clock."""
    own = clocks[swarm]
    return SetClock(publisher_ns=clocks["publisher"].relative_to(own).offset_ns,
                    nodes_ns={name: offset.relative_to(own).offset_ns
                              for name, offset in clocks.items() if is_node_piece(name)})



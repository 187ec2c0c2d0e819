"""The seed's reconnect storm on a real broker at the default workload: a load process
beside the swarm whose members leave and join again (churn), or whose loop cannot run long
enough for the servers to time its members out (a client too busy to answer pings). The
nodes measure the connection work on their loops, count how connections began and ended,
and the verdict charges that work to churn (the server's load) or to the silent clients
(the client side), from the reasons the nodes counted, never from what was injected."""

from __future__ import annotations

import pytest

from mqprobe.model import Cause
from mqprobe.watch.connections import SILENT
from mqprobe.watch.profile import CONNECTIONS

from .test_mq_side import compare, home  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration  # a real broker


def shares(run: dict) -> dict[str, float]:
    return {s["cause"]: s["share"] for s in run["attribution"]["shares"]}


def ended(run: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in run["nodes"]:
        for _t, reason, n in node["connections"]["ended"]:
            out[reason] = out.get(reason, 0) + n
    return out


def test_churn_is_measured_on_the_nodes_loops_and_reported_apart(home, tmp_path):  # noqa: F811
    """300 members a second leave and join again: both nodes count them begin and end (a
    closed connection, not a silent client), their loops' profiles show the work, the
    healthy members' counts are whole, and the load process's members are reported apart."""
    run = compare(home, tmp_path, "--inject", "churn=300/s")
    assert run["lost"] == 0 and run["delivered"] == run["expected_deliveries"], run["verdict"]
    churning = run["churning"]
    assert churning["members"] == churning["joined"] == 600
    assert churning["left"] >= 600 and churning["rejoined"] >= churning["left"] - 50, churning
    assert churning["rejoin"]["p50_ms"] > 0
    why = ended(run)
    assert sum(why.values()) >= 600 and not any(why.get(r) for r in SILENT), why
    for node in run["nodes"]:
        began = sum(n for _t, n in node["connections"]["began"])
        assert began >= 250, node["connections"]
        assert node["profile"]["kinds"].get(CONNECTIONS, 0) > 0.01, node["profile"]
    work = [e for e in run["timeline"]["events"] if e["kind"] == "connection-work"]
    assert {e["piece"] for e in work} == {"n1", "n2"}
    assert Cause.CLIENTS_UNRESPONSIVE not in shares(run), run["attribution"]["shares"]
    lines = run["verdict"]["evidence"]
    assert any(line.startswith("the load process beside the swarm (600 of 600 members")
               for line in lines), lines
    assert any(line.startswith("n1's loop spent ") for line in lines), lines


@pytest.mark.measuring  # the storm's share of the tail; pings of 1 s beside busy neighbours
def test_a_load_process_too_busy_to_answer_pings_is_the_clients_not_churn(home, tmp_path):  # noqa: F811
    """The load process's loop cannot run for 2.5 s, 4 s into the run, with pings every 1 s
    and a 1 s timeout: the servers time its 600 members out, and they all join again as it
    wakes. The nodes count those connections ended silent; the storm's time on their loops
    is charged to the clients (the seed's case: a load host overloaded), not to churn."""
    run = compare(home, tmp_path, "--duration", "10", "--ping-interval", "1",
                  "--ping-timeout", "1", "--inject", "client-stall=2500ms/4s")
    why = ended(run)
    silent = sum(why.get(r, 0) for r in SILENT)
    assert silent >= 300 and 2 * silent >= sum(why.values()), why
    churning = run["churning"]
    assert churning["dropped"] >= 300 and churning["rejoined"] >= 300, churning
    # one stall of 2.5 s at least (a second comes when the drain outlasts 10.5 s)
    stalls = churning["stalled_ms"] / 2500
    assert stalls >= 0.96 and abs(stalls - round(stalls)) < 0.1, churning
    charged = shares(run)
    assert charged.get(Cause.CLIENTS_UNRESPONSIVE, 0) > 0.05, run["attribution"]["shares"]
    assert Cause.CONNECTION_CHURN not in charged, run["attribution"]["shares"]
    assert run["lost"] == 0, run["verdict"]  # the healthy members kept every delivery

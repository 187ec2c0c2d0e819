"""Shared fixtures: one real throwaway RabbitMQ for the session, started the way users start it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from mqprobe.broker import BrokerState, ManagedBroker
from mqprobe.broker.connect import http_request

# The fuzz tests (test_embed_hostile): 1,000 examples a property in the suite (3,000 took
# 39 s of its 505); HYPOTHESIS_PROFILE=thorough tries 10,000.
settings.register_profile("suite", max_examples=1000)
settings.register_profile("thorough", max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

REPO = Path(__file__).resolve().parent.parent

# A test that needs a real broker or a real server is an integration test (these fixtures,
# or @pytest.mark.integration for one that starts its own); every other test is a unit
# test: pure decisions, and the command line's answers to bad input, without a broker.
# `./dev test -m unit` runs the unit tests, `./dev test -m integration` the others, and
# `./dev test` both.
REAL_FIXTURES = {"managed_broker", "broker", "broker_home", "vhost_url", "chat_server", "compared",
                 "fragile_broker", "placed_run", "agent", "socketio2_server",
                 "socketio4_server"}

# A test whose assertions are figures a busy neighbour could change (a verdict, a share, a
# stall's CPU split, a clock offset within its error bar) is `measuring`: `./dev test` runs
# the others three at a time (pytest-xdist), then these alone. The verdict must hold on a
# crowded host too (BENCHMARKS.md), but a test is a poor place to find out by chance.
MEASURING_MODULES = {"test_loop", "test_cpu", "test_footprint", "test_timeline"}
# modules whose tests on a real broker measure, and whose pure ones (input checks) do not
MEASURING_WHEN_REAL = {"test_analysis"}
MEASURING_FIXTURES = {"placed_run"}
# `./dev test` hands each worker whole modules (--dist loadscope), so a module-scoped
# fixture (`compared`: seven runs; `agent`; `fragile_broker`) is made once. (The
# xdist_group marks used before were never honoured: `compared` was made by all three
# workers, 27 s each.)
# modules whose tests start brokers, agents and whole runs of their own (15-30 s each)
OWN_BROKERS_AND_RUNS = {"test_faults", "test_interrupts", "test_agent", "test_broker", "test_mq_side",
                        "test_live_verdict", "test_churn"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        real = REAL_FIXTURES & fixtures or item.get_closest_marker("integration")
        item.add_marker(pytest.mark.integration if real else pytest.mark.unit)
        module = _module(item)
        if (module in MEASURING_MODULES or (real and module in MEASURING_WHEN_REAL)
                or MEASURING_FIXTURES & fixtures):
            item.add_marker(pytest.mark.measuring)
    # the longest modules first, the quick ones to fill the gaps at the end
    items.sort(key=_slowness)


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rpartition(".")[2]


def _slowness(item: pytest.Item) -> int:
    """0 for the tests that start brokers and runs of their own, 1 for the other
    integration tests, 2 for the unit tests."""
    if _module(item) in OWN_BROKERS_AND_RUNS:
        return 0
    return 1 if item.get_closest_marker("integration") else 2


@pytest.fixture(scope="session")
def managed_broker(tmp_path_factory: pytest.TempPathFactory) -> ManagedBroker:
    """A real RabbitMQ on loopback with random free ports; torn down at the end. It lives
    in a home of its own (`broker_home`), kept as `broker up` keeps one, so a compare run
    with MQPROBE_HOME set to it uses it as a user's compare uses theirs (the broker faults
    act on it: each xdist worker has its own, and its tests run one at a time)."""
    managed = ManagedBroker(tmp_path_factory.mktemp("home") / "broker")
    managed.up()
    managed.keep()
    yield managed
    managed.down()


@pytest.fixture(scope="session")
def broker_home(managed_broker: ManagedBroker) -> Path:
    """MQPROBE_HOME of the session's broker."""
    return managed_broker.state_dir.parent


@pytest.fixture(scope="session")
def broker(managed_broker: ManagedBroker) -> BrokerState:
    return managed_broker.running_state()


@pytest.fixture
def vhost_url(managed_broker: ManagedBroker, request: pytest.FixtureRequest) -> str:
    """The session broker's AMQP URL on a virtual host of this test's own, so what it
    finds there is only what it made; deleted after (left, what tests made there kept the
    broker's statistics busy and the suite took 40 s longer)."""
    name = f"t-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    vhost = f"{name}-{uuid.uuid4().hex[:6]}"  # parameters past 40 characters differ here
    state = managed_broker.running_state()
    assert state is not None
    # the management API, not rabbitmqctl: an Erlang VM booted per call cost 0.45 s of CPU
    named = urllib.parse.quote(vhost, safe="")
    management(state, "PUT", f"vhosts/{named}")
    management(state, "PUT", f"permissions/{named}/{urllib.parse.quote(state.user, safe='')}",
               {"configure": ".*", "write": ".*", "read": ".*"})
    yield f"{state.amqp_url}{vhost}"
    management(state, "DELETE", f"vhosts/{named}")


def management(state: BrokerState, method: str, path: str, body: dict | None = None) -> None:
    """One call to the session broker's management API (/api/PATH)."""
    request = http_request(state.management_url.rstrip("/"), f"/api/{path}")
    request.method, request.data = method, json.dumps(body or {}).encode()
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30):
        pass


def run_until_cancelled(seconds: float, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a sampler's loop for `seconds`, then cancel it, as compare does."""
    async def main() -> None:
        task = asyncio.create_task(work())
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`mqprobe ARGS` through the command line's own entry (cli._main: the sentence and the
    exit code), in this process: for tables of input refused before anything starts, where
    a process of its own (about a second of start-up each) proves nothing more. run_cli
    keeps proving the whole entry point; anything that could start work uses it."""
    import io
    from unittest import mock

    from mqprobe import cli

    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQPROBE_")}
    with mock.patch.object(sys, "argv", ["mqprobe", *args]), \
            mock.patch.dict(os.environ, env, clear=True), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli._main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["mqprobe", *args], code, out.getvalue(), err.getvalue())


def run_cli(*args: str, amqp_url: str | None = None, timeout: float = 300,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`mqprobe ARGS` as a user runs it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    if amqp_url:
        env["MQPROBE_AMQP_URL"] = amqp_url
    return subprocess.run([sys.executable, "-m", "mqprobe", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)

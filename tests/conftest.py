"""Shared fixtures: one real throwaway RabbitMQ for the session, started the way users start it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqprobe.broker import BrokerState, ManagedBroker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def managed_broker(tmp_path_factory: pytest.TempPathFactory) -> ManagedBroker:
    """A real RabbitMQ on loopback with random free ports; torn down at the end."""
    managed = ManagedBroker(tmp_path_factory.mktemp("broker"))
    managed.up()
    yield managed
    managed.down()


@pytest.fixture(scope="session")
def broker(managed_broker: ManagedBroker) -> BrokerState:
    return managed_broker.running_state()


@pytest.fixture
def vhost_url(managed_broker: ManagedBroker, request: pytest.FixtureRequest) -> str:
    """The session broker's AMQP URL on a virtual host of this test's own, so what it
    finds there is only what it made."""
    vhost = f"t-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    managed_broker.rabbitmqctl("add_vhost", vhost)
    state = managed_broker.running_state()
    managed_broker.rabbitmqctl("set_permissions", "-p", vhost, state.user, ".*", ".*", ".*")
    yield f"{state.amqp_url}{vhost}"
    managed_broker.rabbitmqctl("delete_vhost", vhost)


def run_cli(*args: str, amqp_url: str | None = None, timeout: float = 300,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`mqprobe ARGS` as a user runs it, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != "MQPROBE_AMQP_URL"}
    if amqp_url:
        env["MQPROBE_AMQP_URL"] = amqp_url
    return subprocess.run([sys.executable, "-m", "mqprobe", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)

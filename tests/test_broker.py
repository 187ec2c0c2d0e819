"""The managed broker, started and stopped through the code users run."""

import json
import os
import socket

from mqprobe.broker import ManagedBroker, management_get, pid_alive

from .conftest import run_cli


def test_session_broker_serves_amqp_and_management_on_loopback(broker):
    with socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=2):
        pass
    overview = management_get(broker.management_url, "/api/overview")
    assert overview["rabbitmq_version"].startswith("3.")
    listeners = {(entry["protocol"], entry["ip_address"]) for entry in overview["listeners"]}
    assert ("amqp", "127.0.0.1") in listeners


def test_up_status_down_and_a_stale_data_dir(tmp_path):
    state_dir = tmp_path / "b"
    # leftovers of a crashed broker: a dead pid and an old data dir
    (state_dir / "mnesia").mkdir(parents=True)
    (state_dir / "mnesia" / "junk").write_text("old")
    (state_dir / "state.json").write_text(json.dumps({
        "pid": 2 ** 22 + 11, "amqp_port": 1, "management_port": 1, "dist_port": 1,
        "user": "u", "password": "p", "node_name": "x@localhost", "started_at": 0}))
    env_dir = str(state_dir)
    status = run_cli("broker", "status", "--state-dir", env_dir)
    assert status.returncode == 1

    up = run_cli("broker", "up", "--state-dir", env_dir, timeout=120)
    assert up.returncode == 0, up.stderr
    state = ManagedBroker(state_dir).load_state()
    assert state.password not in up.stdout + up.stderr
    assert not (state_dir / "mnesia" / "junk").exists()
    assert oct(os.stat(state_dir / "state.json").st_mode)[-3:] == "600"

    status = run_cli("broker", "status", "--state-dir", env_dir, "--json")
    assert status.returncode == 0
    info = json.loads(status.stdout)
    assert info["running"] and info["version"].startswith("3.")
    assert state.password not in status.stdout

    down = run_cli("broker", "down", "--state-dir", env_dir, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert run_cli("broker", "status", "--state-dir", env_dir).returncode == 1
    assert not pid_alive(state.pid)  # gone, or a zombie waiting for a non-reaping init

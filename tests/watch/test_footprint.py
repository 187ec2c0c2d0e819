"""The CPU each piece used, from outside: pro rata of the sample windows (pure), and a
real sample of this process while it computes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mqprobe.model import INSTRUMENT_ROLES, role_of
from mqprobe.watch.footprint import CpuSampler, Reported

from ..conftest import run_until_cancelled

MS = 1_000_000


def test_cpu_during_spans_is_pro_rata_of_the_windows():
    sampler = CpuSampler({})
    sampler.times = [0, 100 * MS, 200 * MS, 300 * MS]
    sampler.used = {"broker": [0, 50 * MS, 60 * MS, 160 * MS], "swarm1": [0, 0, 80 * MS, 80 * MS]}
    used = sampler.during([(50 * MS, 150 * MS)])
    assert used == {"broker": pytest.approx(30 * MS), "swarm1": pytest.approx(40 * MS)}
    assert sampler.during([(250 * MS, 400 * MS)]) == {"broker": pytest.approx(50 * MS),
                                                     "swarm1": 0.0}


def test_roles_tell_the_system_from_the_instrument():
    assert [role_of(p) for p in ("n1", "n12", "node2", "swarm3", "broker", "publisher",
                                 "compare", "node", "agent-b")] == [
        "node", "node", "node", "swarm", "broker", "publisher", "compare", "node", "agent-b"]
    assert {p for p in ("n1", "swarm3", "broker", "publisher", "compare")
            if role_of(p) in INSTRUMENT_ROLES} == {"swarm3", "publisher", "compare"}


def test_a_process_that_computes_is_seen_computing():
    sampler = CpuSampler({"compare": [os.getpid()], "gone": [2**22 + 7]})
    sampler.sample()
    until = time.perf_counter() + 0.2
    while time.perf_counter() < until:
        pass
    sampler.sample()
    summary = sampler.summary(sampler.times[0]).to_json()
    assert summary["pieces"]["compare"]["core_share"] > 0.3
    assert summary["pieces"]["compare"]["instrument"]
    assert summary["pieces"]["gone"]["cpu_ms"] == 0  # not negative: it keeps what it had
    assert "waited_ms" not in summary["pieces"]["gone"]  # nothing was read: not "0 waited"


def test_two_busy_processes_on_one_core_are_seen_waiting_for_it():
    """The waits of a piece that measures nothing itself (the broker), from its threads'
    schedstat: two spinners pinned to one CPU each wait about half the time."""
    spin = "import time\nuntil = time.time() + 1.5\nwhile time.time() < until: pass"
    cpu = max(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", spin],
                                 preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
                for _ in range(2)]
    sampler = CpuSampler({"a": [spinners[0].pid], "b": [spinners[1].pid]})
    try:
        run_until_cancelled(0.8, sampler.run)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    pieces = sampler.summary(sampler.times[0]).pieces
    for piece in ("a", "b"):
        ran, waited = pieces[piece].cpu_ms, pieces[piece].waited_ms
        assert 0.25 < waited / (ran + waited) < 0.9, pieces  # about half, or more beside others
    rows = sampler.summary(sampler.times[0]).series["waited_rows"]
    assert all(row[1] >= 0 for row in rows) and sum(row[1] for row in rows) > 0, rows


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to pin to one")
def test_a_run_pinned_to_some_cpus_counts_the_host_on_those_only():
    """`taskset -c 0` compare: a process busy on CPU 1 took no CPU its nodes could have had
    (one core's matrix beside work on the other read 'other processes 98%' of its core)."""
    code = ("import os; os.sched_setaffinity(0, {0}); from mqprobe.cpu import run_cpus; "
            "print(sorted(run_cpus()))")
    pinned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert pinned.stdout.strip() == "[0]", pinned.stderr
    from mqprobe.cpu import host_cpu_ns

    every = frozenset(range(os.cpu_count() or 1))
    whole, parts = host_cpu_ns(), host_cpu_ns(every)
    assert whole and parts and abs(whole[0] - parts[0]) < 0.01 * whole[0]  # the same ticks
    one = host_cpu_ns(frozenset({0}))
    assert one and one[0] < 0.75 * whole[0]


def test_a_broker_elsewhere_has_no_local_processes_and_a_local_one_is_found():
    import socket

    from mqprobe.watch.footprint import broker_processes

    assert broker_processes("amqp://user:secret@rabbit.example:5672/") == []
    assert broker_processes("amqp://127.0.0.1:99999/") == []  # a port no process can have
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert broker_processes(f"amqp://u:p@127.0.0.1:{port}/")[0] == os.getpid()


def test_a_broker_elsewhere_is_counted_from_what_its_endpoint_reports():
    """A reported counter's readings (the broker sampler's scrapes, once a second): its rate
    over the readings, over the sampler's wall, with its source; none read keeps it not
    seen."""
    t0 = time.time_ns()
    readings = [(t0 + k * 1_000_000_000, 1000.0 + 150 * k) for k in range(4)]
    sampler = CpuSampler({"compare": [os.getpid()]}, {"broker": "not a process on this host"},
                         reported={"broker": Reported("its endpoint", readings)})
    run_until_cancelled(2.5, sampler.run)
    summary = sampler.summary(sampler.times[0]).to_json()
    broker = summary["pieces"]["broker"]
    assert broker["role"] == "broker" and broker["source"] == "its endpoint"
    assert not broker["instrument"] and "broker" not in summary["not_seen"]
    assert broker["core_share"] == pytest.approx(0.15, rel=0.1)  # 150 ms a second
    assert broker["cpu_ms"] == pytest.approx(0.15 * summary["wall_s"] * 1000, rel=0.1)

    silent = CpuSampler({"compare": [os.getpid()]}, {"broker": "not a process on this host"},
                        reported={"broker": Reported("its endpoint", [])})
    run_until_cancelled(1.5, silent.run)
    summary = silent.summary(silent.times[0]).to_json()
    assert "broker" not in summary["pieces"]
    assert summary["not_seen"]["broker"] == ("not a process on this host; its endpoint answered "
                                             "0 of its scrapes")


def test_the_erlang_runtime_counter_is_read_from_the_exposition_as_rabbitmq_writes_it():
    from mqprobe.broker.prometheus import parse_broker

    text = ("# TYPE erlang_vm_statistics_runtime_milliseconds counter\n"
            "# HELP erlang_vm_statistics_runtime_milliseconds The sum of the runtime.\n"
            "erlang_vm_statistics_runtime_milliseconds 4213\n"
            "# TYPE erlang_vm_statistics_wallclock_time_milliseconds counter\n"
            "erlang_vm_statistics_wallclock_time_milliseconds 99999\n")
    assert parse_broker(text, "", set()).runtime_ms == 4213
    assert parse_broker("# TYPE other counter\nother 5\n", "", set()).runtime_ms is None


def test_the_families_read_are_found_among_a_thousand_others_and_only_they_are_parsed():
    from mqprobe.broker.prometheus import only_families, parse_broker

    noise = "".join(f"# TYPE rabbitmq_other_{i} gauge\nrabbitmq_other_{i}{{a=\"b\"}} {i}\n"
                    for i in range(1000))
    text = (noise + "# TYPE rabbitmq_alarms_memory_used_watermark untyped\n"
            "# HELP rabbitmq_alarms_memory_used_watermark is 1 if VM memory watermark alarm\n"
            "rabbitmq_alarms_memory_used_watermark 1\n"
            "# TYPE rabbitmq_erlang_scheduler_run_queue gauge\n"
            "rabbitmq_erlang_scheduler_run_queue 7\n"
            "rabbitmq_erlang_scheduler_run_queue_other 99\n" + noise)
    metrics = parse_broker(text, "", set())
    assert (metrics.alarms, metrics.run_queue) == (("memory alarm",), 7)
    kept = only_families(text, ("rabbitmq_erlang_scheduler_run_queue",))
    assert kept.count("\n") == 3 and "rabbitmq_other" not in kept


def test_a_brokers_waits_beyond_its_throttling_are_thread_by_thread():
    """The kernel counts a throttled thread's time as a wait on its run queue: two
    schedulers that waited 139 and 213 ms in a window their cgroup was throttled 282 ms
    (the managed broker under a 5% quota) waited for no CPU someone else had; one that
    waited 50 ms in a window throttled 0 did. The longest one thread waited, and the most
    one computed, are kept."""
    sampler = CpuSampler({})
    readings = iter([
        ({"s1": (0, 0), "s2": (0, 0)}, 0),
        ({"s1": (3 * MS, 139 * MS), "s2": (8 * MS, 213 * MS)}, 282 * MS),
        ({"s1": (23 * MS, 189 * MS), "s2": (18 * MS, 223 * MS)}, 282 * MS)])

    class Fake:  # the broker's thread counters and cgroup, as read at each sample
        available = True

        def read(self):
            return 0

        def read_path(self):
            self.threads, self.throttled = next(readings)
            return self.threads

    fake = Fake()
    sampler._waits["broker"], sampler._broker_cgroup = fake, fake
    sampler._broker_pid, sampler._broker_cgroup_read = 2**22 + 7, True  # no such process
    fake.read = lambda: fake.throttled
    for t in range(3):
        sampler.times.append(t * 300 * MS)
        sampler._sample_broker()
    broker = sampler.broker_cpu()
    assert broker.rows == ((0, 300 * MS, 11 * MS, 0, 0, 282 * MS, 8 * MS),
                           (300 * MS, 300 * MS, 30 * MS, 60 * MS, 50 * MS, 0, 20 * MS))
    assert broker.stopped == () and broker.cgroup_read


@pytest.mark.integration  # a process of its own
def test_a_stopped_broker_is_seen_stopped_not_idle():
    """A broker frozen by SIGSTOP (a debugger, a frozen container) uses no CPU and waits for
    none, as an idle one; its state says it could not have answered."""
    import signal

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = CpuSampler({"broker": [child.pid]})
        sampler.sample()
        time.sleep(0.1)
        os.kill(child.pid, signal.SIGSTOP)
        for _ in range(4):
            time.sleep(0.1)
            sampler.sample()
        os.kill(child.pid, signal.SIGCONT)
        time.sleep(0.1)
        sampler.sample()
    finally:
        child.kill()
        child.wait()
    (start, end), = sampler.broker_cpu().stopped
    times = sampler.times  # seen running, stopped four times, then running again
    assert (start, end) == ((times[0] + times[1]) // 2, (times[4] + times[5]) // 2)

"""The command line: parse, call the library, render. Bad input is one sentence, no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mqprobe.broker.connect import check_management, redact_url
from mqprobe.broker.managed import ManagedBroker, broker_for
from mqprobe.broker.topology import DEFAULT_TOPOLOGIES, LAYOUTS, resolve
from mqprobe.errors import InputError, MqprobeError, url_problem, within
from mqprobe.model import (
    AckMode,
    ChannelMode,
    Concurrency,
    EngineIO,
    Layout,
    QueueType,
    RunPhase,
    SweepAxis,
    TraceLine,
)
from mqprobe.output.report import (
    load_result,
    print_compare,
    print_connections,
    print_hops,
    print_result,
    read_text_bounded,
)
from mqprobe.pieces.agent import parse_placement
from mqprobe.pieces.process import PieceRuntime, RunInterrupted, serve
from mqprobe.result import Comparison, RunRecord
from mqprobe.run.interrupts import STOPPING, Interrupted, raise_interrupted, run_measuring
from mqprobe.run.outcome import FAILED_EXIT, check_writable, exit_policy, new_run_dir, save

if TYPE_CHECKING:  # the measuring wing is imported by the commands that measure
    from mqprobe.pieces.piece import PieceConfig
    from mqprobe.run.one_run import Phase
    from mqprobe.run.workload import Workload

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Where does a group message's delay come from: the MQ, the server, "
                       "or the last hop?")
broker_app = typer.Typer(no_args_is_help=True, help="A throwaway local RabbitMQ on loopback.")
app.add_typer(broker_app, name="broker")
# Tables are wide: when output is not a terminal (CI logs, files) do not squeeze them to 80.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, soft_wrap=True)



def _checked_url(option: str, schemes: tuple[str, ...], example: str) -> Callable[[str | None], str | None]:
    """A URL option checked where it enters, with one sentence (not where a piece uses it)."""
    def check(url: str | None) -> str | None:
        if url and (problem := url_problem(option, url, schemes, example)):
            raise UserError(problem)
        return url
    return check


AmqpUrl = Annotated[str | None, typer.Option(
    "--amqp-url", envvar="MQPROBE_AMQP_URL", show_envvar=True,
    callback=_checked_url("--amqp-url", ("amqp", "amqps"), "amqp://user:pass@host:5672/"),
    help="Broker to use; default: the managed local broker, started on demand.")]
ManagementUrl = Annotated[str | None, typer.Option(
    "--management-url", envvar="MQPROBE_MANAGEMENT_URL",
    callback=_checked_url("--management-url", ("http", "https"), "http://user:pass@host:15672/"),
    help="RabbitMQ management API (http://user:pass@host:15672/) for queue depth evidence; "
         "automatic with the managed broker.")]
PrometheusUrl = Annotated[str | None, typer.Option(
    "--prometheus-url", envvar="MQPROBE_PROMETHEUS_URL",
    callback=_checked_url("--prometheus-url", ("http", "https"), "http://host:15692/"),
    help="RabbitMQ's Prometheus endpoint (rabbitmq_prometheus) for alarms and the Erlang run "
         "queue; automatic with the managed broker.")]
Html = Annotated[Path | None, typer.Option(
    "--html", help="Also write a self-contained HTML picture of the result here.")]
HdrDir = Annotated[Path | None, typer.Option(
    "--hdr-dir", help="Also write HDR histogram logs (.hlog) per run and hop here.")]
PngDir = Annotated[Path | None, typer.Option(
    "--png", help="Also write each picture as a PNG file in this directory.")]
JsonPath = Annotated[Path | None, typer.Option("--json", help="Write the result JSON here.")]
Eio = Annotated[str, typer.Option(
    "--eio", help="engine.io protocol: 4 (socket.io 3/4), 3 (socket.io 2) or auto (asked of "
    "each server).")]
Prefetch = Annotated[int | None, typer.Option(help="Override the topology's prefetch.")]
Ack = Annotated[AckMode | None, typer.Option(help="Override the ack mode.")]
Channel = Annotated[ChannelMode | None, typer.Option(help="Override the channel mode.")]
ConcurrencyOption = Annotated[Concurrency | None, typer.Option(help="Override the concurrency.")]
Nodes = Annotated[int, typer.Option(help="socket.io server processes.")]
GroupSize = Annotated[int, typer.Option(help="Members per group.")]
Size = Annotated[int, typer.Option(help="Message body bytes.")]
SwarmProcesses = Annotated[int, typer.Option(
    help="Client swarm processes; 0: enough for the open-file limit and the load (one per "
    "25,000 deliveries/s, at most one per core).")]
BudgetMs = Annotated[float, typer.Option(help="p99 e2e under this is healthy.")]
RunDir = Annotated[Path | None, typer.Option(help="Where logs of the pieces go.")]
Inject = Annotated[list[str] | None, typer.Option(
    "--inject", help="Fault on purpose, repeatable: server-delay=50ms, broker-delay=50ms, "
                     "prefetch=1, stall=200ms/2s (blocked), spin=200ms/2s (saturated), "
                     "throttle=10% (node n1 under a CPU quota; Linux cgroups).")]
QueueTypes = Annotated[str | None, typer.Option(
    "--queue-types", help="Run each topology on each of these RabbitMQ queue types, "
    "comma-separated: classic, quorum, stream (a row each: single-topic.quorum). Default: "
    "each topology file's own (classic).")]
Drain = Annotated[float, typer.Option(
    "--drain", help="After the last publish, wait up to this many seconds for what is still "
    "queued to arrive (a run stops sooner once nothing moves for 3 s).")]
Gate = Annotated[bool, typer.Option(
    "--gate", help="Exit 3 when a run is over budget or fell behind (0: every run within "
    "budget; 1: a run lost deliveries or failed, with or without --gate).")]
Repeat = Annotated[int, typer.Option(
    help="Run each point this many times; the table shows how often the verdicts agree.")]
ListenHost = Annotated[str, typer.Option(
    help="Address nodes on this host listen on; with --place swarm=... on another machine, "
         "one that machine reaches.")]
PingInterval = Annotated[float, typer.Option(
    "--ping-interval", help="Seconds between the reference nodes' socket.io pings to each "
    "client (python-socketio's default).")]
PingTimeout = Annotated[float, typer.Option(
    "--ping-timeout", help="Seconds a reference node waits for a client's answer to a ping "
    "before it drops the client.")]
TcpKeepalive = Annotated[float, typer.Option(
    "--tcp-keepalive", help="Seconds of silence after which the reference nodes' TCP "
    "connections probe their client, and drop one gone (about twice this); 0: off.")]
Place = Annotated[list[str] | None, typer.Option(
    "--place", help="Run a role's pieces on other hosts, repeatable: node=hostb,hostc "
                    "(round robin), swarm=hostd, publisher=local. Each named host runs "
                    "`mqprobe agent --name NAME` against the same broker.")]

# Typer vendors click in recent releases; find its UsageError without a private import.
UsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
# What is printed as one sentence: mqprobe's expected failures, and the environment's
# (a file that cannot be read or written). Anything else is a bug: it keeps its traceback.
USER_ERRORS = (MqprobeError, OSError)


class UserError(InputError):
    """Raised by the CLI for bad input; printed as one sentence."""


def _csv(value: str, name: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise UserError(f"{name} needs at least one value")
    return items


def _ints(value: str, name: str) -> list[int]:
    try:
        return [int(item) for item in _csv(value, name)]
    except ValueError:
        raise UserError(f"{name} takes whole numbers separated by commas, got {value!r}") from None


def _run(coro_factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_factory())


C = TypeVar("C", bound=StrEnum)


def _choices(kind: type[C], text: str, flag: str) -> list[C]:
    """Comma-separated words of a vocabulary, or one sentence naming the word that is not."""
    chosen = []
    for word in _csv(text, flag):
        try:
            chosen.append(kind(word))
        except ValueError:
            raise UserError(f"{flag}: unknown {word!r} (choose from {', '.join(kind)})") from None
    return chosen


def _workload(layouts: list[Layout], group_sizes: list[int], rate: float, *, topologies: str,
              inject: list[str] | None, place: list[str] | None, queue_types: str | None,
              **options: Any) -> Workload:
    """compare's and sweep's workload from their shared options, as the command line gives
    them (checked by Workload.check before anything starts)."""
    from mqprobe.run.workload import Workload

    return Workload(topologies=_csv(topologies, "--topologies"), layouts=layouts,
                    group_sizes=group_sizes, rate=rate, inject=inject or [],
                    placement=parse_placement(place or []),
                    queue_types=(_choices(QueueType, queue_types, "--queue-types") if queue_types
                                 else []),
                    **options)


# -- compare -------------------------------------------------------------------------------
@app.command("compare")
def compare_cmd(
    topologies: Annotated[str, typer.Option(help="Topology names (files in topologies/) or "
                                            "paths, comma-separated.")] = ",".join(DEFAULT_TOPOLOGIES),
    layouts: Annotated[str, typer.Option(help="per-node, per-group")] = ",".join(LAYOUTS),
    nodes: Nodes = 2,
    groups: Annotated[int, typer.Option(help="Number of groups.")] = 6,
    group_size: GroupSize = 100,
    group_sizes: Annotated[str | None, typer.Option(
        help="One size per group, e.g. 100,100,300 (sets --groups).")] = None,
    rate: Annotated[float, typer.Option(help="Messages per second per group.")] = 10.0,
    size: Size = 1024,
    duration: Annotated[float, typer.Option(help="Seconds of publishing per run.")] = 5.0,
    swarm_processes: SwarmProcesses = 0,
    prefetch: Prefetch = None, ack: Ack = None, channel: Channel = None,
    concurrency: ConcurrencyOption = None,
    samples: Annotated[int, typer.Option(help="Raw deliveries to keep per run.")] = 0,
    budget_ms: BudgetMs = 50.0, inject: Inject = None, place: Place = None,
    listen_host: ListenHost = "127.0.0.1", repeat: Repeat = 1, drain: Drain = 15.0,
    ping_interval: PingInterval = 25.0, ping_timeout: PingTimeout = 20.0,
    tcp_keepalive: TcpKeepalive = 0.0,
    gate: Gate = False, queue_types: QueueTypes = None, amqp_url: AmqpUrl = None,
    management_url: ManagementUrl = None, prometheus_url: PrometheusUrl = None,
    json_path: JsonPath = None, run_dir: RunDir = None,
    html: Html = None, hdr_dir: HdrDir = None, png: PngDir = None,
) -> None:
    """Run the same workload on each topology x layout and say where the delay comes from."""
    from mqprobe.run.compare import compare

    sizes = _ints(group_sizes, "--group-sizes") if group_sizes else [group_size] * groups
    workload = _workload(
        _choices(Layout, layouts, "--layouts"), sizes, rate, topologies=topologies, nodes=nodes, size=size,
        duration_s=duration, swarm_processes=swarm_processes, prefetch=prefetch, ack=ack,
        channel=channel, concurrency=concurrency, samples=samples, budget_ms=budget_ms,
        inject=inject, place=place, listen_host=listen_host, repeat=repeat, drain_s=drain,
        queue_types=queue_types, ping_interval_s=ping_interval, ping_timeout_s=ping_timeout,
        tcp_keepalive_s=tcp_keepalive)
    _measure(workload, amqp_url, management_url, prometheus_url, json_path, run_dir,
             Outputs(html, hdr_dir, png),
             gate, print_compare,
             lambda url, apis, path, logs, observe: compare(workload, url, path, logs, observe,
                                                            *apis))


def _measure(workload: Workload, amqp_url: str | None, management_url: str | None,
             prometheus_url: str | None,
             json_path: Path | None, run_dir: Path | None, outputs: Outputs, gate: bool,
             render, measure) -> None:
    """Check the workload, get a broker, measure with progress bars, render, save."""
    workload.check()
    if (on_the_broker := workload.faults.on_the_broker) and amqp_url:
        raise InputError(f"--inject {', '.join(on_the_broker)} stops or slows the broker's own "
                         "processes: it acts on mqprobe's managed broker only (leave out "
                         "--amqp-url), never on yours")
    outputs.check()  # pictures asked for and no way to draw them: say so before measuring
    workload.resolved_topologies()  # a bad topology file fails before any broker starts
    if note := workload.unapplied_knobs():
        err.print(f"note: {note}", markup=False, highlight=False)
    # A broker that goes away is reported in the verdict, not by the AMQP libraries' logs
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    made = run_dir is None
    run_dir = run_dir or new_run_dir(Path("runs"))
    json_path = json_path or run_dir / "result.json"
    interrupted: int | None = None  # the signal that stopped it
    result: Comparison | None = None
    try:
        check_writable(json_path)  # before the run, not after it
        with broker_for(amqp_url) as (url, managed_api, managed_prometheus), \
                _progress() as (progress, observe):
            err.print(f"broker: {redact_url(url)}; logs in {run_dir}")
            if management_url:
                check_management(management_url)
            apis = (management_url or managed_api, prometheus_url or managed_prometheus)
            try:
                result = run_measuring(lambda: measure(url, apis, json_path, run_dir, observe))
            except RunInterrupted as exc:
                interrupted, result = exc.signum, exc.result or Comparison(())
            progress.stop()
    except (KeyboardInterrupt, Interrupted) as exc:
        if result is None:
            raise
        # it came while the broker stopped, after everything was measured and saved
        interrupted = interrupted or getattr(exc, "exit_code", 130) - 128
    except BaseException:
        if made:  # failed before anything was written: leave no empty runs/<time> behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    assert result is not None  # measured, or raised above
    measured = result
    render(measured, console)
    console.print(f"result JSON: {json_path}")
    outputs.write(measured)
    if interrupted:
        what = ("the last one partial" if measured.interrupted
                else "all complete: it came as the broker stopped")
        err.print(f"mqprobe: interrupted; the {len(measured.runs)} run(s) measured so far, "
                  f"{what}, are saved in {json_path}", markup=False)
        raise Interrupted(interrupted, said=True)
    runs = list(measured.runs)
    if prometheus_url and (silent := sum(run.broker.prometheus is False for run in runs)):
        err.print(f"warning: the Prometheus endpoint {redact_url(prometheus_url)} did not "
                  f"answer in {silent} of {len(runs)} run(s): their alarms (unless the "
                  "management API answered) and Erlang run queue are unknown, null in the "
                  "JSON", markup=False, highlight=False)
    _exit_as_measured(runs, json_path, gate)


def _exit_as_measured(runs: list[RunRecord], json_path: Path, gate: bool) -> None:
    """Exit as runner.exit_policy says, naming where the figures are."""
    code, why = exit_policy(runs, gate)
    if code == FAILED_EXIT:
        raise UserError(f"{why}; what they measured is in the table and {json_path}")
    if code:
        err.print(f"mqprobe: {why}; the figures are in {json_path}", markup=False)
        raise typer.Exit(code)


@app.command("sweep")
def sweep_cmd(
    groups: Annotated[str, typer.Option(help="Groups: LOW..HIGH (7 points) or a list 1,8,16; "
                                        "or one number when sweeping --rate.")] = "1..24",
    rate: Annotated[str, typer.Option(help="Msgs/s per group: one number, or LOW..HIGH / a "
                                      "list to sweep the rate instead.")] = "10",
    topologies: Annotated[str, typer.Option(help="Topology names or files.")]
        = ",".join(DEFAULT_TOPOLOGIES),
    layouts: Annotated[str, typer.Option(help="The layout swept (the first one given).")]
        = Layout.PER_NODE.value,
    nodes: Nodes = 2,
    group_size: GroupSize = 100,
    size: Size = 1024,
    duration: Annotated[float, typer.Option(help="Seconds of publishing per point.")] = 4.0,
    swarm_processes: SwarmProcesses = 0,
    prefetch: Prefetch = None, ack: Ack = None, channel: Channel = None,
    concurrency: ConcurrencyOption = None,
    budget_ms: BudgetMs = 50.0, inject: Inject = None, place: Place = None,
    listen_host: ListenHost = "127.0.0.1", repeat: Repeat = 1, drain: Drain = 15.0,
    ping_interval: PingInterval = 25.0, ping_timeout: PingTimeout = 20.0,
    tcp_keepalive: TcpKeepalive = 0.0,
    gate: Gate = False, queue_types: QueueTypes = None, amqp_url: AmqpUrl = None,
    management_url: ManagementUrl = None, prometheus_url: PrometheusUrl = None,
    json_path: JsonPath = None, run_dir: RunDir = None, html: Html = None, hdr_dir: HdrDir = None,
    png: PngDir = None,
) -> None:
    """Grow the load (groups or rate), show latency per hop against it, find the knee."""
    from mqprobe.run.sweep import at_load, parse_range, sweep

    rate_is_range = ".." in rate or "," in rate
    if rate_is_range:
        axis, values = SweepAxis.RATE, parse_range(rate, SweepAxis.RATE)
        base_groups, base_rate = int(parse_range(groups, SweepAxis.GROUPS)[0]), 1.0
    else:
        axis, values = SweepAxis.GROUPS, parse_range(groups, SweepAxis.GROUPS)
        try:
            base_rate = float(rate)
        except ValueError:
            raise UserError(f"--rate takes a number or LOW..HIGH, got {rate!r}") from None
        base_groups = int(values[0])
    workload = _workload(
        _choices(Layout, layouts, "--layouts")[:1], [group_size] * base_groups, base_rate,
        topologies=topologies, nodes=nodes, size=size, duration_s=duration,
        swarm_processes=swarm_processes, prefetch=prefetch, ack=ack, channel=channel,
        concurrency=concurrency, budget_ms=budget_ms, inject=inject, place=place,
        listen_host=listen_host, repeat=repeat, drain_s=drain, queue_types=queue_types,
        ping_interval_s=ping_interval, ping_timeout_s=ping_timeout, tcp_keepalive_s=tcp_keepalive)
    at_load(workload, axis, max(values)).check()  # the heaviest point, before anything starts
    _measure(workload, amqp_url, management_url, prometheus_url, json_path, run_dir,
             Outputs(html, hdr_dir, png),
             gate, print_result,
             lambda url, apis, path, logs, observe: sweep(workload, axis, values, url, path,
                                                          logs, observe, *apis))


class _progress:
    """A rich progress display fed by compare's observer: one bar per run."""

    def __enter__(self):
        # redrawn twice a second: at rich's 10 a second the bars cost compare 0.017 cores
        # on a terminal, more than all its samplers (BENCHMARKS, "What the instrument weighs")
        self.progress = Progress(TextColumn("{task.description:<34}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[phase]}"),
                                 TimeElapsedColumn(), console=err, transient=False,
                                 refresh_per_second=2)
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()
        return self.progress, self.observe

    def observe(self, phase: Phase) -> None:
        task = self.tasks.get(phase.run)
        if task is None:
            task = self.tasks[phase.run] = self.progress.add_task(
                phase.run.replace("_", " / "), total=None, phase="")
        note = f"{phase.phase} {phase.note}".strip()
        if phase.total:
            self.progress.update(task, completed=phase.done, total=phase.total, phase=note)
        else:
            self.progress.update(task, phase=note)
        if phase.phase in (RunPhase.DONE, RunPhase.FAILED):
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, total=total)

    def __exit__(self, *exc):
        self.progress.stop()
        return False


@dataclass
class Outputs:
    """The files a result is drawn into besides its JSON: HTML page, PNGs, HDR logs."""

    html: Path | None = None
    hdr_dir: Path | None = None
    png_dir: Path | None = None

    def check(self) -> None:
        if self.html or self.png_dir:
            from mqprobe.output.pictures import check_available

            check_available()

    def write(self, result: Comparison) -> None:
        from mqprobe.output.pictures import export_hdr_logs, write_html, write_pngs

        if self.html:
            console.print(f"pictures: {write_html(result, self.html)}")
        if self.png_dir:
            console.print(f"pictures: {len(write_pngs(result, self.png_dir))} PNG files in "
                          f"{self.png_dir}")
        if self.hdr_dir:
            console.print(f"HDR logs: {len(export_hdr_logs(result, self.hdr_dir))} files in "
                          f"{self.hdr_dir}")


# -- report --------------------------------------------------------------------------------
@app.command("report")
def report_cmd(run: Annotated[Path, typer.Argument(help="A result JSON (or its run dir).")],
               html: Html = None, hdr_dir: HdrDir = None, png: PngDir = None) -> None:
    """Render a saved run again, or a watch's episode log (trace --duration 0 --log)."""
    from mqprobe.output.trace_report import episodes_of, print_episodes

    outputs = Outputs(html, hdr_dir, png)
    outputs.check()
    if run.is_file() and (episodes := episodes_of(read_text_bounded(run))) is not None:
        print_episodes(episodes, console)
        return
    result = load_result(run)
    print_result(result, console)
    outputs.write(result)


# -- trace ---------------------------------------------------------------------------------
@app.command("trace")
def trace_cmd(
    group: Annotated[str, typer.Option("--group", help="The group to follow.")],
    socketio_url: Annotated[str, typer.Option(help="Your socket.io server(s), comma-separated.")]
        = "http://127.0.0.1:5000",
    clients: Annotated[int, typer.Option(help="Listening clients per server URL.")] = 1,
    publish: Annotated[float, typer.Option(help="Probe messages per second (0: listen only).")]
        = 0.0,
    exchange: Annotated[str | None, typer.Option(
        help="Your exchange, for probes (with --via socketio-manager: the manager's channel, "
        "default socketio).")] = None,
    exchange_type: Annotated[str, typer.Option(help="Its type (it must already exist).")]
        = "topic",
    routing_key: Annotated[str, typer.Option(help="Routing key of a group's messages.")]
        = "group.{group}",
    via: Annotated[str, typer.Option(
        help="How probes travel: amqp (mqprobe's headers, for servers that embed mqprobe) or "
        "socketio-manager (python-socketio's own manager format: no mqprobe code needed, "
        "e2e only).")] = "amqp",
    room: Annotated[str, typer.Option(help="With --via socketio-manager: the room a group's "
                                      "members are in.")] = "group.{group}",
    duration: Annotated[float, typer.Option(
        help="Seconds to listen (and probe); 0 watches until Ctrl-C, probing 1/s unless "
        "--publish says otherwise: a line when the group goes over --budget-ms, one when "
        "it recovers, with the episode's verdict.")] = 10.0,
    timeout: Annotated[float, typer.Option(help="A probe unseen this long is lost.")] = 5.0,
    log: Annotated[Path | None, typer.Option(
        "--log", help="With --duration 0: append each episode here as a JSON line "
        "(mqprobe report FILE renders them).")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="Replay the group from a "
                                                  "saved result JSON instead.")] = None,
    metrics_url: Annotated[str | None, typer.Option(
        help="Your servers' mqprobe.embed /metrics URLs, comma-separated: their pauses, "
        "loop CPU, link and queues, served beside them, for the verdict.")] = None,
    queue: Annotated[str | None, typer.Option(
        help="Your servers' queues, comma-separated, to read their depth (a backlog there is "
        "a consumer falling behind); by default those the servers name, or those bound to "
        "--exchange.")] = None,
    budget_ms: BudgetMs = 50.0,
    eio: Eio = "auto", amqp_url: AmqpUrl = None, management_url: ManagementUrl = None,
    json_path: JsonPath = None,
) -> None:
    """Follow one group's messages hop by hop, live on a running system or from a saved run,
    and say where a late message's time went: the MQ or the server, and why."""
    from mqprobe.output.trace_report import (
        print_episode,
        print_replayed,
        print_trace_line,
        print_trace_summary,
    )
    from mqprobe.run.trace import TraceConfig, live_trace, parse_groups, replay

    groups = parse_groups(group)
    watching = duration == 0
    if duration < 0 or (log and not watching):
        raise UserError("--duration takes seconds, or 0 to watch until Ctrl-C; --log goes "
                        "with --duration 0")
    if from_run:
        if len(groups) > 1:
            raise UserError("--from replays one group")
        group = groups[0]
        runs = replay(load_result(from_run), group)
        if not runs:
            raise UserError(f"group {group} is not in {from_run}")
        for run in runs:
            print_replayed(group, run, console)
        return
    urls = _csv(socketio_url, "--socketio-url")
    config = TraceConfig(group=group, socketio_urls=urls, clients=clients,
                         exchange=exchange, exchange_type=exchange_type,
                         routing_key=routing_key, rate=publish, duration_s=duration,
                         timeout_s=timeout, eio=_eio(eio), via=via, room=room,
                         metrics_urls=_csv(metrics_url, "--metrics-url") if metrics_url else [],
                         queues=_csv(queue, "--queue") if queue else [], budget_ms=budget_ms)
    if watching and not publish:
        config.rate = 1.0  # a watch probes at a low rate: enough to see an episode begin
    if log:
        check_writable(log)
    console.print(f"following group {', '.join(groups)} on {', '.join(urls)} "
                  + ("until Ctrl-C" if watching else f"for {duration:g} s")
                  + (f", {config.rate:g} probes/s into {config.probe_exchange}"
                     if config.rate else ""))
    uses_broker = config.rate or config.metrics_urls or config.queues or amqp_url
    quiet = (lambda line: None) if watching else (lambda line: print_trace_line(line, console))

    def on_episode(line: dict) -> None:
        print_episode(line, console)
        if log and line["kind"] == TraceLine.EPISODE:
            with log.open("a") as file:
                file.write(json.dumps(line, separators=(",", ":")) + "\n")

    with (broker_for(amqp_url) if uses_broker else contextlib.nullcontext((None, None, ""))
          ) as (url, managed_api, _):
        config.amqp_url, config.management_url = url, management_url or managed_api
        summary = (run_measuring if watching else _run)(
            lambda: live_trace(config, quiet, on_episode))
    print_trace_summary(summary, console)
    if json_path:
        save(summary, json_path)
    lost = sum(g["probes_lost"] for g in summary.get("groups", {"": summary}).values())
    sent = sum(g["probes_sent"] for g in summary.get("groups", {"": summary}).values())
    if lost:
        raise UserError(f"{lost} of {sent} probes were lost")


# -- top -----------------------------------------------------------------------------------
@app.command("top")
def top_cmd(
    metrics_url: Annotated[str, typer.Option(
        help="The nodes' metrics endpoints (mqprobe.embed's /metrics), comma-separated.")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    groups: Annotated[int, typer.Option(help="Busiest groups to show.")] = 10,
    once: Annotated[bool, typer.Option(
        "--once", help="Scrape twice, an interval apart (for rates), print, and end.")] = False,
) -> None:
    """Per node and per group, the hop percentiles your servers export, refreshed."""
    from rich.live import Live

    from mqprobe.output.report import top_view
    from mqprobe.output.top import check_urls, scrape

    urls = _csv(metrics_url, "--metrics-url")
    check_urls(urls)
    for problem in (within("--interval", interval, 0.2, 3600), within("--groups", groups, 1, 1000)):
        if problem:
            raise UserError(problem)

    async def watch() -> None:
        previous: dict = {}

        def remember(round_) -> None:
            previous.update({(v.url, v.node): v for v in round_.views})

        first = await scrape(urls)
        if once:
            remember(first)
            await asyncio.sleep(interval)
            latest = await scrape(urls)
            console.print(top_view(latest, previous, groups))
            if not latest.views:  # a script reading --once must not take silence for health
                raise UserError(f"none of the {len(urls)} --metrics-url endpoint(s) answered "
                                 "with mqprobe's metrics")
            return
        with Live(top_view(first, previous, groups), console=console, auto_refresh=False) as live:
            remember(first)
            while True:
                await asyncio.sleep(interval)
                latest = await scrape(urls)
                live.update(top_view(latest, previous, groups), refresh=True)
                remember(latest)

    try:
        _run(watch)
    except KeyboardInterrupt:  # the way out of a live view: not a failure
        pass


# -- broker --------------------------------------------------------------------------------
StateDir = Annotated[Path | None, typer.Option(
    "--state-dir", envvar="MQPROBE_BROKER_DIR", help="Where the broker's files live.")]


@broker_app.command("up")
def broker_up(state_dir: StateDir = None) -> None:
    """Start the throwaway broker (or show the one running)."""
    broker = ManagedBroker(state_dir)
    with broker.locked(), console.status("starting rabbitmq-server on loopback..."):
        broker.up()
        broker.keep()  # started (or adopted) here: it stays until `broker down`
    _print_status(broker.status())


@broker_app.command("down")
def broker_down(state_dir: StateDir = None) -> None:
    """Stop the throwaway broker and delete its files."""
    broker = ManagedBroker(state_dir)
    with broker.locked():
        stopped = broker.down()
    console.print("broker stopped" if stopped else "no managed broker was running")


@broker_app.command("url")
def broker_url(state_dir: StateDir = None,
               show_password: Annotated[bool, typer.Option(
                   "--show-password", help="Print the password too (for a server of yours "
                   "to connect with); never shown otherwise.")] = False) -> None:
    """The managed broker's AMQP URL, for your own server in any language."""
    state = ManagedBroker(state_dir).running_state()
    if state is None:
        raise UserError("no managed broker runs: start one with `mqprobe broker up`")
    print(state.amqp_url if show_password else redact_url(state.amqp_url))


@broker_app.command("status")
def broker_status(state_dir: StateDir = None,
                  json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Is the throwaway broker running, and where."""
    status = ManagedBroker(state_dir).status()
    if json_out:
        console.print_json(data=status)
    else:
        _print_status(status)
    if not status["running"]:
        raise typer.Exit(1)


@app.command("cleanup")
def cleanup_cmd(
    amqp_url: AmqpUrl = None, management_url: ManagementUrl = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only list what is left and what would be removed.")] = False,
) -> None:
    """List, then remove, the queues and exchanges mqprobe left on a broker (runs remove
    their own; this is for a run killed with SIGKILL or cut off from the broker)."""
    from mqprobe.broker.cleanup import leftovers, remove_leftovers
    from mqprobe.broker.connect import check_reachable, default_management_url
    from mqprobe.output.report import print_leftovers

    if amqp_url:
        check_reachable(amqp_url)
    else:
        state = ManagedBroker().running_state()
        if state is None:
            raise UserError("no managed broker runs (its queues go with it when it stops): "
                            "give --amqp-url to clean up your own broker")
        amqp_url, management_url = state.amqp_url, management_url or state.management_url
    found = _run(lambda: leftovers(amqp_url, management_url or default_management_url(amqp_url)))
    outcome: dict[str, list] = {"removed": [], "left": []}
    if found and not dry_run:
        outcome = _run(lambda: remove_leftovers(amqp_url, found))
    print_leftovers(found, outcome, dry_run, redact_url(amqp_url), console)


def _print_status(status: dict) -> None:
    if not status["running"]:
        console.print(f"no managed broker running (state dir {status['state_dir']})")
        return
    console.print(f"RabbitMQ {status.get('version', '?')} running, pid {status['pid']}\n"
                  f"  amqp:       {status['amqp_url']}\n"
                  f"  management: {status['management_url']}\n"
                  f"  state:      {status['state_dir']} (credentials in state.json, mode 600; "
                  "mqprobe commands find it without --amqp-url)")


# -- the pieces ----------------------------------------------------------------------------
def _piece(json_path: Path | None, runtime: Callable[[], PieceRuntime],
           render: Callable[[dict], None] | None = None) -> None:
    """Run a piece by hand through process.serve, until its work is done or a signal
    stops it; its result printed (and saved). Compare's pieces run as mqprobe.pieces.piece."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = _run(lambda: serve(runtime(), control=False))
    if json_path:
        save(result, json_path)
    console.print_json(data={k: v for k, v in result.items()
                             if k not in ("hops", "fanout", "loop_lag", "self_lag",
                                          "schedule_lag", "samples", "timeline",
                                          "messages", "emits")})
    if render:
        render(result)


def _run_piece(config: PieceConfig, amqp_url: str | None = None, json_path: Path | None = None,
               render: Callable[[dict], None] | None = None) -> None:
    """A piece by hand, made as compare's are (pieces.piece.runtime_for), on the broker
    (ours, started on demand, without --amqp-url) when it needs one."""
    from mqprobe.pieces.piece import runtime_for

    make, needs_broker = runtime_for(config)
    if not needs_broker:
        _piece(json_path, lambda: make(""), render)
        return
    with broker_for(amqp_url) as (url, _, _):
        _piece(json_path, lambda: make(url), render)


def _render_swarm(result: dict) -> None:
    print_connections(result, console)
    print_hops(result, console)
    if result["planned"] and not result["joined"]:
        raise UserError(f"no client joined its group ({result['first_error']})")


@app.command("node")
def node_cmd(
    topology: Annotated[str, typer.Option(help="Topology name or file.")] = "single-topic",
    layout: Annotated[Layout, typer.Option(help="One queue per node, or per group.")
                      ] = Layout.PER_NODE,
    groups: Annotated[str, typer.Option(help="Group ids this node hosts.")] = "1,2,3",
    node_id: Annotated[str, typer.Option(help="Name carried in the trace.")] = "n1",
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port (0: any free one).")] = 5000,
    prefix: Annotated[str, typer.Option(help="Prefix of exchange and queue names.")] = "mqprobe.",
    prefetch: Prefetch = None, ack: Ack = None, channel: Channel = None,
    concurrency: ConcurrencyOption = None, inject: Inject = None,
    amqp_url: AmqpUrl = None, json_path: JsonPath = None,
) -> None:
    """A reference socket.io node consuming group messages (runs until stopped)."""
    from mqprobe.pieces.inject import parse_injections
    from mqprobe.pieces.node import NodeConfig

    faults = parse_injections(inject or [])
    topo = resolve(topology).with_knobs(prefetch=faults.prefetch or prefetch, ack=ack,
                                        channel=channel, concurrency=concurrency)
    _run_piece(NodeConfig(node_id=node_id, amqp_url="", topology=topo, layout=layout,
                          groups=_csv(groups, "--groups"), prefix=prefix, host=host,
                          port=port, faults=faults), amqp_url, json_path=json_path)


@app.command("swarm")
def swarm_cmd(
    node_urls: Annotated[str, typer.Option(help="socket.io servers, comma-separated.")]
        = "http://127.0.0.1:5000",
    group_sizes: Annotated[str, typer.Option(help="Members per group: 100,100,300.")] = "100",
    slice_: Annotated[str, typer.Option("--slice", help="i/K: this process's share.")] = "0/1",
    samples: Annotated[int, typer.Option(help="Raw deliveries to keep.")] = 0,
    eio: Eio = "auto", json_path: JsonPath = None,
) -> None:
    """Thousands of socket.io clients in one process, joined to their group rooms."""
    from mqprobe.pieces.swarm import SwarmConfig

    try:
        index, count = (int(part) for part in slice_.split("/"))
    except ValueError:
        raise UserError(f"--slice must be i/K with 0 <= i < K, got {slice_!r}") from None
    sizes = _ints(group_sizes, "--group-sizes")
    _run_piece(SwarmConfig(node_urls=_csv(node_urls, "--node-urls"),
                           group_sizes={str(i + 1): n for i, n in enumerate(sizes)},
                           slice_index=index, slice_count=count, samples=samples,
                           eio=_eio(eio)),
               json_path=json_path, render=_render_swarm)


def _eio(value: str) -> int | None:
    """--eio: 3, 4, or auto (None: each server's preflight handshake finds it)."""
    try:
        eio = EngineIO(value)
    except ValueError:
        raise UserError(f"--eio must be 3, 4 or auto, got {value!r}") from None
    return None if eio is EngineIO.AUTO else int(eio)


@app.command("publish")
def publish_cmd(
    topology: Annotated[str, typer.Option(help="Topology name or file.")] = "single-topic",
    groups: Annotated[str, typer.Option(help="Group ids, comma-separated.")] = "1,2,3",
    rate: Annotated[float, typer.Option(help="Messages per second per group.")] = 10.0,
    size: Annotated[int, typer.Option(help="Body bytes.")] = 1024,
    duration: Annotated[float, typer.Option(help="Seconds.")] = 5.0,
    prefix: Annotated[str, typer.Option(help="Prefix of exchange names.")] = "mqprobe.",
    exchange: Annotated[str | None, typer.Option(
        help="Publish into this existing exchange as it is (declared passively: nothing is "
             "created); routing keys come from the topology.")] = None,
    inject: Inject = None,
    amqp_url: AmqpUrl = None, json_path: JsonPath = None,
) -> None:
    """Publish stamped group messages on a fixed schedule, with publisher confirms."""
    from mqprobe.pieces.inject import parse_injections
    from mqprobe.pieces.publisher import PublishConfig

    _run_piece(PublishConfig(amqp_url="", topology=resolve(topology),
                             groups=_csv(groups, "--groups"), rate=rate, size=size,
                             duration_s=duration, prefix=prefix, exchange=exchange,
                             broker_delay_ms=parse_injections(inject or []).broker_delay_ms),
               amqp_url, json_path=json_path)


@app.command("agent")
def agent_cmd(
    name: Annotated[str, typer.Option(help="What `--place` calls this host.")]
        = socket.gethostname().split(".")[0],
    listen_host: Annotated[str, typer.Option(
        help="Address nodes started here listen on, and that swarms elsewhere connect to. "
             "Loopback by default: give this host's address to be reached from others.")]
        = "127.0.0.1",
    amqp_url: AmqpUrl = None,
) -> None:
    """Run pieces here for a compare or sweep on another host; records go back over the broker."""
    from mqprobe.clocks import clock_id
    from mqprobe.pieces.agent import Agent

    with broker_for(amqp_url) as (url, _, _):
        agent = Agent(name, url, listen_host)

        def ready(agent: Agent) -> None:
            err.print(f"agent {agent.name} ready on {redact_url(url)} (clock {clock_id()}); "
                      f"pieces' logs in {agent.work_dir}; Ctrl-C stops it")

        _run(lambda: agent.run(ready))


def main() -> None:
    """Entry point: every expected failure ends in one sentence and a non-zero exit."""
    from mqprobe.stamps import CLOCK_SKEW_PROBLEM

    if CLOCK_SKEW_PROBLEM:
        err.print(f"mqprobe: {CLOCK_SKEW_PROBLEM}", markup=False, highlight=False)
        sys.exit(2)
    # SIGTERM and SIGHUP unwind like Ctrl-C (context managers stop what they started), they
    # never just kill us with a broker of ours left running
    for signum in STOPPING[1:]:
        signal.signal(signum, raise_interrupted)
    try:
        _main()
    finally:
        # Python resets its handlers to the default (die by the signal) as it shuts down: a
        # last impatient Ctrl-C then would kill us with -2 instead of the exit code we chose
        for signum in STOPPING:
            signal.signal(signum, signal.SIG_IGN)


def _main() -> None:
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit
        if isinstance(code, int) and code:
            sys.exit(code)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        err.print(f"mqprobe: {exc.format_message()}{hint}", markup=False, highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("mqprobe: interrupted")
        sys.exit(130)
    except Interrupted as exc:
        if not exc.said:
            err.print(f"mqprobe: interrupted ({exc})", markup=False)
        sys.exit(exc.exit_code)
    except (UserError, *USER_ERRORS) as exc:
        err.print(f"mqprobe: {_sentence(exc)}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("mqprobe: interrupted")
        sys.exit(130)


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return text.splitlines()[0]

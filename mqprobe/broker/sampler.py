"""The broker as evidence during a run: each queue's depth over AMQP, alarms and flow
control from the management API or the Prometheus endpoint, and the times the broker did
not answer, on the run's timeline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.error
import urllib.parse
import urllib.request

from mqprobe.broker.connect import management_get, one_line
from mqprobe.broker.link import MAX_PINGS, connection_socket, tcp_rtt_ns
from mqprobe.figures import BacklogGrowth, BrokerEvidence
from mqprobe.stamps import now_ns
from mqprobe.timeline import EventKind, IntervalTracker, Recorder, TimedEvent

UNRESPONSIVE_NS = 1_000_000_000  # a depth sample on loopback takes milliseconds
# The Prometheus exposition is ~80 KB of text: a scrape costs compare ~13 ms of CPU to
# parse and the broker ~10 ms to render; at every depth sample (twice a second) it took 3%
# of a core from the system measured (a one-core compare's own CPU was 2.5x with it). Most
# of its figures change once per statistics interval (1 s on the managed broker), so it is
# read every API_EVERY depth samples, once a second, and so is the management API (whose
# figures refresh as slowly); the queue depths, over AMQP, every interval_s.
API_EVERY = 2


class QueueSampler:
    """What the coordinator sees of the broker while a run measures.

    Queue depth over time (AMQP passive declares: exact, no plugin needed), turned into
    backlog intervals on the timeline; when the management API answers, memory and disk
    alarms (intervals too) and flow-controlled connections. When the broker cannot be
    reached, that is an interval of its own (broker-unavailable), and sampling goes on
    reconnecting, so a broker that comes back is seen to.
    """

    def __init__(self, amqp_url: str, queues: list[str], management_url: str | None = None,
                 interval_s: float = 0.5, owners: dict[str, str] | None = None,
                 management_given: bool = True, not_sampled: str = "",
                 prometheus_url: str = "", api_every_s: float | None = None) -> None:
        self.amqp_url, self.management_url, self.interval_s = amqp_url, management_url, interval_s
        self.api_every_s = api_every_s or interval_s * API_EVERY
        self.management_given = management_given  # False: we guessed the default port
        self.names = list(queues)
        self.owners = owners or {}  # queue -> the node consuming it
        self.not_sampled = not_sampled  # why some queues' depth is not read
        self.prometheus_url = prometheus_url
        self.prometheus_ok = 0
        self.prometheus_error = ""
        self.run_queue_max = 0.0
        # (ns, ms) of the Erlang VM's CPU at each scrape that gave it: a remote broker's CPU
        self.runtime: list[tuple[int, float]] = []
        self.series: dict[str, list[list[float]]] = {}
        self.alarms: set[str] = set()
        self.blocked_max = 0
        self.errors = 0
        self.management_ok = 0
        self.management_error = ""
        self.started_ns = 0
        self.events = Recorder("broker")
        self._down = IntervalTracker(self.events, EventKind.BROKER_UNAVAILABLE)
        self._alarm = IntervalTracker(self.events, EventKind.BROKER_ALARM)
        self.unavailable_reason = ""
        self._sample_started = 0
        # compare's own link to the broker, a control beside the pieces': each depth
        # sample's first declare timed, as broker.link.LinkWatch rows
        self.link: list[list[int]] = []
        self._socket_of: object = None  # the connection whose socket is known
        self._socket: socket.socket | None = None

    def _raised(self, raised: list[str]) -> None:
        """An alarm interval begins with the first sample that shows one, and ends with the
        first that shows none (which keeps the alarms it had: it is what it ends)."""
        self.alarms.update(raised)
        if raised:
            self._alarm.detail = {"alarms": raised}
            self._alarm.begin()
        else:
            self._alarm.end()

    def _prometheus_sample(self) -> None:
        """Alarms, the Erlang run queue and the VM's CPU from rabbitmq_prometheus."""
        from mqprobe.broker.prometheus import read_broker

        metrics = read_broker(self.prometheus_url, set())  # depth comes over AMQP
        self._raised(list(metrics.alarms))
        self.run_queue_max = max(self.run_queue_max, metrics.run_queue)
        if metrics.runtime_ms is not None:
            self.runtime.append((now_ns(), metrics.runtime_ms))

    def _management_sample(self) -> None:
        """Memory/disk alarms and connections under flow control."""
        raised = []
        url = self.management_url or ""  # asked only when there is one
        for node in management_get(url,
                                   "/api/nodes?columns=name,mem_alarm,disk_free_alarm"):
            for alarm in ("mem_alarm", "disk_free_alarm"):
                if node.get(alarm):
                    raised.append(f"{alarm} on {node.get('name')}")
        if not self.prometheus_ok:  # alarms come from one source: the endpoint if it answers
            self._raised(raised)
        connections = management_get(url, "/api/connections?columns=state")
        blocked = sum(1 for c in connections if c.get("state") in ("blocked", "blocking", "flow"))
        self.blocked_max = max(self.blocked_max, blocked)

    def _growth(self, name: str) -> BacklogGrowth | None:
        """How the deepest queue's backlog built up: from its last empty sample to its peak,
        the messages a second that came in beyond what its consumer took."""
        points = self.series.get(name, [])
        if not points:
            return None
        peak_at = max(range(len(points)), key=lambda i: points[i][1])
        empty_at = max((i for i in range(peak_at) if points[i][1] == 0), default=0)
        (t0, ready0, _), (t1, ready1, _) = points[empty_at], points[peak_at]
        if t1 <= t0:
            return None
        return BacklogGrowth(t0, t1, int(ready1), round((ready1 - ready0) / (t1 - t0), 1))

    async def run(self) -> None:
        """Sample until cancelled; a failed sample is counted, never fatal. The management
        API and the Prometheus endpoint are read in a task of their own: an HTTP call to a
        frozen broker hangs for as long as it is frozen, and once held the depth samples
        behind it (a depth read after the broker came back was dated before it froze)."""
        self.started_ns = now_ns()
        apis = (asyncio.get_running_loop().create_task(self._read_apis())
                if self.prometheus_url or self.management_url else None)
        connection = channel = None
        try:
            while True:
                connection, channel = await self._sample_depths(connection, channel)
                await asyncio.sleep(self.interval_s)
        finally:
            if apis:
                apis.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await apis
            self._unresponsive_since(self._sample_started)  # still waiting for an answer
            if self._down.since:  # never came back while we sampled
                self._down.detail = {"until_end": True}
            self._down.end()
            self._alarm.end()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 3)

    async def _read_apis(self) -> None:
        """The Prometheus endpoint and the management API, every API_EVERY depth intervals."""
        while True:
            if self.prometheus_url:
                try:
                    await asyncio.to_thread(self._prometheus_sample)
                    self.prometheus_ok += 1
                except (OSError, ValueError, TypeError, urllib.error.URLError) as exc:
                    self.errors += 1
                    self.prometheus_error = one_line(exc)
            if self.management_url:
                try:
                    await asyncio.to_thread(self._management_sample)
                    self.management_ok += 1
                except (OSError, ValueError, TypeError, AttributeError,
                        urllib.error.URLError) as exc:
                    self.errors += 1
                    self.management_error = one_line(exc)
            await asyncio.sleep(self.api_every_s)

    async def _sample_depths(self, connection, channel):
        """One depth sample of every queue. A broker that did not answer it within a second
        (paused, swapping, overloaded) was unavailable for that long, as one that refused."""
        self._sample_started = started = now_ns()
        connection, channel = await self._depths(connection, channel, started)
        self._unresponsive_since(started)
        self._sample_started = 0
        return connection, channel

    def _unresponsive_since(self, started: int) -> None:
        """A sample under way since `started` that is overdue: the broker did not answer."""
        if started and now_ns() - started > UNRESPONSIVE_NS and not self._down.since:
            self.events.add(EventKind.BROKER_UNAVAILABLE, started, now_ns(), unresponsive=True)

    def _lost_touch(self, exc: BaseException, started: int) -> None:
        """A broker that refused or closed the connection is down from `started`; one that
        only did not answer in time (paused, swapping) is not: the overdue sample says it
        was unresponsive (_unresponsive_since)."""
        self.unavailable_reason = one_line(exc) or type(exc).__name__
        if not isinstance(exc, TimeoutError):
            self._down.begin(at=started)

    async def _depths(self, connection, channel, started: int):
        """(Re)connect if need be, then read every queue's depth, each dated when it was
        answered (a broker that answered late read its queue then); tracks when it cannot."""
        import aio_pika

        try:
            if connection is None or connection.is_closed:
                connection = await aio_pika.connect(self.amqp_url, timeout=2)
                channel = await connection.channel()
            self._down.end()
        except Exception as exc:  # the broker is gone (or going), or did not answer
            self.errors += 1
            self._lost_touch(exc, started)
            return None, None
        for i, name in enumerate(list(self.names)):
            sent = now_ns()
            try:
                queue = await asyncio.wait_for(channel.declare_queue(name, passive=True), 2)
                if i == 0 and len(self.link) < MAX_PINGS:
                    if self._socket_of is not connection:  # found once a connection
                        self._socket_of, self._socket = connection, connection_socket(connection)
                    self.link.append([sent, now_ns() - sent, tcp_rtt_ns(self._socket)])
            except Exception:  # gone or not yet there: the channel is closed by it
                self.errors += 1
                try:
                    channel = await asyncio.wait_for(connection.channel(), 2)
                except Exception as exc:
                    self._lost_touch(exc, started)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 1)
                    return None, None
                continue
            t_s = round((now_ns() - self.started_ns) / 1e9, 2)
            self.series.setdefault(name, []).append(
                [t_s, queue.declaration_result.message_count,
                 queue.declaration_result.consumer_count])
        return connection, channel

    def timeline(self) -> list[TimedEvent]:
        """What the broker went through, as intervals on our clock: unreachable, alarms,
        and each queue's backlogs (from the first sample that held ready messages to the
        next that held none)."""
        events = list(self.events.events)
        half = int(self.interval_s * 1e9 / 2)
        for name, points in self.series.items():
            start: int | None = None
            peak = 0.0
            for t_s, ready, _consumers in [*points, [points[-1][0] + self.interval_s, 0, 0]]:
                at = self.started_ns + int(t_s * 1e9)
                if ready and start is None:
                    start, peak = at - half, ready
                elif ready:
                    peak = max(peak, ready)
                elif start is not None:
                    events.append(TimedEvent(EventKind.QUEUE_BACKLOG, "broker", start, at - half,
                                             {"queue": name, "node": self.owners.get(name, ""),
                                              "ready_max": int(peak)}))
                    start = None
        return events

    def ready_at_end(self) -> int:
        """Messages ready in the run's queues at the last sample: still on their way."""
        return int(sum(points[-1][1] for points in self.series.values() if points))

    def summary(self) -> BrokerEvidence:
        peak_queue, peak = "", 0.0
        for name, points in self.series.items():
            for _t, ready, _consumers in points:
                if ready > peak:
                    peak_queue, peak = name, ready
        management_reason = ""
        if self.management_url and not self.management_ok:
            how = "given" if self.management_given else "tried on its default port 15672"
            management_reason = (f"the management API ({how}) did not answer: "
                                 f"{self.management_error or 'no sample completed'}")
        prometheus_reason = ""
        if self.prometheus_url and not self.prometheus_ok:
            prometheus_reason = ("the Prometheus endpoint did not answer: "
                                 f"{self.prometheus_error or 'no sample completed'}")
        # which source answered: queue depth always over AMQP; alarms from the Prometheus
        # endpoint when it answered, else the management API; flow control from the latter
        sources = ("amqp", *(("prometheus",) if self.prometheus_ok else ()),
                   *(("management",) if self.management_ok else ()))
        return BrokerEvidence(
            available=True, interval_s=self.interval_s, max_ready=int(peak),
            max_ready_queue=peak_queue, backlog_growth=self._growth(peak_queue),
            management_api=self.management_ok > 0,
            # what no source answered for is unknown, never none
            alarms=tuple(sorted(self.alarms)) if self.management_ok or self.prometheus_ok
            else None,
            blocked_connections_max=self.blocked_max if self.management_ok else None,
            sample_errors=self.errors,
            queues=dict(self.series), management_reason=management_reason,
            unavailable_reason=self.unavailable_reason, depth_not_sampled=self.not_sampled,
            sources=sources, prometheus=(self.prometheus_ok > 0) if self.prometheus_url else None,
            erlang_run_queue_max=self.run_queue_max if self.prometheus_ok else None,
            prometheus_reason=prometheus_reason)

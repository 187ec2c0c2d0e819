"""Reaching a broker: its URL (never printed with its password), one sentence for why a
connection failed, and its management API."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mqprobe.errors import MqprobeError, url_problem
from mqprobe.model import AmqpEntity


class BrokerError(MqprobeError):
    """A broker could not be started, reached or stopped; the message is one sentence."""


def redact_url(url: str) -> str:
    """The URL with its password replaced, safe to print or save."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL we can take apart: say nothing of it
        return "<a URL that cannot be read>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_heartbeat(amqp_url: str, seconds: int) -> str:
    """The URL asking for AMQP heartbeats every `seconds`, unless it names its own: a peer
    that vanishes (no FIN, no RST) is dropped by RabbitMQ after two missed beats, and its
    exclusive queue with it, where the broker's default (60 s) kept them for minutes."""
    parts = urllib.parse.urlsplit(amqp_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "heartbeat" for key, _value in query):
        return amqp_url
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode([*query, ("heartbeat", str(seconds))])))


def http_request(url: str, path: str = "") -> urllib.request.Request:
    """A GET of `url` + `path` whose credentials, if the URL has any, go in an Authorization
    header: urllib takes `user:pass@host` for a host name (and then says it is unknown)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc))
                                     + path)
    if parts.username:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode())
        request.add_header("Authorization", f"Basic {token.decode()}")
    return request


def management_get(management_url: str, path: str, timeout: float = 3.0) -> Any:
    """GET a management API path (e.g. '/api/overview') and return the decoded JSON."""
    parts = urllib.parse.urlsplit(management_url)
    base = urllib.parse.urlunsplit(parts._replace(path="", query="", fragment=""))
    with urllib.request.urlopen(http_request(base, path), timeout=timeout) as response:
        return json.loads(response.read())


def bound_queues(management_url: str, amqp_url: str, exchange: str) -> list[str]:
    """The queues bound to an exchange (its virtual host's, as the AMQP URL names it), by
    the management API: a server's queues when it names none (python-socketio's manager
    declares a server-named one per node). Empty when the API cannot say."""
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:]) or "/"
    path = (f"/api/exchanges/{urllib.parse.quote(vhost, safe='')}/"
            f"{urllib.parse.quote(exchange, safe='')}/bindings/source")
    try:
        bindings = management_get(management_url, path)
    except (OSError, ValueError, urllib.error.URLError):
        return []
    return sorted({b["destination"] for b in bindings if isinstance(b, dict)
                   and b.get("destination_type") == AmqpEntity.QUEUE and b.get("destination")})


def check_management(management_url: str) -> None:
    """A management API the user named must answer (a wrong password or a wrong port would
    otherwise cost the run its alarms and queue evidence without a word)."""
    try:
        management_get(management_url, "/api/overview")
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise BrokerError(f"the management API at {redact_url(management_url)} did not answer: "
                          f"{str(reason).splitlines()[0][:160] if str(reason) else type(exc).__name__}"
                          ) from None


def check_reachable(amqp_url: str, timeout: float = 5.0) -> None:
    """Raise BrokerError with one sentence when the broker at `amqp_url` cannot be reached."""
    if problem := url_problem("--amqp-url", amqp_url, ("amqp", "amqps"),
                              "amqp://user:pass@host:5672/"):
        raise BrokerError(problem)
    parts = urllib.parse.urlsplit(amqp_url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the broker at {redact_url(amqp_url)}: {exc.strerror or exc}"
        ) from None


def connect_problem(exc: BaseException, amqp_url: str) -> BrokerError:
    """One sentence for why an AMQP connection to amqp_url failed (never the password)."""
    parts = urllib.parse.urlsplit(amqp_url)
    where = f"the broker at {redact_url(amqp_url)}"
    text = str(exc)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    if isinstance(exc, ssl.SSLError) or "[SSL" in text:  # aiormq may wrap it
        return BrokerError(f"{where} did not answer TLS: amqps:// needs a TLS port; for a "
                           "plain AMQP port use amqp://")
    if "ACCESS_REFUSED" in text or type(exc).__name__ == "ProbableAuthenticationError":
        return BrokerError(f"{where} refused the login of user {parts.username or 'guest'!r}: "
                           "check the user name and password")
    if "NOT_ALLOWED" in text or "vhost" in text or "Connection.Close" in text:
        return BrokerError(f"{where} refused virtual host {vhost!r}: it does not exist, or user "
                           f"{parts.username or 'guest'!r} may not use it")
    if isinstance(exc, OSError | TimeoutError):
        return BrokerError(f"cannot reach {where}: {getattr(exc, 'strerror', None) or exc}")
    return BrokerError(f"{where} refused the connection: {type(exc).__name__}: "
                       f"{text.splitlines()[0][:200] if text else ''}")


def default_management_url(amqp_url: str) -> str:
    """The management API a broker usually has: same host and credentials, port 15672."""
    parts = urllib.parse.urlsplit(amqp_url)
    auth = ""
    if parts.username:
        auth = urllib.parse.quote(urllib.parse.unquote(parts.username), safe="")
        if parts.password is not None:
            auth += ":" + urllib.parse.quote(urllib.parse.unquote(parts.password), safe="")
        auth += "@"
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{auth}{host}:15672/"


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__

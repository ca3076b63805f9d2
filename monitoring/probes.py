"""One probe of one URL: a TCP connect, or an HTTP HEAD/GET. Network only, no database, so the
prober can run many of these in threads while a single connection writes the results.

OK means the connection was made (TCP) or the server answered with a status below 500 (a 401
from an API endpoint still proves it is up). Failures carry one of the ProbeLog error types.
"""

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .models import ProbeErrorType

METHODS = ("tcp", "head", "get")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status_code: int | None = None
    latency_ms: int | None = None
    error_type: str = ""
    error_message: str = ""


class InvalidURL(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_target(url: str) -> Target:
    """http(s) URL -> where to connect. Anything else is an InvalidURL naming what is wrong."""
    text = (url or "").strip()
    if not text:
        raise InvalidURL("Invalid URL: empty")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidURL("Invalid URL: contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"Invalid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"Invalid URL: scheme must be http or https, not {scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidURL("Invalid URL: no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path)


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


def _timeout(started: float, timeout_s: float) -> ProbeResult:
    return ProbeResult(
        ok=False,
        latency_ms=_elapsed_ms(started),
        error_type=ProbeErrorType.TIMEOUT,
        error_message=f"Timed out after {round(timeout_s * 1000)} ms",
    )


def _network_error(started: float, exc: BaseException) -> ProbeResult:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ProbeResult(
        ok=False,
        latency_ms=_elapsed_ms(started),
        error_type=ProbeErrorType.NETWORK_ERROR,
        error_message=f"{type(exc).__name__}: {text}",
    )


def probe_tcp(target: Target, timeout_s: float) -> ProbeResult:
    started = time.monotonic()
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout_s)
    except TimeoutError:
        return _timeout(started, timeout_s)
    except OSError as exc:
        return _network_error(started, exc)
    latency = _elapsed_ms(started)
    sock.close()
    return ProbeResult(ok=True, latency_ms=latency)


class NoStatus(Exception):
    """The server closed or answered without an HTTP status line."""


def _http_status(target: Target, method: str, deadline: float) -> int:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=remaining, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=remaining)
    try:
        conn.request(method, target.path, headers={"User-Agent": "hub-prober/1", "Accept": "*/*"})
        if conn.sock is not None:
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
            raise NoStatus(str(exc) or type(exc).__name__) from exc
        # Only the status line and headers are read: the body does not matter and may be large.
        return response.status
    finally:
        conn.close()


def probe_http(target: Target, method: str, timeout_s: float) -> ProbeResult:
    """HEAD (or GET). With HEAD, a server that answers no status line gets a GET within the
    same time budget: some endpoints drop HEAD requests."""
    started = time.monotonic()
    deadline = started + timeout_s
    methods = ["HEAD", "GET"] if method == "head" else ["GET"]
    status = None
    try:
        for attempt in methods:
            try:
                status = _http_status(target, attempt, deadline)
                break
            except NoStatus as exc:
                if attempt == methods[-1]:
                    return _network_error(started, exc)
    except (TimeoutError, socket.timeout):
        return _timeout(started, timeout_s)
    except ssl.SSLError as exc:
        return _network_error(started, exc)
    except (OSError, http.client.HTTPException) as exc:
        return _network_error(started, exc)
    latency = _elapsed_ms(started)
    if status >= 500:
        reason = http.client.responses.get(status, "")
        return ProbeResult(
            ok=False,
            status_code=status,
            latency_ms=latency,
            error_type=ProbeErrorType.HTTP_5XX,
            error_message=f"HTTP {status} {reason}".rstrip(),
        )
    return ProbeResult(ok=True, status_code=status, latency_ms=latency)


def probe_url(url: str, *, method: str = "tcp", timeout_ms: int = 5000) -> ProbeResult:
    """Probe `url` once; never raises for anything the network or the URL can do."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    try:
        target = parse_target(url)
    except InvalidURL as exc:
        return ProbeResult(ok=False, error_type=ProbeErrorType.INVALID_URL, error_message=str(exc))
    timeout_s = timeout_ms / 1000
    try:
        if method == "tcp":
            return probe_tcp(target, timeout_s)
        return probe_http(target, method, timeout_s)
    except Exception as exc:  # a probe must always produce a log line, whatever broke
        return ProbeResult(
            ok=False,
            error_type=ProbeErrorType.UNKNOWN_ERROR,
            error_message=f"{type(exc).__name__}: {exc}",
        )

"""One probe of one URL: a TCP connect, or an HTTP HEAD/GET. Network only, no database, so the
prober can run many of these in threads while a single connection writes the results.

OK means the connection was made (TCP) or the server answered with a status below 500 (a 401
from an API endpoint still proves it is up). Failures carry one of the ProbeLog error types.
"""

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

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


# RFC 3986 characters a path or query may hold as they are; "%" keeps existing escapes.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def parse_target(url: str) -> Target:
    """http(s) URL -> where to connect. Anything else is an InvalidURL naming what is wrong.
    A path or query with non-ASCII characters is percent-encoded (UTF-8), as a browser does."""
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
    if port == 0:
        raise InvalidURL("Invalid URL: port 0")
    path = quote(parts.path, safe=_PATH_SAFE) or "/"
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return Target(scheme, parts.hostname, DEFAULT_PORTS[scheme] if port is None else port, path)


class Deadline:
    """One time budget for a whole probe: name resolution, every connect attempt, the TLS
    handshake and every read. A socket timeout alone bounds each operation, so a server that
    trickles a byte per read could keep a probe going for ever."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("probe deadline passed")
        return left


class _DeadlineSocketMixin:
    """Re-arms the socket's timeout with what is left of the deadline before every read and
    write (http.client reads the status line through makefile(), i.e. recv_into)."""

    deadline: Deadline | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())

    def recv(self, *args):
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args):
        self._arm()
        return super().recv_into(*args)

    def send(self, *args):
        self._arm()
        return super().send(*args)

    def sendall(self, *args):
        self._arm()
        return super().sendall(*args)


class _DeadlineSocket(_DeadlineSocketMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineSocketMixin, ssl.SSLSocket):
    pass


def resolve_within(host: str, port: int, deadline: Deadline) -> list:
    """getaddrinfo bounded by the deadline. getaddrinfo takes no timeout, so a name (not an IP
    literal) is resolved in a daemon thread that is left behind if the deadline passes; the
    system resolver's own timeout ends it."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    outcome: list = []
    done = threading.Event()

    def lookup():
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            outcome.append(exc)
        done.set()

    threading.Thread(target=lookup, daemon=True, name="probe-resolve").start()
    if not done.wait(deadline.remaining()):
        raise TimeoutError("name resolution timed out")
    if isinstance(outcome[0], OSError):
        raise outcome[0]
    return outcome[0]


def connect_within(addresses: list, deadline: Deadline) -> socket.socket:
    """Connect to the first of `addresses` (getaddrinfo tuples) that answers, all attempts
    together within the deadline (socket.create_connection gives each its full timeout).
    The socket keeps the deadline for its reads and writes."""
    last_error: OSError | None = None
    for family, socktype, proto, _, sockaddr in addresses:
        sock = _DeadlineSocket(family, socktype, proto)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                deadline.remaining()  # raises once the budget is spent
            last_error = exc
            continue
        sock.deadline = deadline
        return sock
    raise last_error or OSError("no address to connect to")


def open_connection(target: Target, deadline: Deadline) -> socket.socket:
    return connect_within(resolve_within(target.host, target.port, deadline), deadline)


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
        sock = open_connection(target, Deadline(timeout_s))
    except TimeoutError:
        return _timeout(started, timeout_s)
    except OSError as exc:
        return _network_error(started, exc)
    latency = _elapsed_ms(started)
    sock.close()
    return ProbeResult(ok=True, latency_ms=latency)


class NoStatus(Exception):
    """No HTTP status line: the server closed or reset the connection, or sent something else."""


class _ProbeConnection(http.client.HTTPConnection):
    """An HTTP(S) connection whose every step is bounded by one Deadline."""

    def __init__(self, target: Target, deadline: Deadline):
        super().__init__(target.host, target.port)
        self.target = target
        self.deadline = deadline
        self.default_port = DEFAULT_PORTS[target.scheme]  # no ":443" in the Host header

    def connect(self):
        self.sock = open_connection(self.target, self.deadline)
        if self.target.scheme == "https":
            context = ssl.create_default_context()
            context.sslsocket_class = _DeadlineSSLSocket
            # The handshake is one call, and CPython bounds the whole call by the timeout.
            self.sock.settimeout(self.deadline.remaining())
            self.sock = context.wrap_socket(self.sock, server_hostname=self.target.host)
            self.sock.deadline = self.deadline


def _http_status(target: Target, method: str, deadline: Deadline) -> int:
    conn = _ProbeConnection(target, deadline)
    try:
        conn.request(method, target.path, headers={"User-Agent": "hub-prober/1", "Accept": "*/*"})
        try:
            response = conn.getresponse()
        # A close (RemoteDisconnected), a reset or a line that is not a status line: the
        # server answered no status. A refused connect is none of these and gets no retry.
        except (ConnectionResetError, http.client.BadStatusLine) as exc:
            raise NoStatus(str(exc) or type(exc).__name__) from exc
        # Only the status line and headers are read: the body does not matter and may be large.
        return response.status
    finally:
        conn.close()


def probe_http(target: Target, method: str, timeout_s: float) -> ProbeResult:
    """HEAD (or GET). With HEAD, a server that answers no status line gets a GET within the
    same time budget: some endpoints drop HEAD requests."""
    started = time.monotonic()
    deadline = Deadline(timeout_s)
    methods = ["HEAD", "GET"] if method == "head" else ["GET"]
    status = None
    try:
        for attempt in methods:
            try:
                status = _http_status(target, attempt, deadline)
                break
            except NoStatus as exc:
                if attempt == methods[-1]:
                    return _network_error(started, exc.__cause__ or exc)
    except TimeoutError:
        return _timeout(started, timeout_s)
    except (http.client.InvalidURL, UnicodeError) as exc:
        return ProbeResult(
            ok=False, error_type=ProbeErrorType.INVALID_URL, error_message=f"Invalid URL: {exc}"
        )
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

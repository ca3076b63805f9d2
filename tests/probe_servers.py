"""Real loopback servers for the prober's tests: an HTTP server whose paths answer 200, 401,
500, drop or reset HEAD requests without a status line, answer a line holding NUL bytes, or
stall past any probe timeout; a server that trickles its answer a byte at a time; and the port
of a closed socket."""

import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

STATUS_PATHS = {"/ok": 200, "/v1/messages": 401, "/boom": 500}


@dataclass
class ProbeServer:
    url: str
    release: threading.Event
    seen: list = field(default_factory=list)  # (method, path) of every request
    arrived: threading.Event = field(default_factory=threading.Event)

    def __call__(self, path: str) -> str:
        return self.url + path


def _handler(server_state):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def _answer(self, with_body: bool):
            server_state.seen.append((self.command, self.path))
            server_state.arrived.set()
            if self.path.startswith("/slow"):
                # Stall until the test ends; the probe's timeout must fire first.
                server_state.release.wait(30)
                return
            if self.path.startswith("/nohead") and self.command == "HEAD":
                self.close_connection = True  # no status line at all
                return
            if self.path.startswith("/resethead") and self.command == "HEAD":
                # No status line: the connection is reset (RST), not closed cleanly.
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
                self.close_connection = True
                return
            if self.path.startswith("/nul"):
                self.wfile.write(b"\x00\x01garbage\x00\r\n\r\n")  # not a status line
                self.close_connection = True
                return
            status = STATUS_PATHS.get(self.path.split("?")[0], 200)
            body = b'{"error": "unauthorized"}' if status == 401 else b"hello"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

    return Handler


@pytest.fixture
def probe_server():
    state = ProbeServer(url="", release=threading.Event())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def trickle_server():
    """An HTTP server that sends its status line one byte every 0.2 s: each read gets a byte
    well within any probe timeout, so only a deadline over the whole probe ends it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def drip(conn):
        with conn:
            try:
                conn.recv(4096)
                for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 200:
                    if stop.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass  # the probe gave up and closed its end

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(1)
    listener.close()


@pytest.fixture
def closed_port():
    """A port nothing listens on: bound, then closed, so connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def unanswered_port():
    """A listening socket that never accepts, its accept queue filled up: the kernel then drops
    further SYNs, so a TCP connect hangs until the probe's timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(64):
        filler = socket.socket()
        filler.settimeout(0.5)
        fillers.append(filler)
        try:
            filler.connect(("127.0.0.1", port))
        except TimeoutError:
            break  # the queue is full: the next connect hangs too
    else:
        pytest.fail("the accept queue never filled up")
    yield port
    for filler in fillers:
        filler.close()
    server.close()

"""One probe against real loopback servers: what counts as OK, and each failure type."""

import socket
import time

import pytest

from monitoring.models import ProbeErrorType
from monitoring.probes import Deadline, connect_within, probe_url


@pytest.mark.parametrize("method", ["head", "get"])
def test_http_200_is_ok_with_its_status_and_latency(probe_server, method):
    result = probe_url(probe_server("/ok"), method=method, timeout_ms=2000)
    assert result.ok
    assert result.status_code == 200
    assert result.latency_ms is not None and result.latency_ms >= 0
    assert result.error_type == ""
    assert probe_server.seen == [(method.upper(), "/ok")]


@pytest.mark.parametrize("method", ["head", "get"])
def test_http_401_still_proves_the_endpoint_is_up(probe_server, method):
    result = probe_url(probe_server("/v1/messages"), method=method, timeout_ms=2000)
    assert result.ok
    assert result.status_code == 401


@pytest.mark.parametrize("method", ["head", "get"])
def test_http_500_fails_as_http_5xx(probe_server, method):
    result = probe_url(probe_server("/boom"), method=method, timeout_ms=2000)
    assert not result.ok
    assert result.status_code == 500
    assert result.error_type == ProbeErrorType.HTTP_5XX
    assert result.error_message == "HTTP 500 Internal Server Error"


def test_head_without_a_status_line_falls_back_to_get(probe_server):
    result = probe_url(probe_server("/nohead"), method="head", timeout_ms=2000)
    assert result.ok
    assert result.status_code == 200
    assert probe_server.seen == [("HEAD", "/nohead"), ("GET", "/nohead")]


def test_head_answered_by_a_reset_falls_back_to_get(probe_server):
    result = probe_url(probe_server("/resethead"), method="head", timeout_ms=2000)
    assert result.ok
    assert result.status_code == 200
    assert probe_server.seen == [("HEAD", "/resethead"), ("GET", "/resethead")]


def test_get_method_sends_no_head(probe_server):
    probe_url(probe_server("/nohead"), method="get", timeout_ms=2000)
    assert probe_server.seen == [("GET", "/nohead")]


@pytest.mark.parametrize("method", ["head", "get"])
def test_a_server_slower_than_the_timeout_fails_as_timeout(probe_server, method):
    result = probe_url(probe_server("/slow"), method=method, timeout_ms=300)
    assert not result.ok
    assert result.status_code is None
    assert result.error_type == ProbeErrorType.TIMEOUT
    assert result.error_message == "Timed out after 300 ms"
    assert result.latency_ms >= 300
    # A timed-out HEAD is not retried as GET: that would double the time budget.
    assert [m for m, _ in probe_server.seen] == [method.upper()]


@pytest.mark.parametrize("method", ["head", "get"])
def test_a_server_trickling_its_answer_is_cut_off_at_the_timeout(trickle_server, method):
    started = time.monotonic()
    result = probe_url(trickle_server + "/", method=method, timeout_ms=800)
    took = time.monotonic() - started
    # Without one deadline over the whole probe the answer would trickle for 40 s; the bound is
    # loose so that a loaded machine cannot fail it.
    assert took < 8, f"a probe with an 800 ms timeout took {took:.1f} s"
    assert not result.ok
    assert result.error_type == ProbeErrorType.TIMEOUT
    assert result.error_message == "Timed out after 800 ms"
    assert result.status_code is None


def test_a_tls_handshake_that_trickles_is_cut_off_at_the_timeout(trickle_server):
    url = trickle_server.replace("http://", "https://") + "/"
    started = time.monotonic()
    result = probe_url(url, method="get", timeout_ms=800)
    assert time.monotonic() - started < 8  # the handshake alone would trickle for 40 s
    assert result.error_type == ProbeErrorType.TIMEOUT


def test_connecting_to_several_addresses_shares_one_deadline(unanswered_port):
    # What a host name resolving to several unanswering addresses does: each address must get
    # only what is left of the time budget, not a full timeout of its own.
    address = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", unanswered_port))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connect_within([address] * 20, Deadline(0.3))
    assert time.monotonic() - started < 3  # 20 full timeouts would take 6 s


def test_tcp_connect_is_ok_without_a_status(probe_server):
    result = probe_url(probe_server("/slow"), method="tcp", timeout_ms=2000)
    assert result.ok
    assert result.status_code is None
    assert result.latency_ms is not None
    assert probe_server.seen == []  # connected, sent nothing


def test_a_tcp_connect_that_gets_no_answer_fails_as_timeout(unanswered_port):
    result = probe_url(f"http://127.0.0.1:{unanswered_port}/", method="tcp", timeout_ms=300)
    assert not result.ok
    assert result.status_code is None
    assert result.error_type == ProbeErrorType.TIMEOUT
    assert result.latency_ms >= 300


@pytest.mark.parametrize("method", ["tcp", "head", "get"])
def test_a_closed_port_fails_as_network_error(closed_port, method):
    result = probe_url(f"http://127.0.0.1:{closed_port}/v1/messages", method=method, timeout_ms=2000)
    assert not result.ok
    assert result.status_code is None
    assert result.error_type == ProbeErrorType.NETWORK_ERROR
    assert "refused" in result.error_message.lower()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("not a url", "whitespace"),
        ("", "empty"),
        ("ftp://files.example/x", "scheme"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999/", "Port out of range"),
        ("api.example.com/v1", "scheme"),
        ("http://exa mple.com/", "whitespace"),
        ("http://127.0.0.1:0/", "port 0"),
    ],
)
@pytest.mark.parametrize("method", ["tcp", "get"])
def test_an_invalid_url_fails_as_invalid_url_without_latency(url, reason, method):
    result = probe_url(url, method=method, timeout_ms=2000)
    assert not result.ok
    assert result.error_type == ProbeErrorType.INVALID_URL
    assert reason in result.error_message
    assert result.latency_ms is None
    assert result.status_code is None


@pytest.mark.parametrize("method", ["head", "get"])
def test_a_non_ascii_path_is_sent_percent_encoded(probe_server, method):
    result = probe_url(probe_server("/v1/ä?q=é"), method=method, timeout_ms=2000)
    assert result.ok, result
    assert probe_server.seen == [(method.upper(), "/v1/%C3%A4?q=%C3%A9")]


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        probe_url("http://127.0.0.1/", method="post")

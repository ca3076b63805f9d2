"""The prober: what it probes, what it writes, when it probes next, several probers at once,
retention, and a clean stop on SIGTERM."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import ProbeErrorType, ProbeLog, ProviderEndpoint
from monitoring.prober import (
    Prober,
    ProbeSettings,
    claim_due,
    next_probe_delay,
    prune_probe_logs,
    record_result,
)
from monitoring.probes import ProbeResult

from .factories import ProbeLogFactory, ProviderEndpointFactory, ProviderFactory

ROOT = Path(__file__).resolve().parent.parent


def config(**overrides) -> ProbeSettings:
    values = dict(
        method="get", timeout_ms=2000, interval_s=60, timeout_interval_s=10, jitter=0.1,
        concurrency=4,
    )
    values.update(overrides)
    return ProbeSettings(**values)


# --- The interval rules -------------------------------------------------------------------

OK = ProbeResult(ok=True, status_code=200, latency_ms=40)
TIMEOUT = ProbeResult(ok=False, latency_ms=5000, error_type=ProbeErrorType.TIMEOUT)
HTTP_5XX = ProbeResult(ok=False, status_code=502, latency_ms=80, error_type=ProbeErrorType.HTTP_5XX)
REFUSED = ProbeResult(ok=False, latency_ms=1, error_type=ProbeErrorType.NETWORK_ERROR)


def test_without_jitter_an_endpoint_is_probed_every_60_s_and_every_10_s_while_timing_out():
    flat = config(jitter=0)
    assert next_probe_delay(OK, flat) == 60
    assert next_probe_delay(TIMEOUT, flat) == 10
    # Only timeouts are retried early; other failures keep the normal interval.
    assert next_probe_delay(HTTP_5XX, flat) == 60
    assert next_probe_delay(REFUSED, flat) == 60


def test_jitter_spreads_the_next_probe_within_ten_percent_both_ways():
    rng = random.Random(7)
    delays = [next_probe_delay(OK, config(), rng) for _ in range(500)]
    assert all(54 <= d <= 66 for d in delays)
    assert min(delays) < 56 and max(delays) > 64  # really spread, not a constant
    retries = [next_probe_delay(TIMEOUT, config(), rng) for _ in range(500)]
    assert all(9 <= d <= 11 for d in retries)


def test_the_timeout_interval_never_exceeds_a_shorter_normal_interval():
    assert next_probe_delay(TIMEOUT, config(interval_s=5, jitter=0)) == 5


# --- One pass -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_once_probes_every_enabled_endpoint_of_an_enabled_provider(probe_server):
    ok = ProviderEndpointFactory(url=probe_server("/ok"))
    failing = ProviderEndpointFactory(url=probe_server("/boom"))
    off = ProviderEndpointFactory(url=probe_server("/ok?off"), is_enabled=False)
    parked = ProviderEndpointFactory(
        url=probe_server("/ok?parked"), provider=ProviderFactory(is_enabled=False)
    )

    call_command("probe_endpoints", "--once", "--method", "get", "--timeout-ms", "2000", verbosity=0)

    assert sorted(path for _, path in probe_server.seen) == ["/boom", "/ok"]
    assert not ProbeLog.objects.filter(endpoint__in=[off, parked]).exists()
    log = ProbeLog.objects.get(endpoint=ok)
    assert (log.ok, log.status_code, log.source, log.error_type) == (True, 200, "scheduled", "")
    log = ProbeLog.objects.get(endpoint=failing)
    assert (log.ok, log.status_code, log.error_type) == (False, 500, ProbeErrorType.HTTP_5XX)
    failing.refresh_from_db()
    assert failing.last_probe_at == log.created_at
    assert failing.last_probe_ok is False
    assert failing.last_probe_status_code == 500
    assert failing.last_probe_latency_ms == log.latency_ms
    assert failing.last_probe_error_type == ProbeErrorType.HTTP_5XX
    assert failing.last_probe_error_message == "HTTP 500 Internal Server Error"


@pytest.mark.django_db
def test_tcp_is_the_default_method(probe_server, settings):
    endpoint = ProviderEndpointFactory(url=probe_server("/ok"))
    call_command("probe_endpoints", "--once", verbosity=0)
    log = ProbeLog.objects.get(endpoint=endpoint)
    assert log.ok and log.status_code is None
    assert probe_server.seen == []  # a TCP probe sends no HTTP request


@pytest.mark.django_db
def test_the_next_probe_is_60_s_after_a_success_and_10_s_after_a_timeout(probe_server):
    up = ProviderEndpointFactory(url=probe_server("/ok"))
    slow = ProviderEndpointFactory(url=probe_server("/slow"))
    Prober(config(timeout_ms=200)).run(once=True)
    for endpoint, low, high in ((up, 54, 66), (slow, 9, 11)):
        endpoint.refresh_from_db()
        gap = (endpoint.next_probe_at - endpoint.last_probe_at).total_seconds()
        assert low <= gap <= high, (endpoint.url, gap)
    assert ProbeLog.objects.get(endpoint=slow).error_type == ProbeErrorType.TIMEOUT


@pytest.mark.django_db
def test_a_trickling_server_is_recorded_as_a_timeout_well_inside_the_claims_lease(trickle_server):
    endpoint = ProviderEndpointFactory(url=trickle_server + "/")
    started = time.monotonic()
    Prober(config(method="head", timeout_ms=600)).run(once=True)
    took = time.monotonic() - started
    assert took < config(timeout_ms=600).lease.total_seconds()
    log = ProbeLog.objects.get(endpoint=endpoint)
    assert (log.ok, log.status_code, log.error_type) == (False, None, ProbeErrorType.TIMEOUT)


@pytest.mark.django_db
def test_an_endpoint_is_not_probed_again_before_it_is_due(probe_server):
    endpoint = ProviderEndpointFactory(url=probe_server("/ok"))
    assert Prober(config()).run(once=True) == 1
    assert Prober(config()).run(once=True) == 0
    ProviderEndpoint.objects.filter(pk=endpoint.pk).update(
        next_probe_at=timezone.now() - timedelta(seconds=1)
    )
    assert Prober(config()).run(once=True) == 1
    assert ProbeLog.objects.filter(endpoint=endpoint).count() == 2


@pytest.mark.django_db(transaction=True)
def test_once_probes_each_endpoint_once_even_if_it_is_due_again_before_the_end(probe_server):
    # Interval 0: every endpoint is due again as soon as its result is written, as happens
    # when a pass over many endpoints takes longer than the (timeout) interval.
    endpoints = [ProviderEndpointFactory(url=probe_server(f"/ok?n={n}")) for n in range(3)]
    results = []

    def on_result(endpoint_id, entry):
        results.append(endpoint_id)
        if len(results) >= 10:
            prober.stop()  # the pass would never end otherwise

    prober = Prober(config(interval_s=0, timeout_interval_s=0, jitter=0, concurrency=1),
                    on_result=on_result)
    assert prober.run(once=True) == 3
    assert sorted(results) == sorted(e.pk for e in endpoints)


@pytest.mark.django_db
def test_a_claim_holds_for_its_lease_and_then_expires():
    endpoint = ProviderEndpointFactory()
    now = timezone.now()
    assert claim_due(10, config(), now) == [(endpoint.pk, endpoint.url)]
    assert claim_due(10, config(), now) == []
    later = now + config().lease + timedelta(seconds=1)
    assert claim_due(10, config(), later) == [(endpoint.pk, endpoint.url)]


@pytest.mark.django_db
def test_concurrency_bounds_how_many_endpoints_one_claim_takes():
    ProviderEndpointFactory.create_batch(5)
    assert len(claim_due(3, config(concurrency=3))) == 3
    assert len(claim_due(3, config(concurrency=3))) == 2


@pytest.mark.django_db
def test_the_probe_log_and_the_last_result_are_written_in_one_transaction():
    endpoint = ProviderEndpointFactory()
    with CaptureQueriesContext(connection) as queries:
        record_result(endpoint.pk, HTTP_5XX, next_probe_at=timezone.now())
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # Inside the test's transaction, atomic() is a savepoint around exactly the two writes.
    assert statements == ["SAVEPOINT", "UPDATE", "INSERT", "RELEASE"]


@pytest.mark.django_db
def test_an_answer_holding_nul_bytes_is_still_written(probe_server):
    # PostgreSQL text cannot hold NUL: the message quoting the server's line must still be
    # stored, or the endpoint keeps its old result and is probed again at every lease.
    endpoint = ProviderEndpointFactory(url=probe_server("/nul"))
    assert Prober(config(method="head")).run(once=True) == 1
    log = ProbeLog.objects.get(endpoint=endpoint)
    assert (log.ok, log.status_code, log.error_type) == (False, None, ProbeErrorType.NETWORK_ERROR)
    assert "garbage" in log.error_message
    assert "\x00" not in log.error_message
    endpoint.refresh_from_db()
    assert endpoint.last_probe_error_message == log.error_message


@pytest.mark.django_db
def test_a_manual_probe_whose_message_holds_nul_is_written():
    endpoint = ProviderEndpointFactory()
    result = ProbeResult(ok=False, error_type=ProbeErrorType.UNKNOWN_ERROR, error_message="a\x00b")
    log = record_result(endpoint.pk, result, source=ProbeLog.Source.MANUAL)
    log.refresh_from_db()
    assert log.error_message == "a\ufffdb"


@pytest.mark.django_db
def test_a_result_for_an_endpoint_deleted_meanwhile_is_dropped_without_writing_anything():
    endpoint = ProviderEndpointFactory()
    prober = Prober(config())
    endpoint_id = endpoint.pk
    endpoint.delete()
    prober._write(endpoint_id, OK)
    assert prober.probed == 0
    assert not ProbeLog.objects.exists()


# --- Several probers ----------------------------------------------------------------------


def _run_in_thread(target, errors):
    def run():
        try:
            target()
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_two_probers_at_once_probe_each_endpoint_once(probe_server):
    endpoints = [ProviderEndpointFactory(url=probe_server(f"/ok?n={n}")) for n in range(12)]
    start = threading.Barrier(2)
    errors = []

    def one_pass():
        start.wait(10)
        Prober(config(concurrency=3)).run(once=True)

    threads = [_run_in_thread(one_pass, errors) for _ in range(2)]
    for thread in threads:
        thread.join(30)
    assert not errors
    counts = {e.pk: ProbeLog.objects.filter(endpoint=e).count() for e in endpoints}
    assert counts == {e.pk: 1 for e in endpoints}
    assert len(probe_server.seen) == 12


@pytest.mark.django_db(transaction=True)
def test_two_running_probers_probe_each_endpoint_once_per_interval(probe_server):
    endpoints = [ProviderEndpointFactory(url=probe_server(f"/ok?n={n}")) for n in range(8)]
    all_written = threading.Event()
    written = []
    lock = threading.Lock()

    def on_result(endpoint_id, entry):
        with lock:
            written.append(endpoint_id)
            if len(written) >= len(endpoints):
                all_written.set()

    class WatchedProber(Prober):
        """Says when it has claimed five more times after every endpoint was written."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.claims_after = 0
            self.settled = threading.Event()

        def _claim(self, limit, once):
            rows = super()._claim(limit, once)
            if all_written.is_set():
                self.claims_after += 1
                if self.claims_after >= 5:
                    self.settled.set()
            return rows

    probers = [WatchedProber(config(concurrency=2), poll_s=0.02, on_result=on_result) for _ in range(2)]
    errors = []
    threads = [_run_in_thread(p.run, errors) for p in probers]
    assert all_written.wait(30)
    for p in probers:  # both keep claiming: nothing is due again within the 60 s interval
        assert p.settled.wait(30)
        p.stop()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(written) == sorted(e.pk for e in endpoints)
    assert ProbeLog.objects.count() == len(endpoints)


# --- Retention ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_retention_deletes_old_probe_logs_in_batches(settings):
    settings.PROBE_LOG_RETENTION_DAYS = 1
    now = timezone.now()
    endpoint = ProviderEndpointFactory()
    old = [
        ProbeLogFactory(endpoint=endpoint, created_at=now - timedelta(days=2, minutes=n))
        for n in range(5)
    ]
    kept = [
        ProbeLogFactory(endpoint=endpoint, created_at=now - timedelta(hours=23)),
        ProbeLogFactory(endpoint=endpoint, created_at=now),
    ]
    with CaptureQueriesContext(connection) as queries:
        assert prune_probe_logs(batch=2, now=now) == 5
    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert set(ProbeLog.objects.values_list("pk", flat=True)) == {k.pk for k in kept}
    assert not ProbeLog.objects.filter(pk__in=[o.pk for o in old]).exists()


@pytest.mark.django_db
def test_a_longer_retention_keeps_more(settings):
    settings.PROBE_LOG_RETENTION_DAYS = 3
    ProbeLogFactory(created_at=timezone.now() - timedelta(days=2))
    assert prune_probe_logs() == 0
    assert ProbeLog.objects.count() == 1


@pytest.mark.django_db
def test_the_prober_prunes_as_it_runs(probe_server, settings):
    settings.PROBE_LOG_RETENTION_DAYS = 1
    endpoint = ProviderEndpointFactory(url=probe_server("/ok"))
    ProbeLogFactory(endpoint=endpoint, created_at=timezone.now() - timedelta(days=3))
    call_command("probe_endpoints", "--once", verbosity=0)
    assert ProbeLog.objects.filter(endpoint=endpoint).count() == 1
    assert ProbeLog.objects.get(endpoint=endpoint).created_at > timezone.now() - timedelta(minutes=1)


# --- The command --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "post"], "invalid choice"),
        (["--timeout-ms", "0"], "--timeout-ms"),
        (["--interval-s", "-1"], "--interval-s"),
        (["--concurrency", "many"], "--concurrency"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(args, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("probe_endpoints", "--once", *args)


def _database_url() -> str:
    db = connection.settings_dict
    host = db["HOST"] or "localhost"
    if host.startswith("/"):
        host = quote(host, safe="")
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_the_probe_in_flight_finish_and_stops_cleanly(probe_server):
    endpoint = ProviderEndpointFactory(url=probe_server("/slow"))
    env = {**os.environ, "DATABASE_URL": _database_url(), "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "probe_endpoints", "--method", "get", "--timeout-ms", "1500", "-v", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert probe_server.arrived.wait(30), "the prober never probed"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "Prober stopped after 1 probes."
    log = ProbeLog.objects.get(endpoint=endpoint)
    assert log.error_type == ProbeErrorType.TIMEOUT
    endpoint.refresh_from_db()
    assert endpoint.last_probe_error_type == ProbeErrorType.TIMEOUT

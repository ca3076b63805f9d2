#!/usr/bin/env python
"""The prober and the availability queries at the size the reference system's users reported
trouble with (106 endpoints).

    DATABASE_URL=<a database> .venv/bin/python bench/probe_pass.py [--endpoints 106] [--days 1]

1. One prober pass (GET, concurrency 10, 2 s timeout) over --endpoints endpoints on a loopback
   HTTP server that answers after 20 ms; every tenth endpoint stalls past the timeout. Reports
   the wall time, the SQL statements and the database connections the pass used.
2. A day of probes per endpoint at one a minute (inserted with bulk_create), then the median
   time of: the availability page's aggregate over 24 h (one query, all endpoints), one
   endpoint's 120-bucket chart, and the export's newest 1000 lines of one endpoint.
Everything the bench creates is deleted at the end.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("SECRET_KEY", "bench-secret")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from exports.probe_logs import latest_probe_logs, probe_lines  # noqa: E402
from monitoring.availability import latency_series  # noqa: E402
from monitoring.models import ProbeLog, Provider, ProviderEndpoint  # noqa: E402
from monitoring.prober import Prober, ProbeSettings  # noqa: E402

NAME = "bench-probe-pass"


class Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if "stall" in self.path:
            self.release.wait(10)
            return
        time.sleep(0.02)
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def timed(fn, runs=7):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def backend_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=106)
    parser.add_argument("--days", type=int, default=1)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    Provider.objects.filter(name=NAME).delete()
    provider = Provider.objects.create(name=NAME, url=base)
    endpoints = ProviderEndpoint.objects.bulk_create(
        ProviderEndpoint(provider=provider, url=f"{base}/{'stall' if n % 10 == 9 else 'v1'}/{n}", label=f"bench {n}")
        for n in range(args.endpoints)
    )
    ids = [e.pk for e in endpoints]
    try:
        # Only the bench's endpoints are due: park every other endpoint for the pass.
        others = list(ProviderEndpoint.objects.exclude(provider=provider).values_list("pk", "next_probe_at"))
        ProviderEndpoint.objects.exclude(provider=provider).update(next_probe_at=timezone.now() + timedelta(hours=1))
        config = ProbeSettings.from_settings(method="get", timeout_ms=2000, concurrency=10)
        peak = [backend_count()]
        before = peak[0]

        def sample(*_):
            peak[0] = max(peak[0], backend_count())

        prober = Prober(config, on_result=sample)
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            written = prober.run(once=True)
        elapsed = time.perf_counter() - started
        for pk, next_at in others:
            ProviderEndpoint.objects.filter(pk=pk).update(next_probe_at=next_at)
        Handler.release.set()
        print(f"prober pass: {written} endpoints in {elapsed:.2f} s (concurrency 10, "
              f"{args.endpoints // 10} stalled to the 2 s timeout)")
        # The bench's own pg_stat_activity samples are left out.
        statements = [q for q in queries.captured_queries if "pg_stat_activity" not in q["sql"]]
        print(f"  SQL statements: {len(statements)} "
              f"({len(statements) / max(written, 1):.1f} per probe, claims, BEGIN/COMMIT and prune included)")
        kinds = {}
        for q in statements:
            word = q["sql"].split()[0].upper()
            kinds[word] = kinds.get(word, 0) + 1
        print(f"  by kind: {dict(sorted(kinds.items()))}")
        print(f"  database connections: {before} before, at most {peak[0]} during (this process holds one)")

        now = timezone.now()
        minutes = args.days * 24 * 60
        ProbeLog.objects.filter(endpoint_id__in=ids).delete()
        started = time.perf_counter()
        batch = []
        for pk in ids:
            for m in range(minutes):
                failed = m % 50 == 0
                batch.append(ProbeLog(
                    endpoint_id=pk, created_at=now - timedelta(minutes=m), ok=not failed,
                    status_code=502 if failed else 401, latency_ms=40 + m % 37,
                    error_type="http_5xx" if failed else "", error_message="HTTP 502 Bad Gateway" if failed else "",
                ))
            if len(batch) >= 20000:
                ProbeLog.objects.bulk_create(batch)
                batch = []
        ProbeLog.objects.bulk_create(batch)
        rows = len(ids) * minutes
        print(f"inserted {rows:,} probe logs in {time.perf_counter() - started:.1f} s")
        start = now - timedelta(days=1)
        one = ids[0]
        print(f"availability page aggregate (24 h, {len(ids)} endpoints, 48 buckets): "
              f"{timed(lambda: latency_series(start, now, 48, ids)):.1f} ms median")
        print(f"endpoint chart (24 h, 120 buckets): {timed(lambda: latency_series(start, now, 120, [one])):.1f} ms median")
        print(f"export, newest 1000 lines of one endpoint, formatted: "
              f"{timed(lambda: probe_lines(latest_probe_logs(one, {'max_lines': 1000}))):.1f} ms median")
        print(f"export, newest 100 FAIL lines: "
              f"{timed(lambda: probe_lines(latest_probe_logs(one, {'status': 'fail'}))):.1f} ms median")
    finally:
        Handler.release.set()
        provider.delete()
        server.shutdown()


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""The usage-log CSV over HTTP from gunicorn against `psql \\copy` of the same rows, back to back.

    DATABASE_URL=<a database seeded with manage.py seed_demo --requests 1000000> \\
        .venv/bin/python bench/usage_export.py [--runs 3]

Reports per run: wall time, time to first byte, bytes; the server worker's peak RSS growth over
its resting RSS; and the ratio HTTP / psql (median of runs). psql copies the very SELECT the
export runs (same formatting functions), and also the raw table for reference.
"""

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("SECRET_KEY", "bench-secret")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection  # noqa: E402
from psycopg import ClientCursor  # noqa: E402

from accounts.models import User  # noqa: E402
from exports.filters import filter_usage  # noqa: E402
from exports.usage import csv_rows  # noqa: E402
from monitoring.models import MessageRequest  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def admin_cookie() -> str:
    user = User.objects.get(username="admin")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"sessionid={session.session_key}"


def download(port: int, cookie: str, path: str = "/exports/usage-logs.csv"):
    """(wall time, time to first byte, time to first data row, bytes)"""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
    response = conn.getresponse()
    assert response.status == 200, (response.status, response.read()[:300])
    first = response.read(1)
    ttfb = time.perf_counter() - started
    size, seen, first_row = len(first), first, None
    while chunk := response.read1(1 << 16):
        size += len(chunk)
        if first_row is None:
            seen += chunk
            if seen.count(b"\n") >= 2:  # the header line, then the first data row
                first_row = time.perf_counter() - started
    conn.close()
    return time.perf_counter() - started, ttfb, first_row, size


def psql_copy(query: str, target: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", os.environ["DATABASE_URL"],
         "-c", f"\\copy ({query}) TO '{target}' WITH (FORMAT csv)"],
        check=True,
    )
    return time.perf_counter() - started


class PeakRss(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = MessageRequest.objects.count()
    sql, params = csv_rows(filter_usage({}).order_by("-created_at", "-id")).query.sql_with_params()
    connection.ensure_connection()
    query = ClientCursor(connection.connection).mogrify(sql, params)
    cookie = admin_cookie()
    connection.close()

    port = free_port()
    env = {**os.environ, "DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1", "STATIC_MANIFEST": "false",
           "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "hub.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--workers", "1", "--threads", "4", "--timeout", "600"],
        cwd=ROOT, env=env,
    )
    tmp = tempfile.mkdtemp(prefix="bench-usage-")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        worker = children(server.pid)[0]
        download(port, cookie, "/exports/usage-logs.csv?session_id=warm-up")  # imports, first query
        print(f"{rows:,} usage rows; gunicorn gthread worker pid {worker}\n")
        print(f"{'run':>3} {'HTTP s':>8} {'TTFB s':>8} {'row 1 s':>8} {'MB':>8} {'RSS +MB':>8} {'psql same SELECT s':>19} {'psql raw table s':>17}")
        http_times, psql_times = [], []
        for run in range(1, args.runs + 1):
            resting = rss_kb(worker)
            watcher = PeakRss(worker)
            watcher.start()
            wall, ttfb, first_row, size = download(port, cookie)
            watcher.running = False
            watcher.join()
            growth = (watcher.peak - resting) / 1024
            same = psql_copy(query, f"{tmp}/same.csv")
            raw = psql_copy("SELECT * FROM message_request", f"{tmp}/raw.csv")
            http_times.append(wall)
            psql_times.append(same)
            print(f"{run:>3} {wall:>8.2f} {ttfb:>8.3f} {first_row:>8.3f} {size / 1e6:>8.1f} {growth:>8.1f} {same:>19.2f} {raw:>17.2f}")
        ratio = statistics.median(http_times) / statistics.median(psql_times)
        print(f"\nmedian HTTP {statistics.median(http_times):.2f} s, psql {statistics.median(psql_times):.2f} s: ratio {ratio:.2f}")
        same_size = os.path.getsize(f"{tmp}/same.csv")
        print(f"psql file {same_size / 1e6:.1f} MB (the HTTP body adds the BOM and header line)")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

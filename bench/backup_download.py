#!/usr/bin/env python
"""Database backup: the HTTP download against pg_dump -Fc straight to a file, and pg_dump's
compression levels. Run it on a database seeded with many usage rows:

    createdb ... hub_bench
    DATABASE_URL=postgres://.../hub_bench .venv/bin/python manage.py migrate
    DATABASE_URL=postgres://.../hub_bench .venv/bin/python manage.py seed_demo --requests 1000000
    DATABASE_URL=postgres://.../hub_bench .venv/bin/python bench/backup_download.py [--runs 3] [--levels 0,1,3,6]

What it does, back to back and alternating which goes first:
  * direct: pg_dump with exactly the arguments the hub builds (exports.backup.dump_args), -f FILE;
  * http:   GET /exports/database-backup?mode=full from a real gunicorn (gthread, as in the
            Dockerfile) on a loopback port, the body written to a file in 1 MiB reads, while a
            thread samples the gunicorn worker's RSS every 20 ms.
Then one pg_dump per compression level (time, size). Prints a Markdown table.

Measured 2026-12-03 on the 2-core machine, 1,000,000 usage rows (87 MB archive at level 1),
load average about 1: pg_dump -Fc to a file 3.76 s, HTTP download 3.78 s (median of 5; ratio
1.007, single runs 0.90-1.19), gunicorn worker RSS growth at most 4.1 MB, worker CPU 0.19 s per
download. Compression (median of 5, pg_dump's own CPU): level 0 1.5 s CPU / 404 MB, level 1
3.1 s / 87 MB, level 3 3.6 s / 82 MB, level 6 (pg_dump's default) 7.6 s / 70 MB. Level 6 costs
2.5 times the CPU of level 1 for a file 20% smaller; pg_dump compresses in one thread, so that
CPU is the download's wall time, the time the lock and the dump's snapshot are held, and load on
a shared server. With compression and sending overlapped, level 1 finishes first whenever the
link carries more than about 11 MB/s (87 MB in the 7.8 s that level 6 needs anyway): a LAN, the
same data centre, and `manage.py backup_database` writing to a local disk. Below about 9 MB/s
level 6's smaller file wins, by up to 20%. Hence BACKUP_COMPRESSION_LEVEL=1 by default (half
the CPU, half the time the lock and the snapshot are held); a hub reached over a slow link may
set 6.
"""

import argparse
import http.client
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402

from accounts.models import User  # noqa: E402
from exports.backup import PassFile, child_env, connection_params, database_password, dump_args, find_pg_tool  # noqa: E402
from monitoring.models import MessageRequest  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_direct(level: int, out: Path) -> float:
    return run_direct_cpu(level, out)[0]


def run_direct_cpu(level: int, out: Path) -> tuple[float, float]:
    """(wall seconds, pg_dump's own CPU seconds)."""
    passfile = PassFile(database_password())
    try:
        args = dump_args(find_pg_tool("pg_dump"), params=connection_params(), exclude_logs=False, compression=level)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([*args, f"--file={out}"], env=child_env(passfile), check=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finally:
        passfile.remove()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_http(port: int, cookie: str, worker: int, out: Path) -> tuple[float, int, int, float]:
    """(seconds, bytes, peak RSS growth of the worker in KiB, worker CPU seconds)."""
    baseline = rss_kb(worker)
    cpu_before = cpu_seconds(worker)
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_kb(worker))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", "/exports/database-backup?mode=full", headers={"Cookie": cookie})
    response = conn.getresponse()
    assert response.status == 200, response.read()[:500]
    size = 0
    with open(out, "wb") as f:
        while chunk := response.read1(1024 * 1024):
            f.write(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - started
    conn.close()
    stop.set()
    sampler.join()
    return seconds, size, peak[0] - baseline, cpu_seconds(worker) - cpu_before


def start_gunicorn(level: int, tmp: Path) -> tuple[subprocess.Popen, int]:
    from backup_support import child_database_url, free_port, wait_until

    port = free_port()
    pgpass = tmp / "pgpass"
    pgpass.write_text(f"*:*:*:*:{database_password()}\n")
    pgpass.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CACHE_URL"}}
    env.update(
        DATABASE_URL=child_database_url(),
        PGPASSFILE=str(pgpass),
        SECRET_KEY=settings.SECRET_KEY,
        DEBUG="false",
        STATIC_MANIFEST="false",
        BACKUP_COMPRESSION_LEVEL=str(level),
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "hub.wsgi", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
         "--workers", "1", "--threads", "8", "--timeout", "600"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import socket

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    assert wait_until(listening, 30, 0.1), "gunicorn did not start"
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--levels", default="0,1,3,6")
    parser.add_argument("--level", type=int, default=None, help="level for the HTTP comparison (default: the setting)")
    options = parser.parse_args()
    level = settings.BACKUP_COMPRESSION_LEVEL if options.level is None else options.level

    rows = MessageRequest.objects.count()
    admin = User.objects.filter(role="admin").first()
    assert admin, "seed the database first (manage.py seed_demo)"
    client = Client()
    client.force_login(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        process, port = start_gunicorn(level, tmp)
        try:
            # The one worker is the gunicorn master's only child.
            worker = int(subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True).stdout.split()[0])
            run_http(port, cookie, worker, tmp / "warm.dump")  # warm caches and the worker
            direct, http_s, growth, relay_cpu, sizes = [], [], [], [], set()
            for i in range(options.runs):
                order = ("direct", "http") if i % 2 == 0 else ("http", "direct")
                for what in order:
                    if what == "direct":
                        direct.append(run_direct(level, tmp / "direct.dump"))
                        sizes.add(("direct", (tmp / "direct.dump").stat().st_size))
                    else:
                        seconds, size, grew, cpu = run_http(port, cookie, worker, tmp / "http.dump")
                        http_s.append(seconds)
                        growth.append(grew)
                        relay_cpu.append(cpu)
                        sizes.add(("http", size))
        finally:
            process.terminate()
            process.wait(30)

        levels = []
        for lv in [int(x) for x in options.levels.split(",")]:
            timings = [run_direct_cpu(lv, tmp / f"level{lv}.dump") for _ in range(options.runs)]
            levels.append((
                lv,
                statistics.median(t[0] for t in timings),
                statistics.median(t[1] for t in timings),
                (tmp / f"level{lv}.dump").stat().st_size,
            ))
            (tmp / f"level{lv}.dump").unlink()

    print(f"usage rows: {rows:,}; compression level for the comparison: {level}; runs: {options.runs}\n")
    print("| run | pg_dump -Fc to file (s) | HTTP download (s) | ratio | worker RSS growth (MB) | worker CPU (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, (d, h, g, c) in enumerate(zip(direct, http_s, growth, relay_cpu), 1):
        print(f"| {i} | {d:.2f} | {h:.2f} | {h / d:.3f} | {g / 1024:.1f} | {c:.2f} |")
    md, mh = statistics.median(direct), statistics.median(http_s)
    print(f"| median | {md:.2f} | {mh:.2f} | {mh / md:.3f} | {max(growth) / 1024:.1f} (max) | {statistics.median(relay_cpu):.2f} |")
    print(f"\nfile sizes: {sorted(sizes)}\n")
    print(f"| level | pg_dump -Fc wall (s, median of {options.runs}) | pg_dump CPU (s) | size (MB) |")
    print("| --- | --- | --- | --- |")
    for lv, wall, cpu, size in levels:
        print(f"| {lv} | {wall:.2f} | {cpu:.2f} | {size / 1e6:.1f} |")


if __name__ == "__main__":
    main()

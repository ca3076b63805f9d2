"""Real things for the backup tests: scratch databases on the test server, table checksums,
pg_dump processes seen in /proc, private redis-servers and gunicorn servers on loopback ports."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from django.conf import settings

from exports.backup import connection_params, conninfo, database_password

ROOT = Path(__file__).resolve().parent.parent


def connect(dbname: str | None = None) -> psycopg.Connection:
    return psycopg.connect(
        conninfo(connection_params(dbname=dbname)), password=database_password() or None, autocommit=True
    )


@contextlib.contextmanager
def scratch_database():
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"scratch_{secrets.token_hex(4)}"
    with connect("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table_fingerprints(dbname: str | None = None) -> dict[str, tuple[int, str]]:
    """{table: (rows, md5 of every row's text, in a stable order)} for the public schema."""
    out = {}
    with connect(dbname) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )]
        for table in tables:
            count, digest = conn.execute(
                f'SELECT count(*), coalesce(md5(string_agg(t::text, E\'\\n\' ORDER BY t::text)), \'\') FROM "{table}" t'
            ).fetchone()
            out[table] = (count, digest)
    return out


def pg_dump_processes(parent: int | None = None) -> list[tuple[int, str]]:
    """(pid, state) of every pg_dump process (zombies included), optionally only `parent`'s
    children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
        except (OSError, ValueError):
            continue
        if comm != "pg_dump":
            continue
        if parent is not None and int(fields[1]) != parent:
            continue
        found.append((int(entry.name), fields[0]))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass; returns the
    last value (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server that a test may stop."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        assert wait_until(lambda: _pings(client), 10), "redis-server did not start"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


def redis_caches(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }


def child_database_url() -> str:
    """DATABASE_URL of the test database (pytest-django's test_ name), for child servers."""
    from exports.restore import database_url_without_password

    return database_url_without_password(connection_params())


class Gunicorn:
    """`gunicorn hub.wsgi` on a free loopback port against the test database."""

    def __init__(self, tmp_path: Path, *, env: dict[str, str], name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"{name}.log"
        pgpass = tmp_path / f"{name}.pgpass"
        pgpass.write_text(f"*:*:*:*:{database_password()}\n")
        pgpass.chmod(0o600)
        child_env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CACHE_URL"}}
        child_env.update(
            DATABASE_URL=child_database_url(),
            PGPASSFILE=str(pgpass),
            SECRET_KEY=settings.SECRET_KEY,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            DEBUG="false",
            STATIC_MANIFEST="false",
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "hub.wsgi", "--bind", f"127.0.0.1:{self.port}",
             "--worker-class", "gthread", "--workers", "1", "--threads", "4", "--timeout", "120",
             "--graceful-timeout", "2"],
            cwd=ROOT,
            env=child_env,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
        )
        ok = wait_until(self._listening, 30, 0.1)
        assert ok, f"gunicorn did not start: {self.log.read_text()[-2000:]}"

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def add_bulky_usage_rows(rows: int = 1000, text_bytes: int = 32_000) -> None:
    """Copies of one usage row with a long error message: tens of MB in a dump made with
    compression 0 (PostgreSQL's TOAST keeps the table itself small), so a download is still
    running while a test looks at it."""
    from django.db import connection

    from monitoring.models import MessageRequest

    from .factories import MessageRequestFactory

    MessageRequestFactory()
    table = MessageRequest._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'id'"
            " ORDER BY ordinal_position",
            [table],
        )
        columns = [r[0] for r in cur.fetchall()]
        chosen = {
            "request_id": "md5(random()::text || g::text)",
            "error_message": f"repeat(md5(g::text), {text_bytes // 32})",
        }
        select = ", ".join(chosen.get(c, f'"{c}"') for c in columns)
        cur.execute(
            f'INSERT INTO "{table}" ({", ".join(chr(34) + c + chr(34) for c in columns)}) '
            f'SELECT {select} FROM (SELECT * FROM "{table}" LIMIT 1) one, generate_series(1, %s) g',
            [rows],
        )

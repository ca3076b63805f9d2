"""Database backup: `pg_dump -Fc` streamed straight from the child's pipe to the client.

One function, `start_backup`, behind the dashboard download, the admin entry and
`manage.py backup_database`. Everything that can fail before the first byte (tools, server,
lock, pg_dump's connection) fails inside it with a BackupError that carries the HTTP status.

The password never reaches argv, logs or error bodies: pg_dump gets a conninfo string without
it, a 0600 PGPASSFILE holding it, `-w` (never prompt) and an environment stripped of everything
else that could carry it (DATABASE_URL, PGPASSWORD).
"""

import collections
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from .locks import BackupLock

log = logging.getLogger("exports.backup")

MAGIC = b"PGDMP"
# Relay blocks of up to this size; the pipe is widened to match where the kernel allows.
CHUNK_BYTES = 1024 * 1024
# A stuck DDL lock must not hold a backup (and the backup lock) forever.
LOCK_WAIT_TIMEOUT_MS = 60_000
# Lines of pg_dump/pg_restore stderr kept for logs and error bodies.
STDERR_TAIL_LINES = 20


class BackupError(Exception):
    """A failure before the first byte; `status` is the HTTP status the views answer with."""

    status = 500


class DatabaseUnavailable(BackupError):
    status = 503


class ToolUnavailable(BackupError):
    status = 503


class LockHeld(BackupError):
    status = 409

    def __init__(self, message=None):
        super().__init__(message or "Another admin is performing backup")


class PgDumpFailed(BackupError):
    """pg_dump exited non-zero; raised mid-stream it aborts the transfer."""


# --- connection -----------------------------------------------------------------------------


def _libpq_keywords() -> frozenset[str]:
    import psycopg

    return frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def connection_params(*, dbname: str | None = None) -> dict[str, str]:
    """libpq keywords for settings.DATABASES['default'], without the password.

    Handles what django-environ leaves as is: a percent-encoded socket directory as host, and
    host, port, user and password given in a libpq URL's query (`postgresql:///hub?host=/run/pg`),
    which it leaves in OPTIONS; like Django, a top-level setting wins over its OPTIONS key.
    OPTIONS keys that libpq does not know (psycopg's own, like `pool`) are left out.
    """
    db = settings.DATABASES["default"]
    options = db.get("OPTIONS") or {}
    params: dict[str, str] = {}
    host = str(db.get("HOST") or options.get("host") or "")
    if "%" in host:
        host = unquote(host)
    if host:
        params["host"] = host
    for key in ("port", "user"):
        value = db.get(key.upper()) or options.get(key)
        if value:
            params[key] = str(value)
    params["dbname"] = dbname or str(db["NAME"])
    known = _libpq_keywords() - {"password", "passfile", "user", "dbname", "host", "port"}
    for key, value in options.items():
        if key in known and value is not None:
            params[key] = str(value)
    if options.get("passfile") and not database_password():
        params["passfile"] = str(options["passfile"])  # a path, not a secret; ours wins otherwise
    return params


def database_password() -> str:
    db = settings.DATABASES["default"]
    return str(db.get("PASSWORD") or (db.get("OPTIONS") or {}).get("password") or "")


def conninfo(params: dict[str, str]) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**params)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PassFile:
    """A 0600 pgpass file for one child. Wildcards for host/port/db/user: the file is private
    to this child and matching a socket directory literally is fiddly."""

    def __init__(self, password: str):
        self.path: str | None = None
        if password:
            fd, self.path = tempfile.mkstemp(prefix="hub-pgpass-", dir=work_dir())
            with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
                f.write(f"*:*:*:*:{_pgpass_escape(password)}\n")

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


# libpq's environment settings that carry no credential: how to reach and trust the server
# (TLS files and modes, Kerberos/GSS, service files). The Django connection honours them, so
# pg_dump must too, or a deployment that sets e.g. PGSSLROOTCERT passes the checks and then
# fails its backups. PGPASSWORD, DATABASE_URL and the rest are never passed on.
LIBPQ_ENV = (
    "PGSSLMODE", "PGREQUIRESSL", "PGSSLNEGOTIATION", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY",
    "PGSSLROOTCERT", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION", "PGREQUIREPEER", "PGREQUIREAUTH", "PGCHANNELBINDING",
    "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGGSSDELEGATION", "PGSERVICE",
    "PGSERVICEFILE", "PGSYSCONFDIR", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS",
)


def child_env(passfile: PassFile) -> dict[str, str]:
    """A minimal environment: nothing from ours that could carry a credential."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "PGCONNECT_TIMEOUT": "10"}
    for name in ("HOME", "TZ", "TMPDIR", *LIBPQ_ENV):
        if name in os.environ:
            env[name] = os.environ[name]
    if passfile.path:
        env["PGPASSFILE"] = passfile.path
    elif "PGPASSFILE" in os.environ:
        # No password in DATABASE_URL: the deployment's own pgpass file (or ~/.pgpass) has it.
        env["PGPASSFILE"] = os.environ["PGPASSFILE"]
    return env


def work_dir() -> str:
    """Where pgpass files and restore uploads live (created 0700)."""
    path = settings.BACKUP_WORK_DIR or os.path.join(tempfile.gettempdir(), "hub-backup")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# --- tools and versions ---------------------------------------------------------------------


def find_pg_tool(name: str) -> str:
    """PG_BIN_DIR/name when set; else the newest /usr/lib/postgresql/N/bin/name (a newer pg_dump
    dumps older servers, never the reverse), else the one on PATH."""
    if settings.PG_BIN_DIR:
        path = os.path.join(settings.PG_BIN_DIR, name)
        if os.access(path, os.X_OK):
            return path
        raise ToolUnavailable(_("%(tool)s not found in PG_BIN_DIR (%(dir)s).") % {"tool": name, "dir": settings.PG_BIN_DIR})
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    for candidate in versions:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ToolUnavailable(_("%(tool)s is not installed on the server.") % {"tool": name})


def tool_version(path: str) -> tuple[int, str]:
    """(major, full text) of `pg_dump --version`."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolUnavailable(_("%(tool)s cannot be run: %(error)s") % {"tool": path, "error": exc}) from exc
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise ToolUnavailable(_("Cannot read the version of %(tool)s.") % {"tool": path})
    return int(match.group(1)), out.strip()


def server_version(params: dict[str, str], password: str) -> tuple[int, str]:
    """(major, text) of the server, over the same connection parameters pg_dump will use."""
    import psycopg

    try:
        with psycopg.connect(
            conninfo({**params, "connect_timeout": params.get("connect_timeout", "5")}),
            password=password or None,
            autocommit=True,
        ) as conn:
            num = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
            text = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
    except psycopg.Error as exc:
        # libpq's message names host and port, never the password.
        raise DatabaseUnavailable(
            _("Database unreachable: %(error)s") % {"error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}
        ) from exc
    return num // 10000 if num >= 100000 else num // 100, text


def check_versions(*, tool: str, tool_major: int, server_major: int) -> None:
    if tool_major < server_major:
        raise ToolUnavailable(
            _("%(tool)s %(tool_major)s is older than the database server (%(server_major)s): install %(tool)s %(server_major)s or newer, or set PG_BIN_DIR.")
            % {"tool": os.path.basename(tool), "tool_major": tool_major, "server_major": server_major}
        )


def usage_log_table() -> str:
    from monitoring.models import MessageRequest

    return MessageRequest._meta.db_table


def usage_log_tables() -> list[str]:
    """The usage-log table and every table whose rows point at it (request details, ...):
    "without logs" drops the rows of all of them, or the archive could not be restored (their
    foreign keys would point at rows that are not there)."""
    from django.apps import apps

    from monitoring.models import MessageRequest

    found = [MessageRequest]
    changed = True
    while changed:
        changed = False
        for model in apps.get_models():
            if model in found or model._meta.proxy or not model._meta.managed:
                continue
            if any(
                f.is_relation and f.concrete and (f.many_to_one or f.one_to_one) and f.related_model in found
                for f in model._meta.get_fields()
            ):
                found.append(model)
                changed = True
    return [m._meta.db_table for m in found]


def _pattern(name: str) -> str:
    # Double quotes make pg_dump match the name literally and case-sensitively.
    return '"' + name.replace('"', '""') + '"'


def dump_args(pg_dump: str, *, params: dict[str, str], exclude_logs: bool, compression: int) -> list[str]:
    args = [
        pg_dump,
        "--format=custom",
        f"--compress={compression}",
        "--no-password",
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT_MS}",
        f"--dbname={conninfo(params)}",
    ]
    if exclude_logs:
        args += [f"--exclude-table-data={_pattern(table)}" for table in usage_log_tables()]
    return args


def backup_filename(now=None) -> str:
    """backup_YYYY-MM-DDTHH-mm-ss.dump in the server's local time (TIME_ZONE)."""
    return f"backup_{timezone.localtime(now):%Y-%m-%dT%H-%M-%S}.dump"


@dataclass
class Preflight:
    tool: str
    params: dict[str, str]
    password: str


def preflight(tool_name: str = "pg_dump", *, dbname: str | None = None) -> Preflight:
    tool = find_pg_tool(tool_name)
    tool_major, _text = tool_version(tool)
    params = connection_params(dbname=dbname)
    password = database_password()
    server_major, _server_text = server_version(params, password)
    check_versions(tool=tool, tool_major=tool_major, server_major=server_major)
    return Preflight(tool, params, password)


# --- the stream -----------------------------------------------------------------------------


class StderrDrain:
    """Reads a child's stderr to the end in a thread (so the child can never block on a full
    pipe) and keeps the last lines."""

    def __init__(self, stream):
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stream = stream
        self._thread = threading.Thread(target=self._drain, name="pg-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self.tail.append(line)
        except (OSError, ValueError):
            pass

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return " | ".join(self.tail)


def _widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK_BYTES)
    except OSError:
        pass  # the default 64 KiB works, with more wake-ups


class PgDumpStream:
    """The running pg_dump as a streaming source for exports.streaming.AuditedStream.

    Iterating yields the archive; pg_dump exiting non-zero raises PgDumpFailed (so the server
    aborts the transfer instead of ending it cleanly). close() at any point terminates and reaps
    pg_dump, removes its pgpass file and releases the lock; it is idempotent.
    """

    rows = None

    def __init__(self, process: subprocess.Popen, *, lock: BackupLock, passfile: PassFile, mode: str):
        self.process = process
        self.lock = lock
        self.passfile = passfile
        self.mode = mode
        self.bytes = 0
        self.started = time.monotonic()
        self.stderr = StderrDrain(process.stderr)
        self._fd = process.stdout.fileno()
        _widen_pipe(self._fd)
        self._first = b""
        self._done = False
        self._mutex = threading.Lock()

    def read_first_chunk(self) -> None:
        """Wait for pg_dump's first bytes (it has connected and read the catalogue by then), so
        that a failure to connect is a JSON error, not a broken download."""
        self._first = os.read(self._fd, CHUNK_BYTES)
        if not self._first:
            code = self.process.wait()
            self.stderr.join()
            detail = self.stderr.text()
            log.error("pg_dump_error pid=%s code=%s stderr=%s", self.process.pid, code, detail)
            self._cleanup()
            if "connection to server" in detail or "could not connect" in detail:
                raise DatabaseUnavailable(_("Database unreachable: %(error)s") % {"error": detail})
            raise PgDumpFailed(_("pg_dump failed (exit code %(code)s): %(error)s") % {"code": code, "error": detail})
        # pg_dump has connected (and read its pgpass file) by now; don't keep the password on disk.
        self.passfile.remove()
        if not self._first.startswith(MAGIC):
            self.close()
            raise PgDumpFailed(_("pg_dump did not write a custom-format archive."))

    def _read_block(self) -> bytes:
        """Up to CHUNK_BYTES, gathering pg_dump's small writes (about 8 KiB each): one chunk per
        ~1 MiB instead of one per write cuts the relay's CPU by an order of magnitude."""
        parts, size = [], 0
        while size < CHUNK_BYTES:
            data = os.read(self._fd, CHUNK_BYTES - size)
            if not data:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def __iter__(self):
        if self._first:
            chunk, self._first = self._first, b""
            self.bytes += len(chunk)
            yield chunk
        while chunk := self._read_block():
            self.bytes += len(chunk)
            yield chunk
        code = self.process.wait()
        self.stderr.join()
        seconds = time.monotonic() - self.started
        if code != 0:
            detail = self.stderr.text()
            log.error(
                "pg_dump_error pid=%s code=%s bytes=%d seconds=%.1f stderr=%s",
                self.process.pid, code, self.bytes, seconds, detail,
            )
            self._cleanup()
            raise PgDumpFailed(
                _("pg_dump failed mid-stream (exit code %(code)s): %(error)s") % {"code": code, "error": detail or "-"}
            )
        log.info(
            "pg_dump_complete pid=%s mode=%s bytes=%d seconds=%.1f stderr=%s",
            self.process.pid, self.mode, self.bytes, seconds, self.stderr.text() or "-",
        )
        # Released before the generator ends, so the lock is free before the client sees the end.
        self._cleanup()

    def close(self) -> None:
        with self._mutex:
            if self._done:
                return
            if self.process.poll() is None:
                log.info("pg_dump_cancelled pid=%s mode=%s bytes=%d", self.process.pid, self.mode, self.bytes)
                terminate(self.process)
        self._cleanup()

    def _cleanup(self) -> None:
        with self._mutex:
            if self._done:
                return
            self._done = True
        try:
            if self.process.poll() is None:
                terminate(self.process)
            for pipe in (self.process.stdout, self.process.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        finally:
            self.passfile.remove()
            self.lock.release()


def terminate(process: subprocess.Popen, grace: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped (no zombie)."""
    try:
        process.terminate()
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except ProcessLookupError:
        process.wait()


def compression_level() -> int:
    return int(settings.BACKUP_COMPRESSION_LEVEL)


def start_backup(*, exclude_logs: bool = False, actor: str = "") -> PgDumpStream:
    """Check tools and server, take the lock, start pg_dump and wait for its first bytes.

    Raises BackupError (status 409/503/500) with nothing left running and the lock free.
    """
    mode = "exclude_logs" if exclude_logs else "full"
    log.info("database_export_initiated mode=%s actor=%s", mode, actor or "-")
    try:
        pre = preflight("pg_dump")
    except BackupError as exc:
        log.error("database_export_error mode=%s status=%s error=%s", mode, exc.status, exc)
        raise
    lock = BackupLock(purpose="backup")
    if not lock.acquire():
        log.warning("database_export_lock_conflict mode=%s actor=%s", mode, actor or "-")
        raise LockHeld()
    passfile = None
    try:
        passfile = PassFile(pre.password)
        args = dump_args(pre.tool, params=pre.params, exclude_logs=exclude_logs, compression=compression_level())
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(passfile),
            close_fds=True,
        )
    except BaseException as exc:
        if passfile is not None:
            passfile.remove()
        lock.release()
        log.error("database_export_error mode=%s error=%s: %s", mode, type(exc).__name__, exc)
        if isinstance(exc, OSError):
            raise ToolUnavailable(_("pg_dump cannot be started: %(error)s") % {"error": exc}) from exc
        raise
    log.info(
        "pg_dump_start pid=%s mode=%s compression=%s lock=%s", process.pid, mode, compression_level(), lock.backend
    )
    stream = PgDumpStream(process, lock=lock, passfile=passfile, mode=mode)
    try:
        stream.read_first_chunk()
    except BackupError as exc:
        log.error("database_export_error mode=%s status=%s error=%s", mode, exc.status, exc)
        raise
    except BaseException:
        stream.close()
        raise
    return stream


# --- status for the data-management page ----------------------------------------------------


def database_status() -> dict:
    """What the data-management page shows; never raises."""
    from .locks import lock_status

    status: dict = {"reachable": False, "error": ""}
    for name in ("pg_dump", "pg_restore"):
        try:
            path = find_pg_tool(name)
            status[name] = {"path": path, "version": tool_version(path)[1]}
        except BackupError as exc:
            status[name] = {"path": "", "version": "", "error": str(exc)}
    try:
        import psycopg

        params = connection_params()
        with psycopg.connect(
            conninfo({**params, "connect_timeout": params.get("connect_timeout", "5")}),
            password=database_password() or None,
            autocommit=True,
        ) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), pg_database_size(current_database()),"
                " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                "  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                "  AND n.nspname NOT LIKE 'pg_toast%')"
            ).fetchone()
        status.update(reachable=True, server_version=row[0], size=row[1], tables=row[2], dbname=params["dbname"])
    except Exception as exc:  # the page shows it; it must render even with the database down
        status["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    status["lock"] = lock_status()
    status["compression"] = compression_level()
    return status

"""Database restore: `pg_restore` of a pg_dump custom archive, then `migrate`.

One function, `restore_archive`, behind the data-management page and
`manage.py restore_database`. Uploads stream to a private temporary file (never whole into
memory), are checked for pg_dump's magic bytes and a readable table of contents
(`pg_restore --list`) before the lock is taken, and are removed on success, error and cancel;
leftovers of a crashed process are swept once older than RESTORE_STALE_HOURS. A restore keeps
the target's export audit trail and never waits forever for a table lock (LockWatchdog).
"""

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.utils.translation import gettext as _

from .backup import (
    MAGIC,
    BackupError,
    LockHeld,
    PassFile,
    StderrDrain,
    child_env,
    conninfo,
    find_pg_tool,
    preflight,
    usage_log_tables,
    work_dir,
)
from .audit import finish_audit
from .locks import BackupLock

log = logging.getLogger("exports.restore")

UPLOAD_PREFIX = "hub-restore-"
PGPASS_PREFIX = "hub-pgpass-"
# A pgpass file is read when its child connects; one older than this belongs to a dead process.
PGPASS_STALE_S = 3600
# How often the lock watchdog looks at pg_restore's session.
WATCH_INTERVAL_S = 0.2


class InvalidArchive(BackupError):
    status = 400


class RestoreFailed(BackupError):
    status = 500


class InvalidOptions(BackupError):
    status = 400


class DatabaseBusy(BackupError):
    """pg_restore gave up waiting for a table lock (RESTORE_LOCK_TIMEOUT_MS); nothing changed."""

    status = 503


# --- uploads --------------------------------------------------------------------------------


class RestoreUploadedFile(UploadedFile):
    """An upload in a named temporary file of the private work folder, deleted on close."""

    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        file = tempfile.NamedTemporaryFile(prefix=UPLOAD_PREFIX, suffix=".dump", dir=work_dir())
        super().__init__(file, name, content_type, size, charset, content_type_extra)

    def temporary_file_path(self) -> str:
        return self.file.name

    def close(self):
        try:
            return self.file.close()
        except FileNotFoundError:
            pass


class RestoreUploadHandler(FileUploadHandler):
    """Streams the upload to disk and stops at RESTORE_MAX_UPLOAD_BYTES (`too_large` tells the
    view; the rest of the body is read and discarded so the client still gets the 413)."""

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = int(settings.RESTORE_MAX_UPLOAD_BYTES)
        self.received = 0
        self.too_large = False

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file = RestoreUploadedFile(self.file_name, self.content_type, 0, self.charset, self.content_type_extra)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            self.upload_interrupted()
            raise StopUpload(connection_reset=False)
        self.file.write(raw_data)

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        return self.file

    def upload_interrupted(self):
        self.discard()

    def discard(self) -> None:
        if hasattr(self, "file"):
            self.file.close()  # NamedTemporaryFile: closing deletes it


def sweep_stale_files() -> int:
    """Remove restore uploads older than RESTORE_STALE_HOURS and pgpass files of dead children."""
    folder = work_dir()
    now = time.time()
    removed = 0
    for name in os.listdir(folder):
        if name.startswith(UPLOAD_PREFIX):
            max_age = float(settings.RESTORE_STALE_HOURS) * 3600
        elif name.startswith(PGPASS_PREFIX) or name.startswith("hub-restore-list-"):
            max_age = PGPASS_STALE_S
        else:
            continue
        path = os.path.join(folder, name)
        try:
            if now - os.stat(path).st_mtime > max_age:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("restore_temp_swept count=%d folder=%s", removed, folder)
    return removed


# --- the restore ----------------------------------------------------------------------------


def check_options(*, clean: bool, exclude_logs: bool) -> None:
    """exclude_logs with clean would wipe the current usage log: --clean drops and recreates
    every table of the archive, the usage-log tables included, and their rows are left out."""
    if exclude_logs and clean:
        raise InvalidOptions(
            _(
                "Leaving out the usage-log rows (exclude_logs / --exclude-logs) cannot be combined with a "
                "clean restore (clean, the default): the clean restore drops and recreates the usage-log "
                "tables (%(tables)s), so the current usage log would be deleted. Restore everything, or "
                "use --exclude-logs with --no-clean into an empty database."
            )
            % {"tables": ", ".join(usage_log_tables())}
        )


def check_archive(path: str) -> str:
    """A pg_dump custom-format archive starts with PGDMP and has a table of contents that
    `pg_restore --list` can read; anything else is refused before the lock is taken. Returns the
    listing."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise InvalidArchive(_("Cannot read the backup file: %(error)s") % {"error": exc.strerror}) from exc
    if head != MAGIC:
        raise InvalidArchive(
            _("This is not a pg_dump custom-format archive (.dump made by pg_dump -Fc).")
        )
    listing = subprocess.run(
        [find_pg_tool("pg_restore"), "--list", path],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
    )
    if listing.returncode != 0:
        detail = " | ".join(listing.stderr.strip().splitlines()[-3:]) or f"exit code {listing.returncode}"
        raise InvalidArchive(
            _("The archive's table of contents cannot be read (truncated or damaged file?): %(error)s")
            % {"error": detail[-500:]}
        )
    return listing.stdout


@dataclass
class RestoreResult:
    seconds: float
    migrate_output: str


def _toc_without_table_data(listing: str, tables: list[str]) -> str:
    """A pg_restore --use-list file of every entry except the TABLE DATA of `tables`."""
    kept = []
    for line in listing.splitlines():
        words = line.split()
        if "TABLE DATA" in line and len(words) >= 6 and words[3:5] == ["TABLE", "DATA"] and words[6:7] and words[6] in tables:
            continue
        kept.append(line)
    fd, list_path = tempfile.mkstemp(prefix="hub-restore-list-", dir=work_dir())
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(kept) + "\n")
    return list_path


def restore_args(pg_restore: str, *, params: dict, path: str, clean: bool, list_file: str | None) -> list[str]:
    # --no-owner / --no-privileges: the dump may come from a server with other role names; the
    # hub's own role ends up owning everything. --single-transaction: all or nothing.
    args = [
        pg_restore,
        "--no-owner",
        "--no-privileges",
        "--no-password",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={conninfo(params)}",
    ]
    if clean:
        args += ["--clean", "--if-exists"]
    if list_file:
        args.append(f"--use-list={list_file}")
    args.append(path)
    return args


def lock_timeout_ms() -> int:
    return max(1, int(settings.RESTORE_LOCK_TIMEOUT_MS))


class LockWatchdog:
    """Cancels pg_restore's statement once it has waited RESTORE_LOCK_TIMEOUT_MS for a table lock.

    A reader holding a table open (a stalled usage-CSV download) would otherwise make pg_restore
    wait forever for its exclusive lock, with every other reader of the table queued behind it.
    lock_timeout cannot do this: every pg_dump archive starts with `SET lock_timeout = 0`, which
    pg_restore runs first. pg_restore is found by a unique application_name; the cancelled
    statement fails its single transaction, so nothing changes.
    """

    def __init__(self, params: dict, password: str):
        self.application_name = f"hub-restore-{os.getpid()}-{secrets.token_hex(4)}"
        self.fired = False
        self._conn = None
        try:
            self._conn = _connect(params, password)
            self._conn.autocommit = True
        except Exception as exc:  # no watchdog is no reason to refuse the restore
            log.warning("restore_lock_watchdog_unavailable error=%s", type(exc).__name__)

    def check(self) -> None:
        if self._conn is None or self.fired:
            return
        row = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
            " AND clock_timestamp() - query_start > make_interval(secs => %s)",
            [self.application_name, lock_timeout_ms() / 1000],
        ).fetchone()
        if row:
            self.fired = True
            log.warning("pg_restore_lock_timeout backend_pid=%s waited_ms>%s", row[0], lock_timeout_ms())
            self._conn.execute("SELECT pg_cancel_backend(%s)", [row[0]])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# pg_restore's words for an archive it cannot read to the end (its table of contents was fine).
ARCHIVE_READ_ERRORS = (
    "could not read from input file",
    "unexpected end of file",
    "possibly corrupt archive",
    "could not find block ID",
    "could not uncompress data",
    "did not find magic string",
    "could not read input file",
)


def _failure(code: int, detail: str, *, timed_out: bool) -> BackupError:
    """What a failed pg_restore (one transaction: nothing changed) means for the caller."""
    if timed_out or "lock timeout" in detail:
        return DatabaseBusy(
            _(
                "The database is busy: another session holds a lock on a table the restore must replace "
                "(for example a usage-log download in progress), and pg_restore gave up after %(ms)s ms. "
                "Nothing was changed; try again when it has finished."
            )
            % {"ms": lock_timeout_ms()}
        )
    if any(words in detail for words in ARCHIVE_READ_ERRORS):
        return InvalidArchive(
            _("The archive is truncated or damaged; nothing was changed: %(error)s") % {"error": detail}
        )
    return RestoreFailed(
        _("pg_restore failed (exit code %(code)s); nothing was changed: %(error)s") % {"code": code, "error": detail or "-"}
    )


def database_url_without_password(params: dict) -> str:
    """A DATABASE_URL for a child Django process; its password comes from PGPASSFILE."""
    user = quote(params.get("user", ""), safe="")
    host = quote(params.get("host", ""), safe="")
    port = f":{params['port']}" if params.get("port") else ""
    extra = {k: v for k, v in params.items() if k not in {"user", "host", "port", "dbname"}}
    query = f"?{urlencode(extra)}" if extra else ""
    return f"postgres://{user}@{host}{port}/{quote(params['dbname'], safe='')}{query}"


def _migrate(params: dict, passfile: PassFile) -> str:
    """`manage.py migrate` in a child process against the restored database, so an older dump
    reaches the current schema; a child, so any database can be the target and this process's
    connections and caches are left alone."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PGPASSWORD"}}
    env["DATABASE_URL"] = database_url_without_password(params)
    if passfile.path:
        env["PGPASSFILE"] = passfile.path
    result = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "migrate", "--noinput"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-5:])
        log.error("restore_migrate_error code=%s stderr=%s", result.returncode, tail)
        raise RestoreFailed(_("The data was restored but migrations failed: %(error)s") % {"error": tail})
    return result.stdout


def _connect(params: dict, password: str):
    import psycopg

    return psycopg.connect(
        conninfo({**params, "connect_timeout": params.get("connect_timeout", "5")}), password=password or None
    )


def _audit_table() -> tuple[str, str]:
    from .models import ExportAudit

    user_model = ExportAudit._meta.get_field("user").related_model
    return ExportAudit._meta.db_table, user_model._meta.db_table


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class AuditSnapshot:
    columns: list[str]
    rows_json: str  # a JSON array of the rows (to_jsonb of each)
    count: int


def snapshot_audit_trail(params: dict, password: str) -> AuditSnapshot | None:
    """The target database's export audit rows as they are now (None: no such table yet)."""
    table, _users = _audit_table()
    with _connect(params, password) as conn:
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [_q(table)]).fetchone()[0]
        if not found:
            return None
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum",
                [_q(table)],
            )
        ]
        count, rows_json = conn.execute(
            f"SELECT count(*), coalesce(jsonb_agg(to_jsonb(t))::text, '[]') FROM {_q(table)} t"
        ).fetchone()
    return AuditSnapshot(columns, rows_json, count)


def merge_audit_trail(params: dict, password: str, snapshot: AuditSnapshot) -> int:
    """Put the snapshot's rows back after a restore: insert or update by id (the current record
    wins over the archive's copy, e.g. its backup record stuck at "running"), user NULL where
    that user is not in the restored data, and the id sequence moved past the largest id."""
    table, users = _audit_table()
    with _connect(params, password) as conn, conn.transaction():
        current = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                [_q(table)],
            )
        }
        columns = [c for c in snapshot.columns if c in current]
        if "id" not in columns:
            raise RestoreFailed(_("The restored export audit table has no id column."))
        chosen = [
            f"CASE WHEN EXISTS (SELECT 1 FROM {_q(users)} u WHERE u.id = r.user_id) THEN r.user_id END"
            if c == "user_id"
            else f"r.{_q(c)}"
            for c in columns
        ]
        updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in columns if c != "id")
        cur = conn.execute(
            f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in columns)}) "
            f"SELECT {', '.join(chosen)} FROM jsonb_populate_recordset(NULL::{_q(table)}, %s::jsonb) r "
            f"ON CONFLICT (id) DO {'UPDATE SET ' + updates if updates else 'NOTHING'}",
            [snapshot.rows_json],
        )
        merged = cur.rowcount
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {_q(table)}",
            [table],
        )
    return merged


def _wait(process: subprocess.Popen, watchdog: LockWatchdog) -> int:
    """pg_restore's exit code, the watchdog looking in every WATCH_INTERVAL_S meanwhile."""
    while True:
        try:
            return process.wait(timeout=WATCH_INTERVAL_S)
        except subprocess.TimeoutExpired:
            try:
                watchdog.check()
            except Exception as exc:
                log.warning("restore_lock_watchdog_error error=%s", type(exc).__name__)
                watchdog.close()


def restore_archive(
    path: str, *, clean: bool = True, exclude_logs: bool = False, dbname: str | None = None, actor: str = ""
) -> RestoreResult:
    """Restore `path` into the default database (or `dbname` on the same server), then migrate;
    the export audit trail of the target survives (see merge_audit_trail).

    Raises InvalidOptions/InvalidArchive (400), LockHeld (409), DatabaseBusy (503, a table lock
    not granted within RESTORE_LOCK_TIMEOUT_MS), ToolUnavailable/DatabaseUnavailable (503) or
    RestoreFailed (500); the lock is free again in every case.
    """
    log.info("database_restore_initiated clean=%s exclude_logs=%s actor=%s", clean, exclude_logs, actor or "-")
    check_options(clean=clean, exclude_logs=exclude_logs)
    sweep_stale_files()
    listing = check_archive(path)
    pre = preflight("pg_restore", dbname=dbname)
    lock = BackupLock(purpose="restore")
    if not lock.acquire():
        log.warning("database_restore_lock_conflict actor=%s", actor or "-")
        raise LockHeld()
    passfile = PassFile(pre.password)
    list_file = None
    started = time.monotonic()
    try:
        if exclude_logs:
            list_file = _toc_without_table_data(listing, usage_log_tables())
        snapshot = snapshot_audit_trail(pre.params, pre.password)
        watchdog = LockWatchdog(pre.params, pre.password)
        try:
            args = restore_args(
                pre.tool,
                params={**pre.params, "application_name": watchdog.application_name},
                path=path,
                clean=clean,
                list_file=list_file,
            )
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(passfile)
            )
            log.info(
                "pg_restore_start pid=%s clean=%s exclude_logs=%s lock=%s lock_timeout_ms=%s",
                process.pid, clean, exclude_logs, lock.backend, lock_timeout_ms(),
            )
            stderr = StderrDrain(process.stderr)
            code = _wait(process, watchdog)
        finally:
            watchdog.close()
        stderr.join()
        process.stderr.close()
        if code != 0:
            log.error("pg_restore_error pid=%s code=%s stderr=%s", process.pid, code, stderr.text())
            raise _failure(code, stderr.text(), timed_out=watchdog.fired)
        log.info("pg_restore_complete pid=%s seconds=%.1f", process.pid, time.monotonic() - started)
        migrate_error = None
        try:
            output = _migrate(pre.params, passfile)
        except RestoreFailed as exc:
            migrate_error = exc
        if snapshot is not None:
            try:
                merged = merge_audit_trail(pre.params, pre.password, snapshot)
                log.info("restore_audit_merged rows=%d of=%d", merged, snapshot.count)
            except Exception as exc:
                log.exception("restore_audit_merge_error rows=%d", snapshot.count)
                if migrate_error is None:
                    raise RestoreFailed(
                        _("The data was restored but the export audit records could not be put back: %(error)s")
                        % {"error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}
                    ) from exc
        if migrate_error is not None:
            raise migrate_error
    finally:
        passfile.remove()
        if list_file:
            os.unlink(list_file)
        lock.release()
    if dbname is None:
        from django.contrib.contenttypes.models import ContentType

        ContentType.objects.clear_cache()
    seconds = time.monotonic() - started
    log.info("database_restore_complete seconds=%.1f", seconds)
    return RestoreResult(seconds, output)


def finish_restore_audit(audit, **kwargs) -> None:
    """A clean restore replaced the audit table too: write the record again if it is gone."""
    from accounts.models import User

    from .models import ExportAudit

    if not ExportAudit.objects.filter(pk=audit.pk).exists():
        if audit.user_id and not User.all_objects.filter(pk=audit.user_id).exists():
            audit.user = None
        audit.pk = None
        audit._state.adding = True
        audit.save()
    finish_audit(audit, **kwargs)

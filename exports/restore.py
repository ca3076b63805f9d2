"""Database restore: `pg_restore` of a pg_dump custom archive, then `migrate`.

One function, `restore_archive`, behind the data-management page and
`manage.py restore_database`. Uploads stream to a private temporary file (never whole into
memory), are checked for pg_dump's magic bytes before the lock is taken, and are removed on
success, error and cancel; leftovers of a crashed process are swept once older than
RESTORE_STALE_HOURS.
"""

import logging
import os
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


class InvalidArchive(BackupError):
    status = 400


class RestoreFailed(BackupError):
    status = 500


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


def check_archive(path: str) -> None:
    """A pg_dump custom-format archive starts with PGDMP; anything else is refused before the
    lock is taken."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise InvalidArchive(_("Cannot read the backup file: %(error)s") % {"error": exc.strerror}) from exc
    if head != MAGIC:
        raise InvalidArchive(
            _("This is not a pg_dump custom-format archive (.dump made by pg_dump -Fc).")
        )


@dataclass
class RestoreResult:
    seconds: float
    migrate_output: str


def _toc_without_table_data(pg_restore: str, path: str, tables: list[str]) -> str:
    """A pg_restore --use-list file of every entry except the TABLE DATA of `tables`."""
    listing = subprocess.run(
        [pg_restore, "--list", path], capture_output=True, text=True, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    )
    if listing.returncode != 0:
        raise InvalidArchive(_("pg_restore cannot read the archive: %(error)s") % {"error": listing.stderr.strip()[-500:]})
    kept = []
    for line in listing.stdout.splitlines():
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


def restore_archive(
    path: str, *, clean: bool = True, exclude_logs: bool = False, dbname: str | None = None, actor: str = ""
) -> RestoreResult:
    """Restore `path` into the default database (or `dbname` on the same server), then migrate.

    Raises InvalidArchive (400), LockHeld (409), ToolUnavailable/DatabaseUnavailable (503) or
    RestoreFailed (500); the lock is free again in every case.
    """
    log.info("database_restore_initiated clean=%s exclude_logs=%s actor=%s", clean, exclude_logs, actor or "-")
    sweep_stale_files()
    check_archive(path)
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
            list_file = _toc_without_table_data(pre.tool, path, usage_log_tables())
        args = restore_args(pre.tool, params=pre.params, path=path, clean=clean, list_file=list_file)
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(passfile)
        )
        log.info("pg_restore_start pid=%s clean=%s exclude_logs=%s lock=%s", process.pid, clean, exclude_logs, lock.backend)
        stderr = StderrDrain(process.stderr)
        code = process.wait()
        stderr.join()
        process.stderr.close()
        if code != 0:
            log.error("pg_restore_error pid=%s code=%s stderr=%s", process.pid, code, stderr.text())
            raise RestoreFailed(
                _("pg_restore failed (exit code %(code)s); nothing was changed: %(error)s")
                % {"code": code, "error": stderr.text() or "-"}
            )
        log.info("pg_restore_complete pid=%s seconds=%.1f", process.pid, time.monotonic() - started)
        output = _migrate(pre.params, passfile)
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

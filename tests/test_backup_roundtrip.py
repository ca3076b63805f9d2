"""Back up over HTTP, restore into a fresh database, and find the same data; the commands and
the restore upload."""

import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
from django.utils import translation
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from exports import locks
from exports.audit import Kind
from exports.locks import BackupLock
from exports.models import ExportAudit
from exports.restore import UPLOAD_PREFIX, InvalidOptions, restore_archive, sweep_stale_files
from monitoring.models import MessageRequest, Provider

from .backup_support import add_bulky_usage_rows, connect, pg_dump_processes, scratch_database, table_fingerprints
from .factories import (
    MessageRequestFactory,
    ProbeLogFactory,
    RequestDetailFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT = "exports_exportaudit"  # changes while the backup runs (its own record), compared by count


@pytest.fixture(autouse=True)
def _english(settings):
    # The messages are checked in English; the hub's default language is Chinese.
    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def _private_work_dir(settings, tmp_path):
    settings.BACKUP_WORK_DIR = str(tmp_path / "work")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    locks._memory_locks.clear()


@pytest.fixture
def seeded(admin_user, alice, bob):
    for i in range(40):
        MessageRequestFactory(user=(alice, bob)[i % 2], error_message=f"err {i} 测试 'quote' \t tab")
    for _ in range(5):
        RequestDetailFactory(request=MessageRequestFactory(user=alice))
    ProbeLogFactory.create_batch(7)
    UserFactory(username="zoë")


def download(client, mode: str, tmp_path: Path) -> Path:
    response = client.get(f"/exports/database-backup?mode={mode}")
    assert response.status_code == 200
    path = tmp_path / f"{mode}.dump"
    with open(path, "wb") as f:
        for chunk in response.streaming_content:
            f.write(chunk)
    response.close()
    return path


def without_audit(prints: dict) -> dict:
    return {t: v for t, v in prints.items() if t != AUDIT}


def columns_and_indexes(dbname, table):
    with connect(dbname) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = %s ORDER BY ordinal_position", [table]
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [table]
        ).fetchall()
    return columns, indexes


def test_full_backup_restores_every_table_with_equal_counts_and_checksums(admin_client, seeded, tmp_path):
    path = download(admin_client, "full", tmp_path)
    source = table_fingerprints()
    assert source["message_request"][0] == 45 and source["monitoring_requestdetail"][0] == 5
    with scratch_database() as scratch:
        result = restore_archive(str(path), dbname=scratch)
        restored = table_fingerprints(scratch)
    assert "No migrations to apply" in result.migrate_output
    assert without_audit(restored) == without_audit(source)
    assert restored[AUDIT][0] == source[AUDIT][0]


def test_exclude_logs_keeps_the_usage_log_table_its_columns_and_indexes_but_no_rows(admin_client, seeded, tmp_path):
    path = download(admin_client, "exclude_logs", tmp_path)
    source = table_fingerprints()
    with scratch_database() as scratch:
        restore_archive(str(path), dbname=scratch)
        restored = table_fingerprints(scratch)
        for table in ("message_request", "monitoring_requestdetail"):
            assert restored[table][0] == 0
            assert columns_and_indexes(scratch, table) == columns_and_indexes(None, table)
    assert source["message_request"][0] == 45
    others = {t for t in source if t not in {"message_request", "monitoring_requestdetail", AUDIT}}
    assert {t: restored[t] for t in others} == {t: source[t] for t in others}


def test_restore_can_leave_out_the_usage_log_rows_of_a_full_backup(admin_client, seeded, tmp_path):
    path = download(admin_client, "full", tmp_path)
    with scratch_database() as scratch:
        restore_archive(str(path), dbname=scratch, exclude_logs=True, clean=False)
        restored = table_fingerprints(scratch)
    assert restored["message_request"][0] == 0
    assert restored["accounts_user"] == table_fingerprints()["accounts_user"]


def test_backup_command_writes_verifies_and_keeps_the_newest(seeded, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    old = folder / "backup_2020-01-01T00-00-00.dump"
    old.write_bytes(b"PGDMP old")
    err = io.StringIO()
    call_command("backup_database", "--output", str(folder), "--keep", "1", "--verify", stderr=err)
    files = sorted(folder.iterdir())
    assert len(files) == 1 and files[0] != old and files[0].name.startswith("backup_")
    assert files[0].read_bytes().startswith(b"PGDMP")
    assert "Verified" in err.getvalue() and "Deleted" in err.getvalue()
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    audit = ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP)
    assert (audit.channel, audit.outcome, audit.actor.startswith("os:")) == ("command", "ok", True)


def test_backup_command_refuses_bad_options_clearly(db, tmp_path):
    with pytest.raises(CommandError, match="--keep"):
        call_command("backup_database", "--output", str(tmp_path / "x.dump"), "--keep", "2")
    with pytest.raises(CommandError, match="--verify"):
        call_command("backup_database", "--output", "-", "--verify")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("backup_database", "--output", str(tmp_path / "missing" / "x.dump"))
    # A trailing slash names a folder: one that does not exist is an error, not a file named so.
    with pytest.raises(CommandError, match="the folder .*newdir/ does not exist"):
        call_command("backup_database", "--output", f"{tmp_path}/newdir/")
    assert not (tmp_path / "newdir").exists()
    assert not locks.lock_status().held


def test_backup_command_with_the_lock_held_fails_and_is_audited(db, tmp_path):
    holder = BackupLock()
    assert holder.acquire()
    try:
        with pytest.raises(CommandError, match="Another admin is performing backup"):
            call_command("backup_database", "--output", str(tmp_path))
    finally:
        holder.release()
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "failed"
    assert list(tmp_path.iterdir()) == []


class _KillPgDumpOnFirstWrite:
    """Standard output whose first write kills the running pg_dump (the rest of the dump is
    still in its pipe then)."""

    def __init__(self):
        self.buffer = self
        self.written = 0

    def write(self, data):
        if not self.written:
            [(pid, _state)] = pg_dump_processes(os.getpid())
            os.kill(pid, 9)
        self.written += len(data)

    def flush(self):
        pass


def test_backup_command_reports_pg_dump_dying_mid_stream_as_a_command_error(db, settings):
    settings.BACKUP_COMPRESSION_LEVEL = 0
    add_bulky_usage_rows()
    out = _KillPgDumpOnFirstWrite()
    with pytest.raises(CommandError, match="pg_dump failed mid-stream"):
        call_command("backup_database", "--output", "-", stdout=out, stderr=io.StringIO())
    assert out.written > 0
    assert not locks.lock_status().held and not pg_dump_processes(os.getpid())
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "failed"


def test_restore_command_brings_back_the_backup_and_audits_it(seeded, tmp_path):
    target = tmp_path / "b.dump"
    call_command("backup_database", "--output", str(target), stderr=io.StringIO())
    Provider.objects.create(name="made-after-the-backup", url="https://after.example")
    out = io.StringIO()
    call_command("restore_database", str(target), "--yes", stdout=out)
    assert "Restored" in out.getvalue()
    assert not Provider.objects.filter(name="made-after-the-backup").exists()
    restore = ExportAudit.objects.get(kind=Kind.DATABASE_RESTORE)
    assert (restore.channel, restore.outcome, restore.bytes) == ("command", "ok", target.stat().st_size)
    assert not locks.lock_status().held


def test_restore_command_refuses_what_is_not_an_archive_and_asks_off_a_terminal(db, tmp_path):
    junk = tmp_path / "junk.dump"
    junk.write_text("SELECT 1;")
    with pytest.raises(CommandError, match="not a pg_dump custom-format archive"):
        call_command("restore_database", str(junk), "--yes")
    with pytest.raises(CommandError, match="not a file"):
        call_command("restore_database", str(tmp_path / "missing.dump"), "--yes")
    good = tmp_path / "good.dump"
    call_command("backup_database", "--output", str(good), stderr=io.StringIO())
    with pytest.raises(CommandError, match="--yes"):
        call_command("restore_database", str(good))  # pytest's stdin is not a terminal


def _uploads(settings):
    folder = Path(settings.BACKUP_WORK_DIR)
    return [p.name for p in folder.glob(f"{UPLOAD_PREFIX}*")] if folder.exists() else []


def test_restore_upload_replaces_the_data_and_removes_the_upload(admin_client, seeded, settings, tmp_path):
    path = download(admin_client, "full", tmp_path)
    Provider.objects.create(name="made-after-the-backup", url="https://after.example")
    upload = SimpleUploadedFile("mine.dump", path.read_bytes())
    response = admin_client.post(
        "/exports/database-restore",
        {"file": upload, "clean": "yes", "confirm": "on"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["ok"] is True
    assert not Provider.objects.filter(name="made-after-the-backup").exists()
    assert _uploads(settings) == []
    audit = ExportAudit.objects.get(kind=Kind.DATABASE_RESTORE)
    assert (audit.channel, audit.outcome, audit.filters["file"]) == ("web", "ok", "mine.dump")


def test_restore_upload_that_is_not_an_archive_is_a_400_before_the_lock(admin_client, settings):
    holder = BackupLock()
    assert holder.acquire()  # would give 409 if the lock were asked first
    try:
        response = admin_client.post(
            "/exports/database-restore",
            {"file": SimpleUploadedFile("x.dump", b"not a dump"), "clean": "yes", "confirm": "on"},
            HTTP_ACCEPT="application/json",
        )
    finally:
        holder.release()
    assert response.status_code == 400
    assert "not a pg_dump custom-format archive" in json.loads(response.content)["message"]
    assert _uploads(settings) == []


def test_restore_upload_while_a_backup_runs_is_a_409(admin_client, settings, tmp_path):
    good = tmp_path / "good.dump"
    call_command("backup_database", "--output", str(good), stderr=io.StringIO())
    holder = BackupLock()
    assert holder.acquire()
    try:
        response = admin_client.post(
            "/exports/database-restore",
            {"file": SimpleUploadedFile("x.dump", good.read_bytes()), "clean": "yes", "confirm": "on"},
            HTTP_ACCEPT="application/json",
        )
    finally:
        holder.release()
    assert response.status_code == 409
    assert json.loads(response.content)["message"] == "Another admin is performing backup"
    assert _uploads(settings) == []


def test_restore_upload_over_the_size_limit_is_a_413_and_leaves_no_file(admin_client, settings):
    settings.RESTORE_MAX_UPLOAD_BYTES = 1000
    response = admin_client.post(
        "/exports/database-restore",
        {"file": SimpleUploadedFile("big.dump", b"PGDMP" + b"x" * 5000), "clean": "yes", "confirm": "on"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 413
    assert _uploads(settings) == []


def test_restore_needs_admin_and_confirmation(alice_client, admin_client):
    upload = SimpleUploadedFile("x.dump", b"PGDMP")
    response = alice_client.post("/exports/database-restore", {"file": upload, "clean": "yes", "confirm": "on"})
    assert response.status_code == 401
    response = admin_client.post(
        "/exports/database-restore",
        {"file": SimpleUploadedFile("x.dump", b"PGDMP"), "clean": "yes"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400 and "confirm" in json.loads(response.content)["message"]


def test_stale_uploads_are_swept_and_fresh_ones_kept(settings):
    folder = Path(settings.BACKUP_WORK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh, other = folder / f"{UPLOAD_PREFIX}a.dump", folder / f"{UPLOAD_PREFIX}b.dump", folder / "keep.txt"
    for f in (stale, fresh, other):
        f.write_bytes(b"x")
    seven_hours_ago = time.time() - 7 * 3600
    os.utime(stale, (seven_hours_ago, seven_hours_ago))
    os.utime(other, (seven_hours_ago, seven_hours_ago))
    assert sweep_stale_files() == 1
    assert not stale.exists() and fresh.exists() and other.exists()


def test_an_upload_cut_off_by_the_client_leaves_no_file_and_no_lock(live_server, admin_user, settings):
    from django.test import Client

    from .backup_support import wait_until

    client = Client()
    client.force_login(admin_user)
    token = "a" * 32
    boundary = "----hubtestboundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.dump\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + b"PGDMP"
    declared = 50 * 1024 * 1024
    host, port = live_server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        (
            "POST /exports/database-restore HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Cookie: sessionid={client.cookies['sessionid'].value}; csrftoken={token}\r\n"
            f"X-CSRFToken: {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        + head
        + b"\0" * (512 * 1024)
    )
    assert wait_until(lambda: _uploads(settings), 5), "the upload should be on disk while it arrives"
    sock.close()  # the admin cancels the upload
    assert wait_until(lambda: not _uploads(settings), 2), "the partial upload was left on disk"
    assert not locks.lock_status().held
    assert not ExportAudit.objects.filter(kind=Kind.DATABASE_RESTORE, outcome="ok").exists()


# --- review fixes: usage log kept, lock timeout, audit trail, damaged archives, Content-Length --


def _backup_file(tmp_path) -> Path:
    target = tmp_path / "b.dump"
    call_command("backup_database", "--output", str(target), stderr=io.StringIO())
    return target


def test_exclude_logs_with_a_clean_restore_is_refused_and_the_usage_log_kept(seeded, tmp_path):
    target = _backup_file(tmp_path)
    MessageRequestFactory(error_message="written after the backup")
    before = table_fingerprints()
    with pytest.raises(CommandError, match=r"--exclude-logs.*clean restore.*usage log would be deleted"):
        call_command("restore_database", str(target), "--exclude-logs", "--yes")
    with pytest.raises(InvalidOptions) as refused:
        restore_archive(str(target), exclude_logs=True)
    assert refused.value.status == 400 and "message_request" in str(refused.value)
    after = table_fingerprints()
    assert MessageRequest.objects.count() == 46
    for table in ("message_request", "monitoring_requestdetail"):
        assert after[table] == before[table]
    assert not locks.lock_status().held


def _run_guarded(fn, holder, seconds: float = 60):
    """fn() in a thread; if it is still waiting after `seconds` (pg_restore queued forever behind
    `holder`'s lock), end the holder's transaction so the thread can finish, and fail."""
    import threading

    from django.db import connection

    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        holder.rollback()
        thread.join()
        pytest.fail("the restore waited for the table lock instead of failing with a lock timeout")
    return outcome


def test_a_reader_holding_the_usage_log_makes_the_restore_fail_as_busy_not_hang(seeded, admin_client, settings, tmp_path):
    settings.RESTORE_LOCK_TIMEOUT_MS = 300
    target = _backup_file(tmp_path)
    Provider.objects.create(name="made-after-the-backup", url="https://after.example")
    before = table_fingerprints()
    holder = connect()
    holder.autocommit = False
    holder.execute("SELECT count(*) FROM message_request").fetchone()  # AccessShareLock, like a stalled CSV
    try:
        outcome = _run_guarded(lambda: call_command("restore_database", str(target), "--yes"), holder)
        assert isinstance(outcome.get("error"), CommandError), outcome
        assert "database is busy" in str(outcome["error"]) and "Nothing was changed" in str(outcome["error"])
        response = _run_guarded(
            lambda: admin_client.post(
                "/exports/database-restore",
                {"file": SimpleUploadedFile("b.dump", target.read_bytes()), "clean": "yes", "confirm": "on"},
                HTTP_ACCEPT="application/json",
            ),
            holder,
        )["value"]
    finally:
        holder.rollback()
        holder.close()
    assert response.status_code == 503
    assert "database is busy" in json.loads(response.content)["message"]
    assert without_audit(table_fingerprints()) == without_audit(before)
    assert Provider.objects.filter(name="made-after-the-backup").exists()
    assert not locks.lock_status().held
    failed = ExportAudit.objects.filter(kind=Kind.DATABASE_RESTORE).order_by("id")
    assert [(a.channel, a.outcome, a.detail[:4]) for a in failed] == [("command", "failed", "503:"), ("web", "failed", "503:")]


def test_audit_records_written_after_the_backup_survive_a_restore(seeded, tmp_path):
    from exports.audit import Channel, Outcome, finish_audit, start_audit

    target = _backup_file(tmp_path)
    backup = ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP)
    carol = UserFactory(username="carol")  # made after the backup: not in the archive
    csv_ok = start_audit(kind=Kind.USAGE_CSV, channel=Channel.WEB, user=carol, filters={"q": "after"})
    finish_audit(csv_ok, outcome=Outcome.OK, rows=12, bytes=3456)
    csv_failed = start_audit(kind=Kind.USAGE_CSV, channel=Channel.COMMAND)
    finish_audit(csv_failed, outcome=Outcome.FAILED, detail="boom")

    call_command("restore_database", str(target), "--yes", stdout=io.StringIO())

    assert not type(carol).all_objects.filter(username="carol").exists()
    kept = ExportAudit.objects.get(pk=csv_ok.pk)
    assert (kept.outcome, kept.rows, kept.bytes, kept.actor, kept.user_id, kept.filters) == ("ok", 12, 3456, "carol", None, {"q": "after"})
    assert ExportAudit.objects.get(pk=csv_failed.pk).outcome == "failed"
    assert ExportAudit.objects.get(pk=backup.pk).outcome == "ok"  # the archive's copy says "running"
    restore = ExportAudit.objects.get(kind=Kind.DATABASE_RESTORE)
    assert (restore.outcome, restore.channel) == ("ok", "command")
    newest = start_audit(kind=Kind.USAGE_CSV, channel=Channel.COMMAND)  # the id sequence moved on
    assert newest.pk > max(csv_ok.pk, csv_failed.pk, restore.pk)


@pytest.mark.parametrize("cut", ["magic-only", "head", "tail"])
def test_restore_upload_of_a_truncated_archive_is_a_400(admin_client, seeded, settings, tmp_path, cut):
    data = _backup_file(tmp_path).read_bytes()
    body = {"magic-only": b"PGDMP", "head": data[:2000], "tail": data[:-300]}[cut]
    Provider.objects.create(name="made-after-the-backup", url="https://after.example")
    response = admin_client.post(
        "/exports/database-restore",
        {"file": SimpleUploadedFile("cut.dump", body), "clean": "yes", "confirm": "on"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400, response.content
    message = json.loads(response.content)["message"]
    assert "truncated or damaged" in message
    assert Provider.objects.filter(name="made-after-the-backup").exists()
    assert _uploads(settings) == [] and not locks.lock_status().held


def test_restore_upload_with_a_malformed_content_length_is_a_400(admin_client):
    response = admin_client.post(
        "/exports/database-restore",
        {"file": SimpleUploadedFile("x.dump", b"PGDMP"), "clean": "yes", "confirm": "on"},
        HTTP_ACCEPT="application/json",
        CONTENT_LENGTH="12abc",
    )
    assert response.status_code == 400
    assert "Content-Length" in json.loads(response.content)["message"]

"""GET /exports/database-backup: access, errors before the first byte, headers, and what
happens to pg_dump and the lock when the client goes away."""

import json
import os
import subprocess
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import environ
import pytest
from django.utils import translation
from django.db import connection

from exports import locks
from exports.audit import Kind
from exports.backup import (
    BackupError,
    PassFile,
    ToolUnavailable,
    backup_filename,
    check_versions,
    child_env,
    connection_params,
    database_password,
    dump_args,
    usage_log_tables,
)
from exports.locks import BackupLock
from exports.models import ExportAudit

from .backup_support import add_bulky_usage_rows, free_port, pg_dump_processes, wait_until

URL = "/exports/database-backup"

# Tests point DATABASES elsewhere for the backup code only; the ORM keeps its connection.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


@pytest.fixture(autouse=True)
def _memory_lock(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    locks._memory_locks.clear()
    yield
    locks._memory_locks.clear()


@pytest.fixture(autouse=True)
def _english(settings):
    # The messages are checked in English; the hub's default language is Chinese.
    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


def body(response) -> dict:
    return json.loads(response.content)


def test_anonymous_gets_401_json(anon_client, db):
    response = anon_client.get(URL)
    assert response.status_code == 401
    assert body(response) == {"error": "Unauthorized"}
    assert not pg_dump_processes(os.getpid())


def test_non_admin_gets_401_and_a_denied_audit_record(alice_client):
    response = alice_client.get(URL + "?mode=full")
    assert response.status_code == 401
    assert body(response) == {"error": "Unauthorized"}
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "denied"


def test_bad_mode_is_a_400_naming_the_field(admin_client):
    response = admin_client.get(URL + "?mode=everything")
    assert response.status_code == 400
    assert "mode" in body(response)["error"]


def test_lock_held_gives_409_with_the_spec_message(admin_client):
    holder = BackupLock()
    assert holder.acquire()
    try:
        response = admin_client.get(URL)
    finally:
        holder.release()
    assert response.status_code == 409
    assert body(response)["error"] == "Another admin is performing backup"
    assert response["Content-Type"].startswith("application/json")
    assert not pg_dump_processes(os.getpid())
    audit = ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP)
    assert audit.outcome == "failed" and audit.detail.startswith("409")


def test_missing_pg_dump_gives_503_and_frees_the_lock(admin_client, settings, tmp_path):
    settings.PG_BIN_DIR = str(tmp_path)  # an empty folder: no pg_dump there
    response = admin_client.get(URL)
    assert response.status_code == 503
    assert "pg_dump" in body(response)["error"]
    assert not locks.lock_status().held


def test_unreachable_database_gives_503_without_the_password(admin_client, settings):
    password = settings.DATABASES["default"]["PASSWORD"]
    settings.DATABASES = {
        "default": {**settings.DATABASES["default"], "HOST": "127.0.0.1", "PORT": free_port()}
    }
    response = admin_client.get(URL)
    assert response.status_code == 503
    assert body(response)["error"].startswith("Database unreachable")
    if password:
        assert password not in response.content.decode()
    assert not locks.lock_status().held


@pytest.mark.django_db(transaction=True)
def test_the_database_down_gives_a_503_json_not_an_error_page(admin_client, anon_client):
    # The whole database gone, the ORM's connection included: the session (who asks) and the
    # audit record cannot be read or written either.
    db = connection.settings_dict
    port = db["PORT"]
    connection.close()
    db["PORT"] = dead_port = free_port()
    try:
        responses = [admin_client.get(URL), anon_client.get(URL), admin_client.post("/exports/database-restore")]
        pages = [admin_client.get("/dashboard/settings/data/"), admin_client.get("/admin/")]
    finally:
        connection.close()
        db["PORT"] = port
    for response in responses:
        assert response.status_code == 503
        assert response["Content-Type"].startswith("application/json")
        assert body(response)["error"].startswith("Database unreachable")
        # libpq's message (host, port, user) goes to the log, not to a possibly anonymous client.
        assert str(dead_port) not in response.content.decode()
        if db["PASSWORD"]:
            assert db["PASSWORD"] not in response.content.decode()
    # Every other page too: a 503 saying so, not Django's 500 page.
    for page in pages:
        assert page.status_code == 503
        assert page.content.decode().startswith("Database unreachable")
        assert str(dead_port) not in page.content.decode()
    assert not locks.lock_status().held
    assert not pg_dump_processes(os.getpid())


def test_pg_dump_older_than_the_server_is_refused():
    with pytest.raises(ToolUnavailable) as info:
        check_versions(tool="/usr/lib/postgresql/14/bin/pg_dump", tool_major=14, server_major=15)
    assert info.value.status == 503
    assert "older than the database server" in str(info.value)
    check_versions(tool="pg_dump", tool_major=16, server_major=15)  # newer dumps older: fine


@pytest.mark.django_db(transaction=True)
def test_a_pg_dump_failure_before_any_byte_is_a_json_500_and_frees_the_lock(admin_client, settings):
    # A role that may connect but not read the tables: the server checks pass, pg_dump fails.
    role, secret = "backup_limited", "limited-secret-1"
    with connection.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", [secret])
    try:
        settings.DATABASES = {"default": {**settings.DATABASES["default"], "USER": role, "PASSWORD": secret}}
        response = admin_client.get(URL)
    finally:
        with connection.cursor() as cur:
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")
    assert response.status_code == 500
    error = body(response)["error"]
    assert error.startswith("pg_dump failed") and "permission denied" in error
    assert secret not in error
    assert not locks.lock_status().held
    assert not pg_dump_processes(os.getpid())


@pytest.mark.django_db(transaction=True)
def test_download_headers_and_a_complete_custom_archive(admin_client, tmp_path):
    response = admin_client.get(URL + "?mode=full")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Cache-Control"] == "no-store"
    assert not response.has_header("Content-Encoding")
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="backup_') and disposition.endswith('.dump"')
    data = b"".join(response.streaming_content)
    response.close()
    assert data.startswith(b"PGDMP")
    path = tmp_path / "b.dump"
    path.write_bytes(data)
    check = subprocess.run(["pg_restore", "--file=/dev/null", str(path)], capture_output=True)
    assert check.returncode == 0, check.stderr
    assert not locks.lock_status().held
    audit = ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP)
    assert (audit.outcome, audit.bytes, audit.filters) == ("ok", len(data), {"mode": "full"})


def test_backup_filename_is_in_the_servers_local_time(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    moment = datetime(2026, 1, 29, 6, 30, 25, tzinfo=timezone.utc)
    assert backup_filename(moment) == "backup_2026-01-29T14-30-25.dump"


def test_exclude_logs_drops_the_rows_of_the_usage_log_and_what_points_at_it():
    args = dump_args("pg_dump", params={"dbname": "hub"}, exclude_logs=True, compression=1)
    assert '--exclude-table-data="message_request"' in args
    assert '--exclude-table-data="monitoring_requestdetail"' in args
    assert usage_log_tables()[0] == "message_request"
    full = dump_args("pg_dump", params={"dbname": "hub"}, exclude_logs=False, compression=1)
    assert not [a for a in full if a.startswith("--exclude")]
    assert "--format=custom" in full and "--no-password" in full


def test_connection_params_handle_socket_hosts_encoded_credentials_and_options(settings):
    settings.DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "hub db",
            "USER": "us@er",
            "PASSWORD": "p:w@d/x",
            "HOST": "%2Fvar%2Frun%2Fpostgresql",
            "PORT": "",
            "OPTIONS": {"sslmode": "require", "connect_timeout": 5, "pool": False},
        }
    }
    params = connection_params()
    assert params == {
        "host": "/var/run/postgresql",
        "user": "us@er",
        "dbname": "hub db",
        "sslmode": "require",
        "connect_timeout": "5",
    }
    args = dump_args("pg_dump", params=params, exclude_logs=False, compression=1)
    assert not any("p:w@d/x" in a for a in args)


@pytest.mark.django_db(transaction=True)
def test_a_libpq_url_with_host_port_user_and_password_in_its_query_backs_up(admin_client, settings):
    # postgresql:///db?host=...&port=...&user=...&password=... is a libpq URL too; django-environ
    # leaves those keys in OPTIONS, and Django connects with them.
    db = settings.DATABASES["default"]
    query = urlencode({"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "password": db["PASSWORD"]})
    parsed = environ.Env.db_url_config(f"postgresql:///{quote(db['NAME'])}?{query}")
    assert (parsed["HOST"], parsed["USER"], parsed["PASSWORD"]) == ("", "", "")
    settings.DATABASES = {"default": {**db, **{k: parsed[k] for k in ("HOST", "PORT", "USER", "PASSWORD", "OPTIONS")}}}
    params = connection_params()
    assert (params["host"], params["port"], params["user"]) == (db["HOST"], str(db["PORT"]), db["USER"])
    assert "password" not in params and database_password() == db["PASSWORD"]
    response = admin_client.get(URL)
    assert response.status_code == 200, response.content
    assert b"".join(response.streaming_content).startswith(b"PGDMP")
    response.close()
    assert not locks.lock_status().held


@pytest.mark.django_db(transaction=True)
def test_closing_mid_stream_reaps_pg_dump_and_frees_the_lock(admin_client, settings):
    settings.BACKUP_COMPRESSION_LEVEL = 0
    add_bulky_usage_rows()
    response = admin_client.get(URL)
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    assert next(chunks).startswith(b"PGDMP")
    assert pg_dump_processes(os.getpid()), "pg_dump should still be running"
    response.close()  # what the server does when the client disconnects
    assert wait_until(lambda: not pg_dump_processes(os.getpid()), 2), "pg_dump left behind"
    assert wait_until(lambda: not locks.lock_status().held, 2), "lock not released"
    assert wait_until(lambda: not _pg_dump_sessions(), 2), "pg_dump's server session is still open"
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "cancelled"


def _pg_dump_sessions() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
        return cur.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_head_request_leaves_no_pg_dump_and_frees_the_lock(admin_client):
    response = admin_client.head(URL)
    assert response.status_code == 200
    assert response.content == b""
    assert wait_until(lambda: not pg_dump_processes(os.getpid()), 2)
    assert not locks.lock_status().held
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_pg_dump_killed_mid_stream_raises_instead_of_ending_cleanly(admin_client, settings, caplog):
    settings.BACKUP_COMPRESSION_LEVEL = 0
    add_bulky_usage_rows()
    response = admin_client.get(URL)
    chunks = iter(response.streaming_content)
    next(chunks)
    [(pid, _state)] = pg_dump_processes(os.getpid())
    os.kill(pid, 9)
    with pytest.raises(BackupError), caplog.at_level("ERROR", logger="exports.backup"):
        for _chunk in chunks:
            pass
    response.close()
    assert "pg_dump_error" in caplog.text
    assert not locks.lock_status().held
    assert ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP).outcome == "failed"


@pytest.mark.django_db(transaction=True)
def test_password_is_never_in_argv_child_environment_or_logs(admin_client, settings, caplog):
    password = settings.DATABASES["default"]["PASSWORD"]
    assert password, "the test cluster has a password (scripts/test sets one)"
    settings.BACKUP_COMPRESSION_LEVEL = 0
    add_bulky_usage_rows(rows=200)
    with caplog.at_level("DEBUG"):
        response = admin_client.get(URL)
        chunks = iter(response.streaming_content)
        next(chunks)
        [(pid, _state)] = pg_dump_processes(os.getpid())
        ps = subprocess.run(["ps", "-eo", "pid,args", "ww"], capture_output=True, text=True).stdout
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode()
        environ = open(f"/proc/{pid}/environ", "rb").read().decode()
        for _chunk in chunks:
            pass
        response.close()
    assert any(line.split()[0] == str(pid) and "pg_dump" in line for line in ps.splitlines()[1:])
    assert "--no-password" in argv
    assert "PGPASSFILE=" in environ
    for text in (ps, argv, environ, caplog.text):
        assert password not in text


@pytest.mark.django_db(transaction=True)
def test_django_admin_has_a_back_up_database_entry_for_admins(admin_client):
    changelist = admin_client.get("/admin/exports/exportaudit/")
    assert b'id="admin-backup-database"' in changelist.content
    form = admin_client.get("/admin/exports/exportaudit/backup/")
    assert form.status_code == 200 and b'name="mode"' in form.content
    response = admin_client.get("/admin/exports/exportaudit/backup/?mode=exclude_logs")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"PGDMP")
    response.close()
    audit = ExportAudit.objects.get(kind=Kind.DATABASE_BACKUP)
    assert (audit.channel, audit.outcome, audit.filters) == ("admin", "ok", {"mode": "exclude_logs"})


def test_staff_who_are_not_admins_cannot_use_the_admin_entry(db, client):
    from .factories import UserFactory

    staff = UserFactory(username="staffer", is_staff=True)
    client.force_login(staff)
    response = client.get("/admin/exports/exportaudit/backup/?mode=full")
    assert response.status_code == 403
    assert not pg_dump_processes(os.getpid())


def test_pg_dump_gets_libpq_settings_that_carry_no_credential(monkeypatch):
    # How to reach and trust the server, as the Django connection reads them; never a secret.
    monkeypatch.setenv("PGSSLROOTCERT", "/etc/hub/root.crt")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSERVICEFILE", "/etc/hub/pg_service.conf")
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:hunter2@h/db")
    passfile = PassFile("hunter2")
    try:
        env = child_env(passfile)
    finally:
        passfile.remove()
    assert env["PGSSLROOTCERT"] == "/etc/hub/root.crt" and env["PGSSLMODE"] == "verify-full"
    assert env["PGSERVICEFILE"] == "/etc/hub/pg_service.conf"
    assert "PGPASSWORD" not in env and "DATABASE_URL" not in env
    assert "hunter2" not in "".join(env.values())


def test_only_a_lost_connection_counts_as_the_database_down():
    from django.db import OperationalError

    import psycopg
    from hub.middleware import is_connection_failure

    def wrapped(cause):
        error = OperationalError(str(cause))
        error.__cause__ = cause
        return error

    assert is_connection_failure(wrapped(psycopg.OperationalError("connection refused")))
    assert is_connection_failure(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    # A query cancelled by a timeout or a deadlock is the query's failure, not an outage.
    assert not is_connection_failure(wrapped(psycopg.errors.QueryCanceled("statement timeout")))
    assert not is_connection_failure(wrapped(psycopg.errors.DeadlockDetected("deadlock")))
    assert not is_connection_failure(ValueError("unrelated"))

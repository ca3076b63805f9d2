"""The usage-log CSV through its other channels (admin action, command) and the dashboard page."""

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.http import QueryDict
from django.urls import reverse

from exports.models import ExportAudit

from .factories import ApiKeyFactory, MessageRequestFactory, ProviderFactory, UserFactory

T0 = datetime(2026, 1, 29, 10, 30, tzinfo=UTC)
CHANGELIST = reverse("admin:monitoring_messagerequest_changelist")


def web_bytes(client, **params):
    response = client.get(reverse("exports:usage-csv"), params)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


@pytest.fixture
def some_rows(alice, bob):
    rows = []
    for i in range(12):
        rows.append(MessageRequestFactory(
            user=(alice, bob)[i % 2], created_at=T0 + timedelta(minutes=i),
            status_code=(200, 500, 429)[i % 3], model=("m-a", "m-b")[i % 2],
            session_id=f"sess-{i}",
        ))
    return rows


# --- Admin action ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_action_exports_the_selected_rows_in_the_same_format(admin_client, some_rows):
    chosen = [some_rows[1], some_rows[4], some_rows[7]]
    response = admin_client.post(
        CHANGELIST,
        {"action": "export_csv", ACTION_CHECKBOX_NAME: [r.pk for r in chosen]},
    )
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="usage-logs-')
    body = b"".join(response.streaming_content)
    # The same bytes as the web export of those rows (selected by session id here).
    lines = body.decode("utf-8-sig").splitlines()
    assert len(lines) == 1 + 3
    web = web_bytes(admin_client).decode("utf-8-sig").splitlines()
    assert lines[0] == web[0]
    assert lines[1:] == [line for line in web[1:] if line.split(",")[16] in {r.session_id for r in chosen}]
    audit = ExportAudit.objects.get(channel="admin")
    assert (audit.kind, audit.outcome, audit.rows) == ("usage_csv", "ok", 3)
    assert audit.filters["count"] == 3


@pytest.mark.django_db
def test_admin_action_is_offered_only_to_those_who_may_export(admin_client, admin_user):
    response = admin_client.get(CHANGELIST)
    assert b'value="export_csv"' in response.content


@pytest.mark.django_db
def test_staff_without_admin_role_cannot_use_the_action(client, some_rows):
    staff = UserFactory(username="staffer", is_staff=True)
    client.force_login(staff)
    # No model permissions: Django refuses the changelist itself.
    assert client.get(CHANGELIST).status_code == 403


@pytest.mark.django_db
def test_staff_with_view_permission_see_only_their_own_rows(client, some_rows, bob):
    staff = UserFactory(username="carol", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_messagerequest"))
    mine = MessageRequestFactory(user=staff, session_id="carol-own")
    client.force_login(staff)
    response = client.get(CHANGELIST)
    assert [row.pk for row in response.context["cl"].result_list] == [mine.pk]
    assert b"sess-1" not in response.content
    assert client.get(reverse("admin:monitoring_messagerequest_change", args=[some_rows[1].pk])).status_code == 302
    filters = [f.title for f in response.context["cl"].filter_specs]
    assert "user" not in filters
    assert "bob" not in str(response.context["cl"].filter_specs[4].lookup_choices)  # keys: her own


@pytest.mark.django_db
def test_changelist_filters_and_search(admin_client, some_rows):
    assert admin_client.get(CHANGELIST, {"status_code": "non200"}).context["cl"].result_count == 8
    response = admin_client.get(CHANGELIST, {"q": "sess-3"})
    assert response.context["cl"].result_count == 1
    response = admin_client.get(CHANGELIST, {"status_code": "500"})
    assert response.context["cl"].result_count == 4
    response = admin_client.get(CHANGELIST, {"model": "m-a", "min_retry_count": "0"})
    assert response.context["cl"].result_count == 6


@pytest.mark.django_db
def test_changelist_time_window_is_the_exports(admin_client, some_rows):
    start = int((T0 + timedelta(minutes=3)).timestamp() * 1000)
    response = admin_client.get(CHANGELIST, {"start_time": start, "end_time": (T0 + timedelta(minutes=5)).isoformat()})
    assert response.context["cl"].result_count == 2  # minutes 3 and 4; the end is exclusive


@pytest.mark.django_db
def test_changelist_endpoint_filter_ignores_case_and_trailing_slash(admin_client, alice):
    MessageRequestFactory(user=alice, endpoint="/V1/Messages/")
    MessageRequestFactory(user=alice, endpoint="/v1/messages")
    MessageRequestFactory(user=alice, endpoint="/v1/messages/count_tokens")
    response = admin_client.get(CHANGELIST, {"endpoint": "/v1/messages"})
    assert response.context["cl"].result_count == 2
    # The changelist shows the table as it is: the non-billing endpoint is not hidden.
    assert admin_client.get(CHANGELIST).context["cl"].result_count == 3
    choices = [value for value, _ in response.context["cl"].filter_specs[-1].lookup_choices]
    assert choices.count("/v1/messages") == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [{"status_code": "\u00b2"}, {"min_retry_count": "\u00b2"}, {"user_id": "x"}, {"key_id": "-1"},
     {"start_time": "yesterday"}, {"start_time": "2026-01-02", "end_time": "2026-01-01"}],
)
def test_changelist_bad_filter_values_are_a_notice_not_a_500(admin_client, some_rows, params):
    response = admin_client.get(CHANGELIST, params, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")
    # The notice on the page it redirects to names the field that was wrong.
    page = admin_client.get(response["Location"], HTTP_ACCEPT_LANGUAGE="en").content.decode()
    field = "end_time" if "end_time" in params else next(iter(params))
    assert f"Filters not applied: {field}:" in page


# --- Command ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_command_writes_the_same_bytes_as_the_web_for_the_same_user(tmp_path, alice, alice_client, some_rows):
    out = tmp_path / "alice.csv"
    call_command("export_usage_logs", "--as-user", "alice", "--status-code", "500", "--output", str(out),
                 stderr=io.StringIO())
    assert out.read_bytes() == web_bytes(alice_client, status_code=500)
    assert [p.name for p in tmp_path.iterdir()] == ["alice.csv"]  # no temporary left behind
    audit = ExportAudit.objects.filter(channel="command").get()
    assert (audit.user, audit.outcome, audit.rows) == (alice, "ok", 2)


@pytest.mark.django_db
def test_command_as_operator_exports_everything_in_english(tmp_path, admin_client, some_rows):
    out = tmp_path / "all.csv"
    call_command("export_usage_logs", "--language", "en", "--exclude-status-200", "--output", str(out),
                 stderr=io.StringIO())
    response = admin_client.get(reverse("exports:usage-csv"), {"exclude_status_200": "true"},
                                HTTP_ACCEPT_LANGUAGE="en")
    assert out.read_bytes() == b"".join(response.streaming_content)
    assert out.read_bytes().decode("utf-8-sig").startswith("Time,User,Key")
    assert ExportAudit.objects.get(channel="command").actor.startswith("os:")


@pytest.mark.django_db
def test_command_to_stdout(some_rows):
    stdout = io.StringIO()
    call_command("export_usage_logs", "--model", "m-a", stdout=stdout, stderr=io.StringIO())
    lines = stdout.getvalue().lstrip("\ufeff").splitlines()
    assert len(lines) == 1 + 6


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--status-code", "abc"], "--status-code:"),
        (["--start-time", "soon"], "--start-time:"),
        (["--min-retry-count", "-2"], "--min-retry-count:"),
        (["--as-user", "nobody"], "--as-user: no user named 'nobody'"),
    ],
)
def test_command_names_the_bad_option(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_usage_logs", *args, stdout=io.StringIO())


@pytest.mark.django_db
def test_command_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("export_usage_logs", "--output", str(tmp_path / "no" / "x.csv"))


@pytest.mark.django_db
def test_command_failure_leaves_no_half_file(tmp_path, some_rows, monkeypatch):
    from exports import usage

    def broken_iter(self):
        yield self.head
        raise RuntimeError("database went away")

    monkeypatch.setattr(usage.UsageCsvSource, "__iter__", broken_iter)
    target = tmp_path / "x.csv"
    with pytest.raises(RuntimeError):
        call_command("export_usage_logs", "--output", str(target), stderr=io.StringIO())
    assert list(tmp_path.iterdir()) == []
    assert ExportAudit.objects.get().outcome == "failed"


@pytest.mark.django_db
def test_command_write_failure_after_the_data_is_recorded_failed(tmp_path, some_rows, monkeypatch):
    import os

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CommandError, match="No space left"):
        call_command("export_usage_logs", "--output", str(tmp_path / "x.csv"), stderr=io.StringIO())
    assert list(tmp_path.iterdir()) == []
    audit = ExportAudit.objects.get()
    assert audit.outcome == "failed" and "No space left" in audit.detail


@pytest.mark.django_db
def test_command_writes_into_a_fifo_without_replacing_it(tmp_path, some_rows):
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    call_command("export_usage_logs", "--output", str(fifo), stdout=io.StringIO(), stderr=io.StringIO())
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received[0].startswith("\ufeff".encode()) and received[0].count(b"\n") == 13
    assert ExportAudit.objects.get().outcome == "ok"


@pytest.mark.django_db(transaction=True)
def test_command_to_a_pipe_closed_early_ends_with_a_failed_record(tmp_path, alice):
    # `export_usage_logs -o - | head`: the write fails while the COPY is still open. A real
    # process and pipe; the wait is a guard against a hang, not a measure of speed.
    from monitoring.models import MessageRequest

    from .backup_support import ROOT, child_database_url, database_password

    key = alice.api_keys.get()
    MessageRequest.objects.bulk_create(
        MessageRequest(user=alice, key=key, created_at=T0 + timedelta(seconds=i), model="m",
                       endpoint="/v1/messages", status_code=200, request_id=f"pipe-{i}")
        for i in range(20_000)
    )
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:*:{database_password()}\n")
    pgpass.chmod(0o600)
    env = {**os.environ, "DATABASE_URL": child_database_url(), "PGPASSFILE": str(pgpass)}
    child = subprocess.Popen(
        [sys.executable, "manage.py", "export_usage_logs", "--output", "-"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout.read(1000).startswith("\ufeff".encode())
        child.stdout.close()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
            pytest.fail("export_usage_logs hung after its output pipe closed")
    assert child.returncode == 1
    assert b"Broken pipe" in stderr
    audit = ExportAudit.objects.get()
    assert (audit.channel, audit.outcome) == ("command", "failed")
    assert "BrokenPipeError" in audit.detail


@pytest.mark.django_db
def test_command_refuses_to_export_as_a_disabled_or_expired_user(alice, some_rows):
    alice.expires_at = T0
    alice.save()
    with pytest.raises(CommandError, match="may not export"):
        call_command("export_usage_logs", "--as-user", "alice", stdout=io.StringIO())
    audit = ExportAudit.objects.get()
    assert (audit.outcome, audit.channel, audit.user_id) == ("denied", "command", alice.pk)


# --- The page --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_page_lists_newest_first_with_totals_and_an_export_link(admin_client, some_rows):
    response = admin_client.get(reverse("dashboard:logs"), {"status_code": "500"})
    page = response.context["page"]
    assert [r.session_id for r in page.object_list] == ["sess-10", "sess-7", "sess-4", "sess-1"]
    assert response.context["totals"]["requests"] == 4
    assert response.context["totals"]["tokens"] == 4 * (1500 + 3200 + 1200)
    assert b"/exports/usage-logs.csv?status_code=500" in response.content


@pytest.mark.django_db
def test_users_dropdowns_list_only_their_own_values(alice_client, alice, bob):
    ApiKeyFactory(user=bob, name="bobs-secret-project")
    MessageRequestFactory(user=bob, model="bob-only-model", endpoint="/bob/only",
                          provider=ProviderFactory(name="bob-provider"))
    MessageRequestFactory(user=alice, model="alice-model")
    response = alice_client.get(reverse("dashboard:logs"))
    html = response.content.decode()
    assert "alice-model" in html and "alice-key" in html
    for leak in ("bob-only-model", "/bob/only", "bobs-secret-project", "bob-provider", "bob-key"):
        assert leak not in html
    assert 'name="user_id"' not in html  # no user picker for non-admins


@pytest.mark.django_db
def test_page_shows_bad_filters_and_disables_export(alice_client):
    response = alice_client.get(reverse("dashboard:logs"), {"status_code": "abc"})
    assert response.status_code == 200
    assert b"status_code" in response.content
    assert b'id="export-csv"' not in response.content


@pytest.mark.django_db
def test_page_warns_when_the_export_would_be_cut(admin_client, some_rows, settings):
    settings.USAGE_EXPORT_MAX_ROWS = 5
    response = admin_client.get(reverse("dashboard:logs"))
    assert response.context["export_truncated"] is True
    assert b"USAGE_EXPORT_MAX_ROWS" in response.content


@pytest.mark.django_db
def test_quick_ranges_link_to_explicit_start_times_keeping_the_other_filters(alice_client):
    response = alice_client.get(
        reverse("dashboard:logs"), {"model": "m-a", "start_time": "1", "end_time": "2", "page": "2"}
    )
    queries = [QueryDict(query) for _, query in response.context["quick_ranges"]]
    starts = [int(q["start_time"]) for q in queries]
    assert len(starts) == 3 and starts[0] > starts[1] > starts[2]
    assert all(q["model"] == "m-a" and "end_time" not in q and "page" not in q for q in queries)


@pytest.mark.django_db
def test_page_applies_the_valid_filters_when_one_is_bad(admin_client, some_rows):
    response = admin_client.get(reverse("dashboard:logs"), {"model": "m-a", "start_time": "zzz"})
    assert response.context["totals"]["requests"] == 6  # model applied, the bad time not
    assert "start_time" in response.context["form"].errors
    assert b'id="export-csv"' not in response.content

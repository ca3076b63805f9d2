import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.utils import timezone

from exports.models import ExportAudit
from exports.session_request import export_filename

from .factories import MessageRequestFactory, ProviderFactory, RequestDetailFactory



@pytest.fixture(autouse=True)
def _english(settings):
    # The messages are asserted in English; the deployment default is zh-hans.
    settings.LANGUAGE_CODE = "en"


@pytest.fixture
def recent():
    return timezone.now() - timedelta(hours=1)


@pytest.fixture
def stored(alice, recent):
    """Request #2 of session a1b2c3d4e5f6 with its details stored."""
    provider = ProviderFactory(name="anthropic-main")
    row = MessageRequestFactory(
        user=alice, key=alice.api_keys.get(), provider=provider, session_id="a1b2c3d4e5f6",
        request_sequence=2, created_at=recent.replace(microsecond=123456), status_code=200,
        model="claude-sonnet-4-5-20250929", original_model="claude-3-5-sonnet-20241022",
    )
    RequestDetailFactory(
        request=row,
        method="POST",
        client_url="https://hub.example/v1/messages?beta=true&key=[REDACTED]",
        upstream_url="https://api.anthropic.example/v1/messages",
        headers={"content-type": "application/json", "authorization": "Bearer sk-a******cdef"},
        body={"model": "claude-sonnet-4-5-20250929", "max_tokens": 4096,
              "messages": [{"role": "user", "content": "你好, \"quoted\""}]},
        response_status=529,
        meta={"clientVersion": "2.0.14", "model": "stale"},
        special_settings={"headerModifications": [{"action": "remove", "name": "x-stainless-os"}]},
    )
    return row


def url(session_id, sequence=None):
    if sequence is None:
        return f"/exports/sessions/{session_id}/request.json"
    return f"/exports/sessions/{session_id}/requests/{sequence}.json"


def test_the_export_has_the_spec_shape_and_what_debugging_needs(admin_client, stored):
    response = admin_client.get(url("a1b2c3d4e5f6", 2))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    doc = json.loads(response.content.decode("utf-8"))
    assert doc == {
        "sessionId": "a1b2c3d4e5f6",
        "sequence": 2,
        "requestId": stored.request_id,
        "meta": {
            "clientVersion": "2.0.14",
            "model": "claude-sonnet-4-5-20250929",  # the usage row wins over stored meta
            "originalModel": "claude-3-5-sonnet-20241022",
            "providerId": stored.provider_id,
            "providerName": "anthropic-main",
            "endpoint": "/v1/messages",
            "timestamp": stored.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
        "method": "POST",
        "clientUrl": "https://hub.example/v1/messages?beta=true&key=[REDACTED]",
        "upstreamUrl": "https://api.anthropic.example/v1/messages",
        "statusCode": 529,
        "headers": {"content-type": "application/json", "authorization": "Bearer sk-a******cdef"},
        "body": {"model": "claude-sonnet-4-5-20250929", "max_tokens": 4096,
                 "messages": [{"role": "user", "content": "你好, \"quoted\""}]},
        "bodyFormat": "json",
        "specialSettings": {
            "headerModifications": [{"action": "remove", "name": "x-stainless-os"}],
            "bodyModifications": [],
        },
    }
    assert doc["meta"]["timestamp"].endswith(".123Z")


def test_the_file_is_pretty_printed_utf8(admin_client, stored):
    text = admin_client.get(url("a1b2c3d4e5f6", 2)).content.decode("utf-8")
    assert text.startswith('{\n  "sessionId": "a1b2c3d4e5f6",\n')
    assert "你好" in text  # not \u-escaped
    assert text.endswith("}\n")


def test_filename_with_a_sequence(admin_client, stored):
    response = admin_client.get(url("a1b2c3d4e5f6", 2))
    assert response["Content-Disposition"] == 'attachment; filename="session-a1b2c3d4-seq-2-request.json"'


def test_filename_and_url_of_a_request_without_a_sequence(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="sess_0123456789", request_sequence=None, created_at=recent)
    RequestDetailFactory(request=row)
    response = admin_client.get(url("sess_0123456789"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="session-sess_012-request.json"'
    assert json.loads(response.content)["sequence"] is None


@pytest.mark.parametrize(
    "session_id, sequence, expected",
    [
        ("abc", 1, "session-abc-seq-1-request.json"),
        ("a/b\\c:d*e", None, "session-a_b_c_d_-request.json"),
        ("=1+1 sess_x", 12, "session-=1+1 ses-seq-12-request.json"),
        ("会话标识符一二三四五", 3, "session-会话标识符一二三-seq-3-request.json"),
    ],
)
def test_filenames_keep_the_first_8_characters_and_only_drop_unsafe_ones(session_id, sequence, expected):
    assert export_filename(session_id, sequence) == expected


def test_a_session_id_with_slashes_and_spaces_is_exported(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="=1+1 a/b", request_sequence=1, created_at=recent)
    RequestDetailFactory(request=row)
    response = admin_client.get("/exports/sessions/=1+1%20a/b/requests/1.json")
    assert response.status_code == 200
    assert json.loads(response.content)["sessionId"] == "=1+1 a/b"
    assert "filename*=utf-8''" not in response["Content-Disposition"]


def test_a_non_ascii_filename_is_sent_rfc_6266_style(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="会话一", request_sequence=1, created_at=recent)
    RequestDetailFactory(request=row)
    response = admin_client.get(url("会话一", 1))
    assert response["Content-Disposition"] == (
        "attachment; filename*=utf-8''session-%E4%BC%9A%E8%AF%9D%E4%B8%80-seq-1-request.json"
    )


def test_a_text_body_is_exported_as_text_with_its_format(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="s-text", request_sequence=1, created_at=recent)
    RequestDetailFactory(request=row, body=None, body_text="aGVsbG8=", body_format="base64")
    doc = json.loads(admin_client.get(url("s-text", 1)).content)
    assert (doc["body"], doc["bodyFormat"]) == ("aGVsbG8=", "base64")


def test_anonymous_users_get_401_and_an_audit_record(anon_client, stored):
    response = anon_client.get(url("a1b2c3d4e5f6", 2))
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    audit = ExportAudit.objects.get()
    assert (audit.kind, audit.outcome, audit.actor) == ("session_request", "denied", "anonymous")


def test_users_who_are_not_admins_get_401(alice_client, stored):
    response = alice_client.get(url("a1b2c3d4e5f6", 2))
    assert response.status_code == 401
    assert ExportAudit.objects.get().outcome == "denied"


def test_an_unknown_request_is_404(admin_client, stored):
    response = admin_client.get(url("a1b2c3d4e5f6", 3))
    assert response.status_code == 404
    assert response.json() == {"error": "Session a1b2c3d4e5f6 has no request #3.", "reason": "not_found"}


def test_details_never_recorded_are_a_404_saying_so(admin_client, alice, recent):
    MessageRequestFactory(user=alice, session_id="s-none", request_sequence=1, created_at=recent)
    response = admin_client.get(url("s-none", 1))
    assert response.status_code == 404
    assert response.json()["reason"] == "never_recorded"
    assert "No details were recorded" in response.json()["error"]


def test_an_old_row_whose_details_never_came_is_never_recorded_not_pruned(admin_client, alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    MessageRequestFactory(user=alice, session_id="s-old", request_sequence=1,
                          created_at=timezone.now() - timedelta(days=8))
    response = admin_client.get(url("s-old", 1))
    assert response.status_code == 404
    assert response.json()["reason"] == "never_recorded"


def test_pruned_details_are_a_404_saying_pruned_even_after_the_retention_is_raised(admin_client, alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    at = timezone.now() - timedelta(days=8)
    row = MessageRequestFactory(user=alice, session_id="s-old", request_sequence=1, created_at=at)
    RequestDetailFactory(request=row, created_at=at)
    call_command("prune_session_details", stdout=StringIO())
    settings.SESSION_DETAILS_RETENTION_DAYS = 30
    response = admin_client.get(url("s-old", 1))
    assert response.status_code == 404
    body = response.json()
    assert body["reason"] == "pruned"
    assert "were pruned on" in body["error"]
    assert "SESSION_DETAILS_RETENTION_DAYS" in body["error"]


def test_details_deleted_in_the_admin_are_a_404_saying_deleted(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="s-del", request_sequence=1, created_at=recent)
    detail = RequestDetailFactory(request=row)
    response = admin_client.post(
        "/admin/monitoring/requestdetail/",
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [detail.pk], "post": "yes"},
    )
    assert response.status_code == 302
    response = admin_client.get(url("s-del", 1))
    assert response.status_code == 404
    assert response.json()["reason"] == "deleted"
    assert "deleted in the Django admin" in response.json()["error"]


def test_a_detail_deleted_from_its_own_admin_page_is_recorded_as_deleted(admin_client, alice, recent):
    row = MessageRequestFactory(user=alice, session_id="s-del", request_sequence=1, created_at=recent)
    detail = RequestDetailFactory(request=row)
    response = admin_client.post(f"/admin/monitoring/requestdetail/{detail.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.details_removed == "deleted" and row.details_removed_at is not None


def test_a_bad_sequence_is_400(admin_client, stored):
    response = admin_client.get(url("a1b2c3d4e5f6", 0))
    assert response.status_code == 400
    assert response.json()["error"].startswith("sequence:")


def test_every_outcome_is_audited(admin_client, stored, alice, recent):
    admin_client.get(url("a1b2c3d4e5f6", 2))
    admin_client.get(url("a1b2c3d4e5f6", 9))
    ok, failed = ExportAudit.objects.order_by("id")
    assert (ok.kind, ok.channel, ok.outcome, ok.rows, ok.actor) == ("session_request", "web", "ok", 1, "admin")
    assert ok.bytes == len(admin_client.get(url("a1b2c3d4e5f6", 2)).content)
    assert ok.filters == {"session_id": "a1b2c3d4e5f6", "sequence": 2, "request_id": stored.request_id}
    assert (failed.outcome, failed.detail) == ("failed", "not_found: Session a1b2c3d4e5f6 has no request #9.")


def test_request_id_picks_one_of_two_rows_with_the_same_sequence(admin_client, alice, recent):
    first = MessageRequestFactory(user=alice, session_id="dup", request_sequence=1, created_at=recent)
    second = MessageRequestFactory(user=alice, session_id="dup", request_sequence=1,
                                   created_at=recent + timedelta(seconds=1))
    RequestDetailFactory(request=first, method="GET")
    RequestDetailFactory(request=second, method="POST")
    assert json.loads(admin_client.get(url("dup", 1)).content)["method"] == "POST"  # the newest
    picked = admin_client.get(url("dup", 1) + f"?request_id={first.request_id}")
    assert json.loads(picked.content)["method"] == "GET"


# --- The Django admin action -------------------------------------------------------------------

CHANGELIST = "/admin/monitoring/requestdetail/"


def test_the_admin_action_downloads_the_same_file(admin_client, stored):
    response = admin_client.post(
        CHANGELIST, {"action": "export_json", ACTION_CHECKBOX_NAME: [stored.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="session-a1b2c3d4-seq-2-request.json"'
    assert response.content == admin_client.get(url("a1b2c3d4e5f6", 2)).content
    assert ExportAudit.objects.filter(channel="admin", outcome="ok").count() == 1


def test_the_admin_action_wants_exactly_one_request(admin_client, stored, alice, recent):
    other = RequestDetailFactory(request=MessageRequestFactory(user=alice, created_at=recent))
    response = admin_client.post(
        CHANGELIST, {"action": "export_json", ACTION_CHECKBOX_NAME: [stored.pk, other.pk]}, follow=True
    )
    assert "Select exactly one request to export." in response.content.decode()
    assert not ExportAudit.objects.exists()


def test_the_admin_action_is_hidden_from_staff_who_are_not_admins(client, stored):
    from .factories import UserFactory

    staff = UserFactory(username="staff")
    staff.is_staff = True
    staff.save()
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_requestdetail"))
    client.force_login(staff)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert b"export_json" not in page.content
    refused = client.post(CHANGELIST, {"action": "export_json", ACTION_CHECKBOX_NAME: [stored.pk]})
    assert "Content-Disposition" not in refused
    assert not ExportAudit.objects.filter(outcome="ok").exists()


def test_staff_who_are_not_admins_see_only_the_request_details_of_their_own_rows(client, stored):
    """As in the usage-log changelist: a view permission given by hand does not open other
    users' requests (their headers and bodies are what the admin-only export holds)."""
    from django.contrib.auth.models import Permission

    from .factories import UserFactory

    staff = UserFactory(username="staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_requestdetail"))
    own = RequestDetailFactory(request=MessageRequestFactory(user=staff, session_id="s-own"))
    client.force_login(staff)
    listed = client.get(CHANGELIST).content.decode()
    assert own.request.request_id in listed
    assert stored.request_id not in listed
    assert client.get(f"{CHANGELIST}{own.pk}/change/").status_code == 200
    assert client.get(f"{CHANGELIST}{stored.pk}/change/").status_code == 302  # "does not exist"


# --- manage.py export_session_request ---------------------------------------------------------


def test_the_command_writes_the_file_under_the_download_name(stored, tmp_path, monkeypatch, admin_client):
    monkeypatch.chdir(tmp_path)
    err = StringIO()
    call_command("export_session_request", "a1b2c3d4e5f6", "--sequence", "2", stderr=err)
    written = tmp_path / "session-a1b2c3d4-seq-2-request.json"
    assert written.read_bytes() == admin_client.get(url("a1b2c3d4e5f6", 2)).content
    assert list(tmp_path.iterdir()) == [written]  # no temporary file left behind
    audit = ExportAudit.objects.filter(channel="command").get()
    assert (audit.outcome, audit.rows, audit.actor.startswith("os:")) == ("ok", 1, True)


def test_the_command_writes_to_a_path_or_stdout(stored, tmp_path):
    target = tmp_path / "out.json"
    call_command("export_session_request", "a1b2c3d4e5f6", "-n", "2", "--output", str(target), stderr=StringIO())
    assert json.loads(target.read_text("utf-8"))["sequence"] == 2
    out = StringIO()
    call_command("export_session_request", "a1b2c3d4e5f6", "--sequence=2", "--output", "-", stdout=out)
    assert json.loads(out.getvalue())["requestId"] == stored.request_id


def test_the_command_says_why_there_is_no_file(alice, tmp_path, settings):
    MessageRequestFactory(user=alice, session_id="s-old", request_sequence=1,
                          created_at=timezone.now() - timedelta(days=30),
                          details_removed="pruned", details_removed_at=timezone.now())
    with pytest.raises(CommandError, match="pruned"):
        call_command("export_session_request", "s-old", "--sequence", "1", "--output", str(tmp_path / "x.json"))
    with pytest.raises(CommandError, match="has no request #5"):
        call_command("export_session_request", "s-old", "--sequence", "5", "--output", str(tmp_path / "x.json"))
    assert not list(tmp_path.iterdir())
    assert set(ExportAudit.objects.values_list("outcome", flat=True)) == {"failed"}


def test_the_command_rejects_a_bad_sequence(db):
    with pytest.raises(CommandError, match="--sequence: "):
        call_command("export_session_request", "abc", "--sequence", "zero")


def test_request_details_cannot_be_added_or_edited_in_the_admin(admin_client, stored):
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    change = admin_client.post(f"{CHANGELIST}{stored.pk}/change/", {"method": "GET", "headers": "{}"})
    assert change.status_code == 403
    assert admin_client.get(f"{CHANGELIST}{stored.pk}/change/").status_code == 200  # viewing is fine

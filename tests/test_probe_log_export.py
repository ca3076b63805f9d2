"""The probe-log text export: the line format case by case, the filters and their bounds,
access, the file name's time zone, and the same bytes through the view, the admin action and
`manage.py export_probe_logs`."""

import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from exports.models import ExportAudit
from exports.probe_logs import (
    escape_message,
    export_filename,
    format_latency,
    format_probe_line,
)
from monitoring.models import ProbeLog

from .factories import ProbeLogFactory, ProviderEndpointFactory, ProviderFactory

T0 = datetime(2026, 1, 29, 10, 30, tzinfo=UTC)
CHANGELIST = reverse("admin:monitoring_probelog_changelist")


def line(**fields) -> str:
    values = {"ok": True, "status_code": 200, "latency_ms": 45, "error_message": "", "created_at": T0}
    values.update(fields)
    return format_probe_line(ProbeLog(**values), ZoneInfo("UTC"))


# --- The line format ----------------------------------------------------------------------


def test_an_ok_http_probe():
    assert line() == "[10:30:00] OK 200 45ms"


def test_a_failed_probe_ends_with_its_message():
    assert (
        line(ok=False, status_code=502, latency_ms=120, error_message="Connection timeout")
        == "[10:30:00] FAIL 502 120ms Connection timeout"
    )


@pytest.mark.parametrize(
    "ms, text",
    [(0, "0ms"), (45, "45ms"), (999, "999ms"), (1000, "1.00s"), (1004, "1.00s"), (1005, "1.01s"),
     (1500, "1.50s"), (1999, "2.00s"), (59999, "60.00s"), (None, "-")],
)
def test_latency_is_ms_below_a_second_then_seconds_with_two_decimals(ms, text):
    assert format_latency(ms) == text


def test_999_ms_and_1000_ms_in_a_line():
    assert line(latency_ms=999) == "[10:30:00] OK 200 999ms"
    assert line(latency_ms=1000) == "[10:30:00] OK 200 1.00s"


def test_a_missing_status_and_latency_are_dashes():
    assert line(status_code=None, latency_ms=None) == "[10:30:00] OK - -"
    assert (
        line(ok=False, status_code=None, latency_ms=None, error_message="Invalid URL: no host")
        == "[10:30:00] FAIL - - Invalid URL: no host"
    )


def test_no_trailing_space_without_a_message():
    assert line(ok=False, status_code=None, latency_ms=5000, error_message="") == "[10:30:00] FAIL - 5.00s"
    assert line(ok=False, status_code=503, error_message="   ") == "[10:30:00] FAIL 503 45ms"
    assert not line(ok=False, error_message="trailing   ").endswith(" ")


def test_an_ok_probe_never_shows_a_message():
    assert line(error_message="left over") == "[10:30:00] OK 200 45ms"


def test_a_message_with_a_newline_stays_on_its_line():
    forged = "refused\n[10:31:00] OK 200 1ms"
    text = line(ok=False, status_code=None, latency_ms=3, error_message=forged)
    assert text == "[10:30:00] FAIL - 3ms refused\\n[10:31:00] OK 200 1ms"
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize(
    "raw, escaped",
    [
        ("a\r\nb", "a\\r\\nb"),
        ("a\rb", "a\\rb"),
        ("tab\there", "tab\\there"),
        ("C:\\n is a path", "C:\\\\n is a path"),  # a real backslash cannot pass for an escape
        ("line\u2028sep", "line\\u2028sep"),
        ("nul\x00bell\x07", "nul\\u0000bell\\u0007"),
        ("next\x85line", "next\\u0085line"),
        ("请求超时 ⏳", "请求超时 ⏳"),
    ],
)
def test_control_characters_and_line_separators_are_escaped(raw, escaped):
    assert escape_message(raw) == escaped
    assert len(line(ok=False, error_message=raw).splitlines()) == 1


def test_times_are_in_the_display_time_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    entry = ProbeLog(ok=True, status_code=200, latency_ms=45, created_at=datetime(2026, 1, 29, 23, 30, tzinfo=UTC))
    assert format_probe_line(entry) == "[07:30:00] OK 200 45ms"
    assert export_filename(datetime(2026, 1, 29, 23, 30, tzinfo=UTC)) == "probe-logs-2026-01-30.txt"
    settings.TIME_ZONE = "UTC"
    assert format_probe_line(entry) == "[23:30:00] OK 200 45ms"
    assert export_filename(datetime(2026, 1, 29, 23, 30, tzinfo=UTC)) == "probe-logs-2026-01-29.txt"


# --- The download -------------------------------------------------------------------------


@pytest.fixture
def endpoint(db):
    return ProviderEndpointFactory(
        provider=ProviderFactory(name="anthropic-main"),
        label="primary",
        url="https://api.anthropic.example/v1/messages?key=sk-secret-value-123",
    )


@pytest.fixture
def probes(endpoint):
    """Ten probes a minute apart from T0: every third fails."""
    rows = []
    for i in range(10):
        failed = i % 3 == 2
        rows.append(ProbeLogFactory(
            endpoint=endpoint, created_at=T0 + timedelta(minutes=i), ok=not failed,
            status_code=502 if failed else 200, latency_ms=100 + i,
            error_type="http_5xx" if failed else "", error_message="HTTP 502 Bad Gateway" if failed else "",
        ))
    return rows


def url_of(endpoint) -> str:
    return reverse("exports:probe-logs-txt", args=[endpoint.pk])


def download(client, endpoint, **params):
    response = client.get(url_of(endpoint), params)
    assert response.status_code == 200, response.content
    return response, b"".join(response.streaming_content).decode()


def probe_lines_of(body: str) -> list[str]:
    return [text for text in body.splitlines() if not text.startswith("#")]


@pytest.mark.django_db
def test_admin_downloads_every_probe_in_time_order_as_text(admin_client, endpoint, probes):
    before = timezone.now()
    response, body = download(admin_client, endpoint)
    after = timezone.now()
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    names = {f'attachment; filename="{export_filename(t)}"' for t in (before, after)}
    assert response["Content-Disposition"] in names
    lines = body.split("\n")
    assert lines[-1] == ""  # every line ends in LF
    assert lines[0] == (
        f"# probe logs of anthropic-main / primary "
        f"https://api.anthropic.example/v1/messages?key=[REDACTED] (endpoint {endpoint.pk}); "
        "2026-01-29 10:30:00 .. 2026-01-29 10:39:00 UTC"
    )
    assert lines[1:-1] == [
        "[10:30:00] OK 200 100ms",
        "[10:31:00] OK 200 101ms",
        "[10:32:00] FAIL 502 102ms HTTP 502 Bad Gateway",
        "[10:33:00] OK 200 103ms",
        "[10:34:00] OK 200 104ms",
        "[10:35:00] FAIL 502 105ms HTTP 502 Bad Gateway",
        "[10:36:00] OK 200 106ms",
        "[10:37:00] OK 200 107ms",
        "[10:38:00] FAIL 502 108ms HTTP 502 Bad Gateway",
        "[10:39:00] OK 200 109ms",
    ]
    assert not any(text.endswith(" ") for text in lines)


@pytest.mark.django_db
def test_the_comment_names_the_endpoint_whose_url_secret_is_masked(admin_client, endpoint, probes):
    _, body = download(admin_client, endpoint)
    assert "sk-secret-value-123" not in body
    assert f"(endpoint {endpoint.pk})" in body.splitlines()[0]


@pytest.mark.django_db
def test_the_lines_follow_the_time_zone_setting(admin_client, endpoint, probes, settings):
    settings.TIME_ZONE = "America/New_York"
    _, body = download(admin_client, endpoint, max_lines=1)
    assert body.splitlines() == [
        f"# probe logs of anthropic-main / primary https://api.anthropic.example/v1/messages?key=[REDACTED] "
        f"(endpoint {endpoint.pk}); 2026-01-29 05:39:00 .. 2026-01-29 05:39:00 America/New_York",
        "[05:39:00] OK 200 109ms",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status, expected",
    [("ok", 7), ("fail", 3), ("all", 10), ("", 10), ("OK", 7), ("FAIL", 3), ("Fail", 3), ("ALL", 10), (" fail ", 3)],
)
def test_status_filter_in_any_case(admin_client, endpoint, probes, status, expected):
    _, body = download(admin_client, endpoint, status=status)
    lines = probe_lines_of(body)
    assert len(lines) == expected
    if status.strip().lower() == "fail":
        assert all(" FAIL " in text for text in lines)
    if status.strip().lower() == "ok":
        assert all(" OK " in text for text in lines)


@pytest.mark.django_db
def test_time_window_in_milliseconds_or_iso_with_an_exclusive_end(admin_client, endpoint, probes):
    start_ms = int((T0 + timedelta(minutes=2)).timestamp() * 1000)
    end_ms = int((T0 + timedelta(minutes=5)).timestamp() * 1000)
    _, body = download(admin_client, endpoint, start_time=start_ms, end_time=end_ms)
    assert [t[:10] for t in probe_lines_of(body)] == ["[10:32:00]", "[10:33:00]", "[10:34:00]"]
    _, iso = download(admin_client, endpoint, start_time="2026-01-29T10:32:00Z", end_time="2026-01-29T10:35:00+00:00")
    assert probe_lines_of(iso) == probe_lines_of(body)


@pytest.mark.django_db
def test_max_lines_keeps_the_newest_in_time_order(admin_client, endpoint, probes):
    _, body = download(admin_client, endpoint, max_lines=3)
    assert [t[:10] for t in probe_lines_of(body)] == ["[10:37:00]", "[10:38:00]", "[10:39:00]"]


@pytest.mark.django_db
def test_max_lines_defaults_to_100_and_allows_1000(admin_client, endpoint):
    ProbeLog.objects.bulk_create(
        ProbeLog(endpoint=endpoint, ok=True, status_code=200, latency_ms=5, created_at=T0 + timedelta(seconds=i))
        for i in range(1005)
    )
    _, body = download(admin_client, endpoint)
    lines = probe_lines_of(body)
    assert len(lines) == 100
    assert lines[-1].startswith("[10:46:44]")  # T0 + 1004 s, the newest
    _, body = download(admin_client, endpoint, max_lines=1000)
    assert len(probe_lines_of(body)) == 1000
    assert ExportAudit.objects.filter(kind="probe_logs", outcome="ok").last().rows in (100, 1000)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, field",
    [
        ({"max_lines": 1001}, "max_lines"),
        ({"max_lines": 0}, "max_lines"),
        ({"max_lines": -5}, "max_lines"),
        ({"max_lines": "many"}, "max_lines"),
        ({"status": "warn"}, "status"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "2026-01-29T11:00:00Z", "end_time": "2026-01-29T10:00:00Z"}, "end_time"),
        ({"range": "1h", "start_time": "2026-01-29T10:00:00Z"}, "range"),
        ({"range": "3d"}, "range"),
    ],
)
def test_bad_filters_are_a_400_naming_the_field(admin_client, endpoint, params, field):
    response = admin_client.get(url_of(endpoint), params)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    payload = response.json()
    assert payload["error"].startswith(f"{field}:")
    assert field in payload["fields"]
    assert not ExportAudit.objects.exists()


@pytest.mark.django_db
def test_search_matches_messages_error_types_and_status_codes(admin_client, endpoint, probes):
    ProbeLogFactory(endpoint=endpoint, created_at=T0 + timedelta(minutes=20), ok=False, status_code=None,
                    latency_ms=5000, error_type="timeout", error_message="Timed out after 5000 ms")
    assert len(probe_lines_of(download(admin_client, endpoint, search="bad gateway")[1])) == 3
    assert len(probe_lines_of(download(admin_client, endpoint, search="timeout")[1])) == 1
    assert len(probe_lines_of(download(admin_client, endpoint, search="502")[1])) == 3


@pytest.mark.django_db
def test_nothing_matching_is_an_empty_file_with_200(admin_client, endpoint, probes):
    response, body = download(admin_client, endpoint, start_time="2030-01-01T00:00:00Z")
    assert body == ""
    assert response["Content-Disposition"].startswith('attachment; filename="probe-logs-')
    audit = ExportAudit.objects.get()
    assert (audit.outcome, audit.rows, audit.bytes) == ("ok", 0, 0)


@pytest.mark.django_db
def test_only_this_endpoints_probes_are_exported(admin_client, endpoint, probes):
    ProbeLogFactory(created_at=T0 + timedelta(minutes=30), latency_ms=7777)  # another endpoint
    _, body = download(admin_client, endpoint)
    assert len(probe_lines_of(body)) == 10
    assert "7.78s" not in body


@pytest.mark.django_db
def test_anonymous_and_non_admins_get_401_and_a_denied_record(anon_client, alice_client, endpoint, probes):
    for client in (anon_client, alice_client):
        response = client.get(url_of(endpoint))
        assert response.status_code == 401
        assert set(response.json()) == {"error"}
    outcomes = list(ExportAudit.objects.values_list("kind", "outcome", "actor"))
    assert sorted(outcomes) == [("probe_logs", "denied", "alice"), ("probe_logs", "denied", "anonymous")]


@pytest.mark.django_db
def test_an_unknown_endpoint_is_a_404(admin_client):
    response = admin_client.get(reverse("exports:probe-logs-txt", args=[987654]))
    assert response.status_code == 404
    assert response.json()["error"] == "不存在 id 为 987654 的端点。"


@pytest.mark.django_db
def test_the_download_is_audited_with_its_filters(admin_client, admin_user, endpoint, probes):
    download(admin_client, endpoint, status="fail", max_lines=2)
    audit = ExportAudit.objects.get()
    assert (audit.kind, audit.channel, audit.user, audit.outcome) == ("probe_logs", "web", admin_user, "ok")
    assert audit.rows == 2
    assert audit.bytes > 0
    assert audit.filters == {"endpoint_id": endpoint.pk, "status": "fail", "max_lines": 2}


@pytest.mark.django_db
def test_post_is_not_allowed(admin_client, endpoint):
    assert admin_client.post(url_of(endpoint)).status_code == 405


# --- Admin action and command: the same bytes ----------------------------------------------


@pytest.mark.django_db
def test_admin_action_downloads_the_selected_probes(admin_client, endpoint, probes):
    chosen = [probes[2], probes[5], probes[6]]
    response = admin_client.post(
        CHANGELIST, {"action": "export_text", ACTION_CHECKBOX_NAME: [p.pk for p in chosen]}
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert probe_lines_of(body) == [
        "[10:32:00] FAIL 502 102ms HTTP 502 Bad Gateway",
        "[10:35:00] FAIL 502 105ms HTTP 502 Bad Gateway",
        "[10:36:00] OK 200 106ms",
    ]
    audit = ExportAudit.objects.get()
    assert (audit.channel, audit.outcome, audit.rows) == ("admin", "ok", 3)
    assert audit.filters["count"] == 3


@pytest.mark.django_db
def test_admin_action_refuses_probes_of_two_endpoints(admin_client, endpoint, probes):
    other = ProbeLogFactory()
    response = admin_client.post(
        CHANGELIST,
        {"action": "export_text", ACTION_CHECKBOX_NAME: [probes[0].pk, other.pk]},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200
    assert "one endpoint" in response.content.decode()
    assert not ExportAudit.objects.exists()


@pytest.mark.django_db
def test_the_action_is_offered_to_admins(admin_client, probes):
    assert b'value="export_text"' in admin_client.get(CHANGELIST).content


@pytest.mark.django_db
def test_command_writes_the_same_bytes_as_the_download(tmp_path, admin_client, endpoint, probes):
    out = tmp_path / "probes.txt"
    stderr = io.StringIO()
    call_command("export_probe_logs", str(endpoint.pk), "--status", "fail", "--max-lines", "2",
                 "--output", str(out), stderr=stderr)
    _, body = download(admin_client, endpoint, status="fail", max_lines=2)
    assert out.read_text() == body
    assert [p.name for p in tmp_path.iterdir()] == ["probes.txt"]  # the temporary was renamed
    assert "Wrote 2 probe lines" in stderr.getvalue()
    audit = ExportAudit.objects.get(channel="command")
    assert (audit.outcome, audit.rows, audit.user) == ("ok", 2, None)
    assert audit.actor.startswith("os:")
    assert audit.filters == {"endpoint_id": endpoint.pk, "status": "fail", "max_lines": 2}


@pytest.mark.django_db
def test_command_to_standard_output(endpoint, probes):
    stdout = io.StringIO()
    call_command("export_probe_logs", str(endpoint.pk), "--search", "502", "--start-time",
                 "2026-01-29T10:33:00Z", stdout=stdout, stderr=io.StringIO())
    assert probe_lines_of(stdout.getvalue()) == [
        "[10:35:00] FAIL 502 105ms HTTP 502 Bad Gateway",
        "[10:38:00] FAIL 502 108ms HTTP 502 Bad Gateway",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["987654"], "ENDPOINT_ID: no endpoint with id 987654"),
        (["{pk}", "--max-lines", "1001"], "--max-lines:"),
        (["{pk}", "--status", "warn"], "--status:"),
        (["{pk}", "--output", "/nonexistent-folder/x.txt"], "--output"),
    ],
)
def test_command_errors_name_what_was_wrong(endpoint, args, message):
    args = [a.format(pk=endpoint.pk) for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("export_probe_logs", *args, stdout=io.StringIO(), stderr=io.StringIO())

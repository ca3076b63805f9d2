"""The availability pages: admins only, cards with availability and a sparkline, the endpoint
page whose terminal shows the export's lines, the terminal's refresh, and "Probe now"."""

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from exports.models import ExportAudit
from monitoring.availability import latency_chart, latency_series, nice_ceiling
from monitoring.models import ProbeLog

from .factories import ProbeLogFactory, ProviderEndpointFactory, ProviderFactory

AVAILABILITY = reverse("dashboard:availability")


def health_url(endpoint):
    return reverse("dashboard:endpoint-health", args=[endpoint.pk])


@pytest.fixture
def endpoint(db):
    endpoint = ProviderEndpointFactory(provider=ProviderFactory(name="relay"), label="east")
    now = timezone.now()
    # The last hour: three OK probes and one failure; and one OK probe two hours ago.
    for minutes, ok, latency in ((50, True, 40), (30, True, 60), (20, False, 5000), (10, True, 80), (120, True, 20)):
        ProbeLogFactory(
            endpoint=endpoint, created_at=now - timedelta(minutes=minutes), ok=ok,
            status_code=None, latency_ms=latency,
            error_type="" if ok else "timeout", error_message="" if ok else "Timed out after 5000 ms",
        )
    endpoint.last_probe_at = now - timedelta(minutes=10)
    endpoint.last_probe_ok = True
    endpoint.last_probe_latency_ms = 1500
    endpoint.save()
    return endpoint


def terminal_text(html: str) -> str:
    match = re.search(r'<pre class="terminal" id="probe-terminal"[^>]*>(.*?)</pre>', html, re.S)
    assert match, "no terminal on the page"
    return match.group(1)


# --- Access ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_ask_anonymous_visitors_to_sign_in(anon_client, endpoint):
    for url in (AVAILABILITY, health_url(endpoint)):
        response = anon_client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_pages_and_actions_are_refused_to_non_admins(alice_client, endpoint):
    assert alice_client.get(AVAILABILITY).status_code == 403
    assert alice_client.get(health_url(endpoint)).status_code == 403
    assert alice_client.get(reverse("dashboard:endpoint-lines", args=[endpoint.pk])).status_code == 403
    assert alice_client.post(reverse("dashboard:endpoint-probe", args=[endpoint.pk])).status_code == 403
    assert ProbeLog.objects.filter(source="manual").count() == 0


@pytest.mark.django_db
def test_the_nav_link_is_shown_to_admins_only(admin_client, alice_client):
    link = f'href="{AVAILABILITY}"'.encode()
    assert link in admin_client.get(reverse("dashboard:logs")).content
    assert link not in alice_client.get(reverse("dashboard:logs")).content


# --- The cards --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_card_shows_status_last_latency_availability_and_a_sparkline(admin_client, endpoint):
    ProviderEndpointFactory(label="fresh")  # never probed
    response = admin_client.get(AVAILABILITY, {"range": "1h"}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    html = response.content.decode()
    card = re.search(rf'<article class="card health up" data-endpoint-id="{endpoint.pk}">(.*?)</article>', html, re.S)
    assert card, "no card for the endpoint"
    card = card.group(1)
    assert "1.50s" in card  # last latency, in the export's format
    assert '<dd class="availability">75.0%</dd>' in card  # 3 of the last hour's 4 probes
    assert '<path class="line" d="M' in card
    assert '<rect class="fail"' in card
    assert "never probed" in html


@pytest.mark.django_db
def test_the_range_widens_the_window(admin_client, endpoint):
    html = admin_client.get(AVAILABILITY, {"range": "24h"}).content.decode()
    assert '<dd class="availability">80.0%</dd>' in html  # 4 of 5 over a day
    # An unknown range falls back to the last 24 hours.
    assert '<dd class="availability">80.0%</dd>' in admin_client.get(AVAILABILITY, {"range": "1y"}).content.decode()


@pytest.mark.django_db
def test_latency_series_buckets_count_probes_and_average_ok_latency(endpoint):
    end = endpoint.last_probe_at + timedelta(minutes=10)  # the fixture's "now"
    start = end - timedelta(hours=1)
    series = latency_series(start, end, 6, [endpoint.pk])[endpoint.pk]
    assert (series.total, series.ok, series.availability) == (4, 3, 75.0)
    by_bucket = [(b.total, b.ok, b.latency_ms) for b in series.buckets]
    assert by_bucket == [(0, 0, None), (1, 1, 40.0), (0, 0, None), (1, 1, 60.0), (1, 0, None), (1, 1, 80.0)]
    chart = latency_chart(series, 60, 20)
    assert chart.max_ms == 100
    # Gaps where no probe was OK (bucket 2 empty, bucket 4 failed): three separate dots.
    assert chart.path == "M15.0 11.2 h0.01 M35.0 8.8 h0.01 M55.0 6.4 h0.01"
    assert [f[2:] for f in chart.fails] == [(1, 1)]


def test_axis_maximum_is_a_round_number():
    assert [nice_ceiling(v) for v in (0.5, 1, 3, 45, 101, 999, 1001)] == [1, 1, 5, 50, 200, 1000, 2000]


# --- The endpoint page ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_terminal_shows_the_same_lines_as_the_download(admin_client, endpoint):
    response = admin_client.get(health_url(endpoint), {"status": "fail"})
    html = response.content.decode()
    terminal = terminal_text(html)
    link = re.search(r'id="download-logs" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {"status": ["fail"], "range": ["24h"]}
    download = admin_client.get(link)
    body = b"".join(download.streaming_content).decode()
    file_lines = [text for text in body.splitlines() if not text.startswith("#")]
    assert terminal.splitlines() == file_lines
    assert len(file_lines) == 1 and file_lines[0].endswith("FAIL - 5.00s Timed out after 5000 ms")


@pytest.mark.django_db
def test_the_terminal_refresh_serves_the_same_lines_without_an_audit_record(admin_client, endpoint):
    page = admin_client.get(health_url(endpoint)).content.decode()
    src = re.search(r'data-src="([^"]+)"', page).group(1).replace("&amp;", "&")
    response = admin_client.get(src)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == terminal_text(page)
    assert len(response.content.decode().splitlines()) == 5  # newest last, the last 24 hours
    assert not ExportAudit.objects.exists()


@pytest.mark.django_db
def test_the_page_filters_search_and_max_lines(admin_client, endpoint):
    page = admin_client.get(health_url(endpoint), {"search": "timed out"}).content.decode()
    assert len(terminal_text(page).splitlines()) == 1
    page = admin_client.get(health_url(endpoint), {"max_lines": 2}).content.decode()
    assert len(terminal_text(page).splitlines()) == 2


@pytest.mark.django_db
def test_bad_filters_are_shown_and_disable_the_download(admin_client, endpoint):
    response = admin_client.get(health_url(endpoint), {"max_lines": "5000"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'role="alert"' in html and "max_lines" in html
    assert 'id="download-logs"' not in html
    lines = reverse("dashboard:endpoint-lines", args=[endpoint.pk])
    bad = admin_client.get(lines, {"max_lines": "5000"})
    assert bad.status_code == 400
    assert bad.content.decode().startswith("max_lines:")


@pytest.mark.django_db
def test_an_unknown_endpoint_is_a_404(admin_client):
    assert admin_client.get(reverse("dashboard:endpoint-health", args=[987654])).status_code == 404


# --- Probe now --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_probe_now_runs_one_manual_probe_and_leaves_the_schedule_alone(admin_client, probe_server, settings):
    settings.PROBE_METHOD = "get"
    endpoint = ProviderEndpointFactory(url=probe_server("/v1/messages"))
    scheduled = timezone.now() + timedelta(seconds=42)
    endpoint.next_probe_at = scheduled
    endpoint.save()
    back = AVAILABILITY + "?range=1h"
    response = admin_client.post(reverse("dashboard:endpoint-probe", args=[endpoint.pk]), {"next": back}, follow=True)
    assert response.redirect_chain[-1][0] == back
    log = ProbeLog.objects.get(endpoint=endpoint)
    assert (log.source, log.ok, log.status_code) == ("manual", True, 401)
    endpoint.refresh_from_db()
    assert endpoint.last_probe_at == log.created_at
    assert endpoint.last_probe_status_code == 401
    assert endpoint.next_probe_at == scheduled
    assert probe_server.seen == [("GET", "/v1/messages")]
    assert "OK 401" in response.content.decode()  # the message shows the line


@pytest.mark.django_db
def test_probe_now_ignores_an_offsite_next_and_refuses_get(admin_client, probe_server):
    endpoint = ProviderEndpointFactory(url=probe_server("/ok"))
    probe = reverse("dashboard:endpoint-probe", args=[endpoint.pk])
    response = admin_client.post(probe, {"next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"] == health_url(endpoint)
    assert admin_client.get(probe).status_code == 405
    assert ProbeLog.objects.filter(endpoint=endpoint).count() == 1


@pytest.mark.django_db
def test_a_secret_in_an_endpoint_url_is_masked_on_the_pages_and_in_the_file(admin_client):
    endpoint = ProviderEndpointFactory(label="", url="https://relay.example/v1?api_key=sk-very-secret-1234")
    ProbeLogFactory(endpoint=endpoint, ok=False, status_code=503, error_message="HTTP 503")
    for url in (AVAILABILITY, health_url(endpoint)):
        html = admin_client.get(url).content.decode()
        assert "sk-very-secret-1234" not in html
        assert "api_key=[REDACTED]" in html
    response = admin_client.get(reverse("exports:probe-logs-txt", args=[endpoint.pk]))
    body = b"".join(response.streaming_content).decode()
    assert "sk-very-secret-1234" not in body
    assert "api_key=[REDACTED]" in body.splitlines()[0]

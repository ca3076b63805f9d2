"""In Chromium: an admin opens an endpoint from the availability page, filters FAIL, watches
the terminal refresh itself, downloads the log, and finds the terminal's lines in the file."""

from datetime import timedelta

import pytest
from django.utils import timezone

from .factories import ProbeLogFactory, ProviderEndpointFactory, ProviderFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_downloads_the_lines_the_terminal_shows(page, live_server, login, admin_user, settings):
    settings.PROBE_TERMINAL_REFRESH_S = 1
    endpoint = ProviderEndpointFactory(provider=ProviderFactory(name="relay"), label="east")
    ProviderEndpointFactory(label="west")
    now = timezone.now()
    for i in range(30):
        failed = i % 4 == 0
        ProbeLogFactory(
            endpoint=endpoint, created_at=now - timedelta(minutes=60 - i), ok=not failed,
            status_code=(502 if i % 8 == 0 else None) if failed else 200, latency_ms=900 + i * 10,
            error_type="http_5xx" if failed else "",
            error_message=("upstream said\nno" if i == 8 else "HTTP 502 Bad Gateway") if failed else "",
        )

    login("admin")
    page.goto(f"{live_server.url}/dashboard/availability/")
    page.click(f"article[data-endpoint-id='{endpoint.pk}'] a.name")
    page.wait_for_url(f"**/availability/endpoints/{endpoint.pk}/**")
    page.select_option("select[name=status]", "fail")
    page.click("#probe-filters button[type=submit].primary")
    page.wait_for_url("**status=fail**")

    terminal = page.locator("#probe-terminal")
    shown = terminal.inner_text().splitlines()
    assert len(shown) == 8
    assert all(" FAIL " in line for line in shown)
    assert any(line.endswith("upstream said\\nno") for line in shown)

    # A new failure arrives; the terminal picks it up by itself, newest last.
    ProbeLogFactory(endpoint=endpoint, created_at=timezone.now(), ok=False, status_code=None,
                    latency_ms=5000, error_type="timeout", error_message="Timed out after 5000 ms")
    page.wait_for_function(
        "document.getElementById('probe-terminal').textContent.trim().endsWith('Timed out after 5000 ms')"
    )
    shown = terminal.inner_text().splitlines()
    assert len(shown) == 9

    with page.expect_download() as info:
        page.click("#download-logs")
    download = info.value
    assert download.suggested_filename == f"probe-logs-{timezone.localtime():%Y-%m-%d}.txt"
    text = open(download.path(), encoding="utf-8").read()
    comment, *lines = text.splitlines()
    assert comment.startswith("# probe logs of relay / east")
    assert lines == shown

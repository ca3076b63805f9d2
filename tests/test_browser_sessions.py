"""In Chromium: an admin opens a session, opens a request, exports it and parses the file."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from .factories import MessageRequestFactory, ProviderFactory, RequestDetailFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_exports_a_session_request_from_the_session_page(page, live_server, login, admin_user, alice):
    now = timezone.now()
    provider = ProviderFactory(name="anthropic-main")
    first = MessageRequestFactory(user=alice, key=alice.api_keys.get(), provider=provider,
                                  session_id="sess_browser_01", request_sequence=1,
                                  created_at=now - timedelta(minutes=5))
    second = MessageRequestFactory(user=alice, key=alice.api_keys.get(), provider=provider,
                                   session_id="sess_browser_01", request_sequence=2,
                                   created_at=now - timedelta(minutes=4))
    RequestDetailFactory(
        request=first,
        headers={"content-type": "application/json", "authorization": "Bearer sk-a******cdef"},
        body={"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "[REDACTED]"}]},
    )

    login("admin")
    page.click("nav a[href='/dashboard/sessions/']")
    page.click("#sessions-table a:text('sess_browser_01')")
    page.wait_for_url("**/dashboard/sessions/sess_browser_01/")
    assert page.locator("#session-requests tbody tr").count() == 2

    # The request without details: the button is disabled and says why.
    page.click(f"tr[data-request-id='{second.request_id}'] a.view-request")
    assert page.locator("#export-request").is_disabled()
    assert "No details were recorded" in page.locator("#export-unavailable").inner_text()

    page.click(f"tr[data-request-id='{first.request_id}'] a.view-request")
    assert '"authorization": "Bearer sk-a******cdef"' in page.locator("#detail-headers").inner_text()
    with page.expect_download() as info:
        page.click("#export-request")
    download = info.value
    assert download.suggested_filename == "session-sess_bro-seq-1-request.json"
    doc = json.loads(open(download.path(), encoding="utf-8").read())
    assert doc["sessionId"] == "sess_browser_01"
    assert doc["sequence"] == 1
    assert doc["requestId"] == first.request_id
    assert doc["headers"]["authorization"] == "Bearer sk-a******cdef"
    assert doc["meta"]["providerId"] == provider.pk
    assert set(doc["specialSettings"]) == {"headerModifications", "bodyModifications"}

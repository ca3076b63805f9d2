"""In Chromium: alice signs in, filters the usage logs, exports, and gets what the page lists."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from .factories import MessageRequestFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_alice_exports_exactly_the_rows_the_page_lists(page, live_server, login, alice, bob):
    t0 = datetime(2026, 1, 29, 10, 30, tzinfo=UTC)
    for i in range(30):
        MessageRequestFactory(
            user=(alice, bob)[i % 3 == 0], created_at=t0 + timedelta(minutes=i),
            model=("claude-a", "claude-b")[i % 2], session_id=f"sess-{i:02d}",
            status_code=(200, 429)[i % 4 == 0],
        )
    login("alice")
    page.goto(f"{live_server.url}/dashboard/logs/")
    page.select_option("select[name=model]", "claude-b")
    page.click("button[type=submit].primary")
    page.wait_for_url("**model=claude-b**")
    listed = page.locator("#usage-table tbody tr td.mono").all_inner_texts()
    assert listed, "the page should list alice's claude-b rows"

    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename.startswith("usage-logs-")
    data = open(download.path(), "rb").read()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [row[16] for row in rows[1:]] == listed
    assert {row[1] for row in rows[1:]} == {"alice"}
    assert {row[4] for row in rows[1:]} == {"claude-b"}
    assert page.locator("#total-requests").inner_text() == str(len(listed))

import json
import re
from datetime import timedelta
from decimal import Decimal
from html import unescape
from io import StringIO
from urllib.parse import urljoin, urlsplit

import pytest
from django.core.management import call_command
from django.utils import timezone

from .factories import ApiKeyFactory, MessageRequestFactory, ProviderFactory, RequestDetailFactory

LIST = "/dashboard/sessions/"


def session_ids(response) -> list[str]:
    return re.findall(r'<tr data-session-id="([^"]*)"', response.content.decode())


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def sessions(alice, bob, now):
    """alice: s-old (8 days ago) and s-alice (2 rows, 2 providers); bob: s-bob (newest)."""
    p1, p2 = ProviderFactory(name="anthropic-main"), ProviderFactory(name="relay")
    key = alice.api_keys.get()
    MessageRequestFactory(user=alice, key=key, provider=p1, session_id="s-old", created_at=now - timedelta(days=8))
    MessageRequestFactory(user=alice, key=key, provider=p1, session_id="s-alice", request_sequence=1,
                          created_at=now - timedelta(hours=3), input_tokens=100, output_tokens=10,
                          cache_read_input_tokens=0, cost_usd=Decimal("0.25"))
    MessageRequestFactory(user=alice, key=key, provider=p2, session_id="s-alice", request_sequence=2,
                          created_at=now - timedelta(hours=2), input_tokens=200, output_tokens=20,
                          cache_read_input_tokens=0, cost_usd=Decimal("0.5"))
    MessageRequestFactory(user=bob, key=bob.api_keys.get(), provider=p1, session_id="s-bob",
                          created_at=now - timedelta(hours=1))
    MessageRequestFactory(user=bob, session_id=None, created_at=now)  # no session: not listed


def test_sessions_are_listed_newest_first_within_the_last_7_days(admin_client, sessions):
    response = admin_client.get(LIST)
    assert response.status_code == 200
    assert session_ids(response) == ["s-bob", "s-alice"]
    assert b'id="default-window"' in response.content


def test_the_default_window_is_explained_in_chinese_by_default(admin_client, sessions):
    html = admin_client.get(LIST).content.decode()
    assert "最近 7 天内活跃的 Session" in html and "“全部时间”" in html
    assert "Sessions active in the last" not in html


def test_all_time_shows_older_sessions(admin_client, sessions):
    assert session_ids(admin_client.get(LIST + "?start_time=0")) == ["s-bob", "s-alice", "s-old"]


def test_a_session_row_sums_every_request(admin_client, sessions):
    html = admin_client.get(LIST).content.decode()
    row = re.search(r'<tr data-session-id="s-alice">(.*?)</tr>', html, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[:6] == ["s-alice", "alice", "alice-key", "2", "330", "0.750000"]
    assert cells[8] == "anthropic-main, relay"
    assert cells[6] < cells[7]  # first before last


def test_sessions_filter_by_user_key_and_time(admin_client, sessions, alice, bob, now):
    assert session_ids(admin_client.get(f"{LIST}?user_id={alice.pk}&start_time=0")) == ["s-alice", "s-old"]
    key = bob.api_keys.get()
    assert session_ids(admin_client.get(f"{LIST}?key_id={key.pk}")) == ["s-bob"]
    end = int((now - timedelta(minutes=90)).timestamp() * 1000)
    start = int((now - timedelta(days=1)).timestamp() * 1000)
    assert session_ids(admin_client.get(f"{LIST}?start_time={start}&end_time={end}")) == ["s-alice"]


def test_bad_filters_are_shown_not_applied(admin_client, sessions):
    response = admin_client.get(LIST + "?user_id=abc")
    assert response.status_code == 200
    assert b'role="alert"' in response.content
    assert session_ids(response) == ["s-bob", "s-alice"]


def test_sessions_are_paginated(admin_client, alice, now, settings):
    settings.SESSION_PAGE_SIZE = 2
    for n in range(5):
        MessageRequestFactory(user=alice, session_id=f"s{n}", created_at=now - timedelta(minutes=n))
    assert session_ids(admin_client.get(LIST)) == ["s0", "s1"]
    third = admin_client.get(LIST + "?page=3")
    assert session_ids(third) == ["s4"]
    assert 'href="?page=2"' in third.content.decode()  # back to newer; no later page
    assert "page=4" not in third.content.decode()


def test_the_list_costs_a_fixed_number_of_queries(admin_client, alice, now, django_assert_max_num_queries):
    for n in range(30):
        MessageRequestFactory(user=alice, session_id=f"s{n}", created_at=now - timedelta(minutes=n))
    with django_assert_max_num_queries(12):
        assert len(session_ids(admin_client.get(LIST))) == 30


@pytest.mark.parametrize("path", [LIST, "/dashboard/sessions/s-alice/"])
def test_the_pages_are_for_admins_only(alice_client, anon_client, sessions, path):
    assert alice_client.get(path).status_code == 403
    response = anon_client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_non_admin_gets_the_dashboards_translated_403_page(alice_client, sessions):
    response = alice_client.get(LIST)
    assert response.status_code == 403
    html = response.content.decode()
    assert 'class="topbar"' in html and 'id="error-page"' in html  # the dashboard's base template
    assert "无权访问" in html and "没有访问此页面的权限" in html
    assert 'href="/dashboard/">返回仪表盘</a>' in html
    assert "Forbidden" not in html
    english = alice_client.get(LIST, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Access denied" in english and "Back to the dashboard" in english


def test_an_anonymous_visitor_gets_the_styled_404_page(anon_client, db):
    response = anon_client.get("/dashboard/no-such-page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="error-page"' in html and "页面不存在" in html and 'href="/dashboard/"' in html
    assert "Sign out" not in html and "退出" not in html


def test_the_nav_link_is_shown_to_admins_only(admin_client, alice_client, sessions):
    assert b'href="/dashboard/sessions/"' in admin_client.get("/dashboard/logs/").content
    assert b'href="/dashboard/sessions/"' not in alice_client.get("/dashboard/logs/").content


def test_a_session_lists_its_requests_in_sequence(admin_client, alice, now):
    for seq in (3, 1, None, 2):
        MessageRequestFactory(user=alice, session_id="s-seq", request_sequence=seq,
                              created_at=now - timedelta(minutes=seq or 0))
    html = admin_client.get("/dashboard/sessions/s-seq/").content.decode()
    numbers = re.findall(r'<tr data-request-id="[^"]*"[^>]*>\s*<td class="num">([^<]*)</td>', html)
    assert numbers == ["1", "2", "3", "–"]


def test_an_unknown_session_is_404(admin_client, db):
    assert admin_client.get("/dashboard/sessions/nope/").status_code == 404


def test_the_request_view_shows_headers_body_meta_settings_and_the_export_button(admin_client, alice, now):
    row = MessageRequestFactory(user=alice, session_id="s-d", request_sequence=4, created_at=now)
    RequestDetailFactory(
        request=row, headers={"x-api-key": "sk-a******cdef"},
        body={"model": "m", "messages": [{"role": "user", "content": "<script>alert(1)</script>"}]},
        special_settings={"bodyModifications": [{"path": "metadata.user_id", "action": "set"}]},
    )
    html = admin_client.get(f"/dashboard/sessions/s-d/?request={row.request_id}").content.decode()
    assert 'id="request-detail"' in html
    assert '&quot;x-api-key&quot;: &quot;sk-a******cdef&quot;' in html
    assert '&quot;messages&quot;: [\n    {\n      &quot;role&quot;: &quot;user&quot;' in html  # pretty-printed
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&quot;providerId&quot;" in html  # meta
    assert "&quot;bodyModifications&quot;" in html
    button = re.search(r'<a [^>]*id="export-request"[^>]*>', html).group(0)
    assert f'href="/exports/sessions/s-d/requests/4.json?request_id={row.request_id}"' in button
    assert 'download="session-s-d-seq-4-request.json"' in button


def test_the_export_button_is_disabled_with_the_reason_without_details(admin_client, alice, now, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    fresh = MessageRequestFactory(user=alice, session_id="s-n", request_sequence=1, created_at=now)
    old = MessageRequestFactory(user=alice, session_id="s-n", request_sequence=2, created_at=now - timedelta(days=9))
    RequestDetailFactory(request=old, created_at=old.created_at)
    call_command("prune_session_details", stdout=StringIO())
    for row, reason in ((fresh, "never_recorded"), (old, "pruned")):
        html = admin_client.get(f"/dashboard/sessions/s-n/?request={row.request_id}").content.decode()
        assert re.search(r'<button type="button" id="export-request" disabled title="[^"]+">', html)
        assert f'data-reason="{reason}"' in html


def test_a_request_of_another_session_is_404(admin_client, alice, now):
    MessageRequestFactory(user=alice, session_id="s-a", created_at=now)
    other = MessageRequestFactory(user=alice, session_id="s-b", created_at=now)
    assert admin_client.get(f"/dashboard/sessions/s-a/?request={other.request_id}").status_code == 404


def test_a_session_id_with_a_slash_has_its_page(admin_client, alice, now):
    MessageRequestFactory(user=alice, session_id="team/a b", created_at=now)
    list_html = admin_client.get(LIST).content.decode()
    assert 'href="/dashboard/sessions/team/a%20b/"' in list_html
    assert admin_client.get("/dashboard/sessions/team/a%20b/").status_code == 200


def follow(href: str, base: str) -> str:
    """The path a browser requests for a link: dot segments resolved (/a/../b/ is /b/)."""
    return urlsplit(urljoin(f"http://testserver{base}", unescape(href))).path


# An id that is "." or ".." and nothing else has no URL a browser keeps (%2e%2e is ".." too);
# manage.py export_session_request still exports its requests.
@pytest.mark.parametrize("session_id", ["team/../x", "a/./b", "./s", "s/..", "../.."])
def test_links_to_a_session_id_with_dot_segments_reach_that_session(admin_client, alice, now, session_id):
    row = MessageRequestFactory(user=alice, session_id=session_id, request_sequence=1, created_at=now)
    RequestDetailFactory(request=row)
    MessageRequestFactory(user=alice, session_id="x", request_sequence=1, created_at=now)
    MessageRequestFactory(user=alice, session_id="b", request_sequence=1, created_at=now)

    for page in (LIST, "/dashboard/logs/"):
        html = admin_client.get(page).content.decode()
        hrefs = re.findall(r'<a href="([^"]*)">' + re.escape(session_id) + "</a>", html)
        assert hrefs, page
        path = follow(hrefs[0], page)
        response = admin_client.get(path)
        assert response.status_code == 200 and response.context["session_id"] == session_id

    selected = admin_client.get(path, {"request": row.request_id}).context["selected"]
    export = admin_client.get(follow(selected["export_url"], path))
    assert export.status_code == 200
    assert json.loads(b"".join(export.streaming_content) if export.streaming else export.content)[
        "sessionId"] == session_id


def test_key_names_of_the_list_are_shown_not_secrets(admin_client, alice, now):
    key = ApiKeyFactory(user=alice, name="second key")
    MessageRequestFactory(user=alice, key=key, session_id="s-k", created_at=now)
    html = admin_client.get(LIST).content.decode()
    assert "second key" in html and key.prefix not in html


def test_a_session_id_with_nul_is_a_400_not_a_500(admin_client, db):
    # No session id holds NUL (PostgreSQL text cannot): the path is refused before any query.
    response = admin_client.get("/dashboard/sessions/a%00b/")
    assert response.status_code == 400
    assert "路径中含有 NUL 字符" in response.content.decode()
    export = admin_client.get("/exports/sessions/a%00b/requests/1.json")
    assert export.status_code == 400 and "NUL" in export.json()["error"]

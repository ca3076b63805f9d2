"""The usage-log CSV over HTTP: format, permissions, filters, errors, audit, streaming."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.urls import reverse

from exports.models import ExportAudit
from monitoring.models import MessageRequest

from .factories import ApiKeyFactory, MessageRequestFactory, ProviderFactory, UserFactory

URL = reverse("exports:usage-csv")
ZH_HEADER = [
    "时间", "用户", "密钥", "供应商", "模型", "原始模型", "端点", "状态码", "输入 Token", "输出 Token",
    "缓存写入 5m", "缓存写入 1h", "缓存读取", "总 Token", "成本（USD）", "耗时（ms）", "Session ID",
    "重试次数",
]
EN_HEADER = [
    "Time", "User", "Key", "Provider", "Model", "Original model", "Endpoint", "Status code",
    "Input tokens", "Output tokens", "Cache write 5m", "Cache write 1h", "Cache read",
    "Total tokens", "Cost (USD)", "Duration (ms)", "Session ID", "Retry count",
]
T0 = datetime(2026, 1, 29, 10, 30, tzinfo=UTC)


def download(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content)
    return response, body


def parse(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body[3:].decode("utf-8"), newline="")))


def rows_of(client, **params):
    return parse(download(client, **params)[1])[1:]


# --- The file ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_empty_export_is_bom_and_chinese_header(admin_client):
    response, body = download(admin_client)
    assert body.count(b"\xef\xbb\xbf") == 1
    assert parse(body) == [ZH_HEADER]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="usage-logs-\d{8}-\d{6}\.csv"', response["Content-Disposition"]
    )
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_english_header_when_the_language_is_english(admin_client):
    response = admin_client.get(URL, HTTP_ACCEPT_LANGUAGE="en")
    assert parse(b"".join(response.streaming_content)) == [EN_HEADER]


@pytest.mark.django_db
def test_a_row_cell_by_cell(admin_client, alice):
    key = alice.api_keys.get()
    provider = ProviderFactory(name="anthropic-main")
    MessageRequestFactory(
        created_at=datetime(2026, 1, 29, 10, 30, 0, 5000, tzinfo=UTC),
        user=alice,
        key=key,
        provider=provider,
        model="claude-3-5-sonnet-20241022",
        original_model="claude-3-opus",
        endpoint="/v1/messages",
        status_code=200,
        input_tokens=1500,
        output_tokens=3200,
        cache_creation_5m_input_tokens=7,
        cache_creation_1h_input_tokens=11,
        cache_read_input_tokens=1200,
        cost_usd=Decimal("1.500000000000000"),
        duration_ms=2450,
        session_id="sess_abc123",
        provider_chain=[
            {"id": 1, "reason": "initial_selection"},
            {"id": 1, "reason": "retry_failed", "statusCode": 502},
            {"id": 2, "reason": "retry_success", "statusCode": 200},
        ],
    )
    assert rows_of(admin_client) == [[
        "2026-01-29T10:30:00.005Z", "alice", "alice-key", "anthropic-main",
        "claude-3-5-sonnet-20241022", "claude-3-opus", "/v1/messages", "200", "1500", "3200",
        "7", "11", "1200", "5918", "1.5", "2450", "sess_abc123", "1",
    ]]


@pytest.mark.django_db
def test_nulls_are_empty_cells_never_none(admin_client, alice):
    # An in-flight row blocked by nothing yet: no provider, status, tokens, cost or duration.
    MessageRequestFactory(
        user=alice, key=None, provider=None, status_code=None, input_tokens=None,
        output_tokens=None, cache_creation_5m_input_tokens=None,
        cache_creation_1h_input_tokens=None, cache_read_input_tokens=None, cost_usd=None,
        duration_ms=None, session_id=None, provider_chain=[],
    )
    (row,) = rows_of(admin_client)
    assert row[2:4] == ["", ""]
    assert row[7:17] == [""] * 10
    assert row[17] == "0"
    _, body = download(admin_client)
    assert b"None" not in body


@pytest.mark.django_db
def test_total_counts_known_token_columns_when_some_are_missing(admin_client, alice):
    MessageRequestFactory(user=alice, input_tokens=10, output_tokens=None,
                          cache_creation_5m_input_tokens=None, cache_creation_1h_input_tokens=5,
                          cache_read_input_tokens=None)
    (row,) = rows_of(admin_client)
    assert row[13] == "15"


@pytest.mark.django_db
def test_newest_first_then_by_id(admin_client, alice):
    same = MessageRequestFactory.create_batch(3, user=alice, created_at=T0)
    newer = MessageRequestFactory(user=alice, created_at=T0 + timedelta(seconds=1))
    older = MessageRequestFactory(user=alice, created_at=T0 - timedelta(seconds=1))
    expected = [newer, *sorted(same, key=lambda r: -r.pk), older]
    assert [row[16] for row in rows_of(admin_client)] == [r.session_id for r in expected]


@pytest.mark.django_db
def test_key_column_is_the_name_never_the_secret(admin_client, alice):
    key, secret = type(alice.api_keys.get()).objects.issue(user=alice, name="prod-key")
    MessageRequestFactory(user=alice, key=key)
    _, body = download(admin_client)
    assert b"prod-key" in body
    assert secret.encode() not in body
    assert key.secret_hash.encode() not in body


@pytest.mark.django_db
def test_hostile_text_is_escaped_and_quoted_end_to_end(admin_client):
    user = UserFactory(username="-mallory")  # a legal Django username
    key = ApiKeyFactory(user=user, name='=HYPERLINK("http://evil.example","x"), "more"\nline')
    provider = ProviderFactory(name="\uff1dSUM(1,2)")
    MessageRequestFactory(
        user=user, key=key, provider=provider, model="@model", original_model="\tmodel",
        endpoint="/v1/messages", session_id=" +1", input_tokens=-5,
    )
    (row,) = rows_of(admin_client)
    assert row[1] == "'-mallory"
    assert row[2] == '\'=HYPERLINK("http://evil.example","x"), "more"\nline'
    assert row[3] == "'\uff1dSUM(1,2)"
    assert row[4] == "'@model"
    assert row[5] == "'\tmodel"
    assert row[16] == "' +1"
    assert row[8] == "-5"  # numbers are never prefixed


@pytest.mark.django_db
def test_time_zone_setting_gives_offsets(admin_client, alice, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    MessageRequestFactory(user=alice, created_at=T0)
    (row,) = rows_of(admin_client)
    assert row[0] == "2026-01-29T18:30:00.000+08:00"


# --- Who sees what ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_gets_401_and_a_denied_record(anon_client):
    response = anon_client.get(URL)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    audit = ExportAudit.objects.get()
    assert (audit.outcome, audit.actor, audit.kind) == ("denied", "anonymous", "usage_csv")


@pytest.mark.django_db
def test_user_cannot_export_another_users_rows(alice_client, alice, bob):
    mine = MessageRequestFactory(user=alice, session_id="alice-row")
    MessageRequestFactory(user=bob, session_id="bob-row")
    for params in ({}, {"user_id": bob.pk}, {"user_id": str(bob.pk)}):
        assert [r[16] for r in rows_of(alice_client, **params)] == [mine.session_id]
    # Bob's key, asked for by alice: nothing, rather than bob's rows.
    assert rows_of(alice_client, key_id=bob.api_keys.get().pk) == []
    assert ExportAudit.objects.filter(user=alice, filters__user_id=alice.pk).count() == 4


@pytest.mark.django_db
def test_admin_exports_everyone(admin_client, alice, bob):
    MessageRequestFactory(user=alice)
    MessageRequestFactory(user=bob)
    assert sorted(r[1] for r in rows_of(admin_client)) == ["alice", "bob"]
    assert [r[1] for r in rows_of(admin_client, user_id=bob.pk)] == ["bob"]


# --- Filters --------------------------------------------------------------------------------


@pytest.fixture
def mixed_rows(alice, bob):
    """A spread of rows over every filtered column; returns the created objects."""
    p1, p2 = ProviderFactory(name="p1"), ProviderFactory(name="p2")
    alice_key2 = ApiKeyFactory(user=alice, name="alice-2")
    keys = {alice: [alice.api_keys.get(name="alice-key"), alice_key2], bob: [bob.api_keys.get()]}
    endpoints = ["/v1/messages", "/V1/Messages/", "/v1/messages/count_tokens", "/v1/responses/compact",
                 "/v1/chat/completions"]
    chains = [
        [],
        [{"reason": "initial_selection"}, {"reason": "request_success", "statusCode": 200}],
        [{"reason": "retry_failed", "statusCode": 502}, {"reason": "retry_success", "statusCode": 200}],
        [{"reason": "retry_failed"}, {"reason": "system_error"}, {"reason": "hedge_winner"}],
    ]
    rows = []
    for i in range(60):
        user = (alice, bob)[i % 2]
        rows.append(MessageRequestFactory(
            user=user,
            key=keys[user][(i // 2) % len(keys[user])],
            provider=(p1, p2, None)[i % 3],
            created_at=T0 + timedelta(minutes=i),
            status_code=(200, 200, 429, 500, None)[(i // 5) % 5],
            model=("m-a", "m-b", "m-c")[i % 3 if i % 7 else 0],
            endpoint=endpoints[i % 5],
            session_id=f"s{(i // 3) % 4}",
            provider_chain=chains[i % 4],
        ))
    return rows


def hidden(row):
    return row.endpoint.rstrip("/").lower() in ("/v1/messages/count_tokens", "/v1/responses/compact")


def expected_ids(rows, predicate, endpoint_asked=False):
    return sorted(r.pk for r in rows if predicate(r) and (endpoint_asked or not hidden(r)))


def exported_ids(client, **params):
    # The CSV has no id column; map rows back through (time, session, user), unique here.
    index = {(r.created_at, r.session_id, r.user.username): r.pk
             for r in MessageRequest.objects.select_related("user")}
    out = []
    for row in rows_of(client, **params):
        at = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
        out.append(index[(at, row[16], row[1])])
    return sorted(out)


def single_filters(rows, alice):
    p1 = next(r.provider for r in rows if r.provider and r.provider.name == "p1")
    key2 = alice.api_keys.get(name="alice-2")
    return [
        ({"user_id": alice.pk}, lambda r: r.user_id == alice.pk, False),
        ({"key_id": key2.pk}, lambda r: r.key_id == key2.pk, False),
        ({"provider_id": p1.pk}, lambda r: r.provider_id == p1.pk, False),
        ({"session_id": "s1"}, lambda r: r.session_id == "s1", False),
        ({"start_time": int((T0 + timedelta(minutes=20)).timestamp() * 1000)},
         lambda r: r.created_at >= T0 + timedelta(minutes=20), False),
        ({"end_time": (T0 + timedelta(minutes=40)).isoformat()},
         lambda r: r.created_at < T0 + timedelta(minutes=40), False),
        ({"status_code": 429}, lambda r: r.status_code == 429, False),
        ({"exclude_status_200": "true"}, lambda r: r.status_code is not None and r.status_code != 200, False),
        ({"model": "m-b"}, lambda r: r.model == "m-b", False),
        ({"endpoint": "/v1/messages"}, lambda r: r.endpoint.rstrip("/").lower() == "/v1/messages", True),
        ({"endpoint": "/V1/MESSAGES/count_tokens/"},
         lambda r: r.endpoint.lower() == "/v1/messages/count_tokens", True),
        ({"min_retry_count": 1}, lambda r: r.retry_count >= 1, False),
        ({"min_retry_count": 2}, lambda r: r.retry_count >= 2, False),
    ]


@pytest.mark.django_db
def test_each_filter_alone_matches_an_independent_count(admin_client, mixed_rows, alice):
    assert exported_ids(admin_client) == expected_ids(mixed_rows, lambda r: True)
    for params, predicate, asks_endpoint in single_filters(mixed_rows, alice):
        want = expected_ids(mixed_rows, predicate, asks_endpoint)
        assert want, f"the data set must exercise {params}"
        assert exported_ids(admin_client, **params) == want, params


@pytest.mark.django_db
def test_filters_combine_with_and(admin_client, mixed_rows, alice):
    filters = single_filters(mixed_rows, alice)
    pairs = [(a, b) for i, a in enumerate(filters) for b in filters[i + 1:]]
    for (pa, fa, ea), (pb, fb, eb) in pairs:
        if set(pa) & set(pb):
            continue
        want = expected_ids(mixed_rows, lambda r: fa(r) and fb(r), ea or eb)
        assert exported_ids(admin_client, **pa, **pb) == want, (pa, pb)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, field",
    [
        ({"user_id": "abc"}, "user_id"),
        ({"key_id": "-1"}, "key_id"),
        ({"provider_id": "1.5"}, "provider_id"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "2026-13-45"}, "end_time"),
        ({"end_time": "99999999999999999999999"}, "end_time"),
        ({"start_time": "-62135596800000"}, "start_time"),  # year 1
        ({"end_time": "253402300799999"}, "end_time"),  # year 9999
        ({"start_time": "0001-01-01T00:00:00"}, "start_time"),
        ({"status_code": "999"}, "status_code"),
        ({"exclude_status_200": "maybe"}, "exclude_status_200"),
        ({"min_retry_count": "-1"}, "min_retry_count"),
        ({"session_id": "x" * 201}, "session_id"),
        ({"start_time": "2026-02-01", "end_time": "2026-01-01"}, "end_time"),
        # Python's int() takes these; a filter does not.
        ({"user_id": "\uff11"}, "user_id"),  # full-width 1
        ({"status_code": "\uff15\uff10\uff10"}, "status_code"),
        ({"min_retry_count": "\u0663"}, "min_retry_count"),  # Arabic-Indic 3
        ({"key_id": "1_0"}, "key_id"),
        ({"start_time": "\uff11\uff17" + "\uff10" * 11}, "start_time"),  # full-width ms
        ({"provider_id": "99999999999999999999999"}, "provider_id"),  # past bigint
    ],
)
def test_bad_filter_gets_400_naming_the_field(admin_client, params, field):
    response = admin_client.get(URL, params)
    assert response.status_code == 400
    body = response.json()
    assert field in body["fields"]
    assert body["error"].startswith(f"{field}:") or f"; {field}:" in body["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, error",
    [
        ({"start_time": "soon"}, "start_time: 请输入毫秒时间戳或 ISO 8601 时间。"),
        ({"start_time": "1800-01-01"}, "start_time: 请输入 1900 年至 9000 年之间的时间。"),
    ],
)
def test_bad_filter_messages_are_in_chinese_by_default(admin_client, params, error):
    assert admin_client.get(URL, params).json()["error"] == error


# --- Limits, audit, streaming -----------------------------------------------------------------


@pytest.mark.django_db
def test_max_rows_setting_cuts_the_file_and_says_so(admin_client, alice, settings):
    MessageRequestFactory.create_batch(5, user=alice)
    settings.USAGE_EXPORT_MAX_ROWS = 3
    response, body = download(admin_client)
    assert response["X-Export-Truncated"] == "3"
    assert len(parse(body)) == 1 + 3
    settings.USAGE_EXPORT_MAX_ROWS = 5
    response, body = download(admin_client)
    assert "X-Export-Truncated" not in response
    assert len(parse(body)) == 1 + 5


@pytest.mark.django_db
def test_every_export_is_audited_with_rows_and_bytes(alice_client, alice):
    MessageRequestFactory.create_batch(4, user=alice)
    _, body = download(alice_client, model="claude-sonnet-4-5-20250929")
    audit = ExportAudit.objects.get()
    assert (audit.kind, audit.channel, audit.outcome) == ("usage_csv", "web", "ok")
    assert (audit.rows, audit.bytes, audit.user) == (4, len(body), alice)
    assert audit.filters == {"model": "claude-sonnet-4-5-20250929", "user_id": alice.pk}
    assert audit.finished_at is not None


@pytest.mark.django_db
def test_head_request_reads_no_rows(admin_client, alice):
    MessageRequestFactory(user=alice)
    response = admin_client.head(URL)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert ExportAudit.objects.get().outcome == "cancelled"


def bulk_rows(user, count):
    key = user.api_keys.get()
    MessageRequest.objects.bulk_create(
        MessageRequest(user=user, key=key, created_at=T0 + timedelta(seconds=i), model="m",
                       endpoint="/v1/messages", status_code=200, input_tokens=i,
                       session_id=f"bulk-{i:06d}", request_id=f"bulk-{i}")
        for i in range(count)
    )


@pytest.mark.django_db(transaction=True)
def test_first_bytes_leave_while_postgres_is_still_sending_rows(admin_client, alice):
    bulk_rows(alice, 40_000)
    response = admin_client.get(URL)
    chunks = iter(response.streaming_content)
    head = next(chunks)
    assert head.startswith(b"\xef\xbb\xbf")
    first_rows = next(chunks)
    assert first_rows.count(b"\n") < 40_000
    assert len(first_rows) < 128 * 1024  # blocks of ~64 KiB, never the whole file
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"], port=settings_dict["PORT"], user=settings_dict["USER"],
        password=settings_dict["PASSWORD"], dbname=settings_dict["NAME"],
    ) as observer:
        active = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY (%%'"
        ).fetchone()[0]
    assert active == 1, "the COPY should still be running when the first rows arrive"
    rest = b"".join(chunks)
    response.close()
    assert (first_rows + rest).count(b"\n") == 40_000
    assert ExportAudit.objects.get().rows == 40_000


@pytest.mark.django_db(transaction=True)
def test_closing_early_cancels_the_copy_and_records_it(admin_client, alice):
    bulk_rows(alice, 20_000)
    response = admin_client.get(URL)
    chunks = iter(response.streaming_content)
    next(chunks), next(chunks)
    response.close()
    audit = ExportAudit.objects.get()
    assert audit.outcome == "cancelled"
    assert 0 < audit.bytes
    # The connection is usable again: no COPY left running, no aborted transaction.
    assert MessageRequest.objects.count() == 20_000


@pytest.mark.django_db
def test_query_count_does_not_grow_with_rows(admin_client, alice):
    def count_queries():
        from django.db import connection as conn
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(conn) as ctx:
            download(admin_client)
        # SAVEPOINT/RELEASE appear only because the test itself runs inside a transaction.
        return len([q for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]])

    MessageRequestFactory(user=alice)
    few = count_queries()
    bulk_rows(alice, 3000)
    many = count_queries()
    assert few == many
    assert few == 6  # session, user, audit insert, SET LOCAL jit, COPY, audit update

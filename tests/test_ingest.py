import base64
import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from monitoring.models import MessageRequest, RequestDetail

from .factories import ApiKeyFactory, MessageRequestFactory, ProviderFactory, UserFactory

TOKEN = "ingest-token-0123456789abcdef"
URL = "/api/ingest/requests"


@pytest.fixture(autouse=True)
def _ingest_token(settings):
    settings.INGEST_TOKEN = TOKEN


def post(client, payload, token=TOKEN, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post(URL, body, content_type="application/json", **headers, **extra)


def row(key, n=0, **fields):
    return {"request_id": f"req-{n}", "key_id": key.pk, "session_id": "sess-ingest",
            "request_sequence": n + 1, "model": "claude-sonnet-4-5", "status_code": 200, **fields}


@pytest.fixture
def key(alice):
    return alice.api_keys.get()


def test_request_without_token_is_401_and_stores_nothing(anon_client, key):
    response = post(anon_client, [row(key)], token=None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert MessageRequest.objects.count() == 0


def test_request_with_wrong_token_is_401(anon_client, key):
    assert post(anon_client, [row(key)], token=TOKEN + "x").status_code == 401
    assert post(anon_client, [row(key)], token="").status_code == 401


def test_basic_auth_with_the_token_is_refused(anon_client, key):
    response = anon_client.post(URL, "[]", content_type="application/json",
                                HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert response.status_code == 401


def test_ingest_is_disabled_without_a_configured_token(anon_client, key, settings):
    settings.INGEST_TOKEN = ""
    response = post(anon_client, [row(key)], token="")
    assert response.status_code == 503
    assert "INGEST_TOKEN" in response.json()["error"]


def test_a_signed_in_admin_session_is_not_enough(admin_client, key):
    assert post(admin_client, [row(key)], token=None).status_code == 401


def test_only_post_is_allowed(anon_client):
    assert anon_client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_one_row_as_an_object_is_stored(anon_client, key):
    response = post(anon_client, row(key, cost_usd="0.015600000000000", input_tokens=10))
    assert response.status_code == 200, response.content
    assert response.json() == {"received": 1, "inserted": 1, "duplicates": 0, "details_stored": 0}
    stored = MessageRequest.objects.get(request_id="req-0")
    assert stored.user == key.user and stored.key == key
    assert stored.cost_usd == Decimal("0.0156")
    assert stored.input_tokens == 10
    assert stored.session_id == "sess-ingest" and stored.request_sequence == 1


def test_a_batch_is_stored_and_a_retried_batch_adds_nothing(anon_client, key):
    batch = [row(key, n) for n in range(25)]
    first = post(anon_client, batch)
    assert first.json() == {"received": 25, "inserted": 25, "duplicates": 0, "details_stored": 0}
    again = post(anon_client, batch)
    assert again.status_code == 200
    assert again.json() == {"received": 25, "inserted": 0, "duplicates": 25, "details_stored": 0}
    assert MessageRequest.objects.count() == 25


def test_a_batch_of_1000_mixed_rows_is_stored_value_for_value(anon_client, key, bob):
    provider = ProviderFactory()
    batch = []
    for n in range(1000):
        data = row(key, n, input_tokens=[None, 5, 2**40][n % 3], cost_usd=[None, "0.5"][n % 2],
                   client_ip=["203.0.113.9", "2001:db8::1", None][n % 3],
                   provider_id=provider.pk if n % 4 else None, status_code=None if n % 5 == 0 else 200,
                   provider_chain=[{"reason": "retry_failed"}, {"reason": "retry_success", "statusCode": 200}]
                   if n % 7 == 0 else [])
        if n % 10 == 0:
            data["detail"] = {"method": "POST", "headers": {"x-api-key": f"sk-secret-value-{n:04d}"},
                              "body": {"n": n}}
        if n % 2:
            data.update(key_id=None, user_id=bob.pk)
        batch.append(data)
    response = post(anon_client, batch)
    assert response.json() == {"received": 1000, "inserted": 1000, "duplicates": 0, "details_stored": 100}
    stored = {r.request_id: r for r in MessageRequest.objects.select_related("detail")}
    for n in (0, 1, 2, 3, 7, 10, 999):
        r = stored[f"req-{n}"]
        assert r.input_tokens == [None, 5, 2**40][n % 3]
        assert r.cost_usd == [None, Decimal("0.5")][n % 2]
        assert r.client_ip == ["203.0.113.9", "2001:db8::1", None][n % 3]
        assert r.provider_id == (provider.pk if n % 4 else None)
        assert r.status_code == (None if n % 5 == 0 else 200)
        assert r.retry_count == (1 if n % 7 == 0 else 0)
        assert (r.user_id, r.key_id) == ((bob.pk, None) if n % 2 else (key.user_id, key.pk))
        assert r.model == "claude-sonnet-4-5" and r.error_message == "" and r.blocked_by == ""
    assert stored["req-10"].detail.headers == {"x-api-key": "sk-s******0010"}
    assert stored["req-10"].detail.body == {"n": 10}


def test_a_partly_new_batch_inserts_only_the_new_rows(anon_client, key):
    post(anon_client, [row(key, n) for n in range(3)])
    response = post(anon_client, [row(key, n) for n in range(5)])
    assert response.json()["inserted"] == 2
    assert MessageRequest.objects.count() == 5


def test_key_by_prefix_names_the_user(anon_client, key):
    data = row(key)
    del data["key_id"]
    data["key_prefix"] = key.prefix
    assert post(anon_client, data).status_code == 200
    stored = MessageRequest.objects.get()
    assert (stored.key_id, stored.user_id) == (key.pk, key.user_id)


def test_user_alone_is_enough(anon_client, alice):
    assert post(anon_client, {"request_id": "r", "user_id": alice.pk}).status_code == 200
    stored = MessageRequest.objects.get()
    assert stored.user == alice and stored.key is None


def test_retry_count_comes_from_the_provider_chain(anon_client, key):
    chain = [
        {"id": 1, "reason": "initial_selection"},
        {"id": 1, "reason": "retry_failed", "statusCode": 502},
        {"id": 2, "reason": "system_error"},
        {"id": 2, "reason": "retry_success", "statusCode": 200},
    ]
    post(anon_client, [row(key, 0, provider_chain=chain), row(key, 1)])
    counts = dict(MessageRequest.objects.values_list("request_id", "retry_count"))
    assert counts == {"req-0": 2, "req-1": 0}


def test_a_chain_with_malformed_entries_counts_only_real_attempts(anon_client, key):
    chain = [
        None, 1, "retry_failed", {"reason": ["retry_failed"]}, {"reason": {"a": 1}},
        {"reason": "retry_failed", "statusCode": 502},
        {"reason": "retry_success", "statusCode": 200},
    ]
    response = post(anon_client, [row(key, 0, provider_chain=chain)])
    assert response.status_code == 200, response.content
    assert MessageRequest.objects.get(request_id="req-0").retry_count == 1


@pytest.mark.parametrize(
    "sent, stored",
    [("0.00000000000000049", Decimal("0E-15")), (0.0156, Decimal("0.0156")),
     ("1.0000000000000005", Decimal("1.000000000000000")), ("123456.5", Decimal("123456.5"))],
)
def test_costs_are_rounded_to_the_columns_15_places(anon_client, key, sent, stored):
    assert post(anon_client, row(key, cost_usd=sent)).status_code == 200
    assert MessageRequest.objects.get().cost_usd == stored


@pytest.mark.parametrize("sent", ["1234567.5", "-1", "NaN", "abc", True])
def test_impossible_costs_are_refused(anon_client, key, sent):
    response = post(anon_client, row(key, cost_usd=sent))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "cost_usd"


def test_a_sent_retry_count_is_refused_not_trusted(anon_client, key):
    response = post(anon_client, row(key, retry_count=5))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "retry_count"
    assert "provider_chain" in response.json()["errors"][0]["message"]


def test_times_are_accepted_as_iso_or_epoch_milliseconds(anon_client, key):
    post(anon_client, [row(key, 0, created_at="2026-01-29T10:30:00.000Z"),
                       row(key, 1, created_at=1769682600000)])
    times = {r.request_id: r.created_at.isoformat() for r in MessageRequest.objects.all()}
    assert times == {"req-0": "2026-01-29T10:30:00+00:00", "req-1": "2026-01-29T10:30:00+00:00"}


def test_validation_errors_name_the_row_and_the_field_and_store_nothing(anon_client, key):
    batch = [
        row(key, 0),
        {**row(key, 1), "input_tokens": -5},
        {**row(key, 2), "provider_id": 999999, "colour": "red"},
        {**row(key, 3), "detail": {"headers": "not an object"}},
        {"session_id": "no id"},
    ]
    response = post(anon_client, batch)
    assert response.status_code == 400
    body = response.json()
    found = {(e["row"], e["field"]) for e in body["errors"]}
    assert found == {
        (1, "input_tokens"),
        (2, "provider_id"),
        (2, "colour"),
        (3, "detail.headers"),
        (4, "request_id"),
        (4, "user_id"),
    }
    assert "rows[1].input_tokens:" in body["error"]
    assert body["error_count"] == 6
    assert MessageRequest.objects.count() == 0


def test_a_key_of_another_user_is_refused(anon_client, key, bob):
    response = post(anon_client, row(key, user_id=bob.pk))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "key_id"


def test_an_unknown_key_prefix_is_refused(anon_client, key):
    data = {"request_id": "r", "key_prefix": "sk-00000000"}
    response = post(anon_client, data)
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"row": 0, "field": "key_prefix", "message": "No API key has the prefix 'sk-00000000'."}
    ]


def test_a_request_id_twice_in_one_batch_is_refused(anon_client, key):
    response = post(anon_client, [row(key, 0), row(key, 0)])
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "row": 1, "field": "request_id", "message": "Repeats rows[0] of this batch."
    }


@pytest.mark.parametrize(
    "payload, message",
    [(b"{not json", "Not valid JSON"), (b"42", "Send a usage row"), (b"\xff\xfe", "Not valid JSON")],
)
def test_a_body_that_is_not_rows_is_400(anon_client, payload, message):
    response = post(anon_client, payload)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert message in response.json()["error"]


def test_a_body_without_a_content_length_is_411(anon_client, key):
    # A chunked upload: WSGI gives no CONTENT_LENGTH, and the body would read as empty.
    response = anon_client.generic(
        "POST", URL, json.dumps(row(key)), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert response.status_code == 411
    assert "Content-Length" in response.json()["error"]
    assert not MessageRequest.objects.exists()


def test_an_empty_body_with_content_length_0_is_still_a_json_400(anon_client, db):
    response = anon_client.generic(
        "POST", URL, b"", HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        CONTENT_TYPE="application/json", CONTENT_LENGTH="0",
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


def test_json_is_required(anon_client):
    response = anon_client.post(URL, "a=1", content_type="application/x-www-form-urlencoded",
                                HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 415


def test_a_body_over_the_limit_is_413(anon_client, key, settings):
    settings.INGEST_MAX_BODY_BYTES = 1000
    response = post(anon_client, [row(key, n) for n in range(20)])
    assert response.status_code == 413
    assert MessageRequest.objects.count() == 0


def test_a_batch_over_the_row_limit_is_400(anon_client, key, settings):
    settings.INGEST_MAX_ROWS = 3
    response = post(anon_client, [row(key, n) for n in range(4)])
    assert response.status_code == 400
    assert "At most 3 rows" in response.json()["error"]


def test_details_are_stored_with_the_row(anon_client, key):
    provider = ProviderFactory()
    detail = {
        "method": "post",
        "client_url": "https://hub.example/v1/messages?beta=true",
        "upstream_url": "https://api.example/v1/messages",
        "headers": {"content-type": "application/json", "x-api-key": "sk-ant-0123456789abcdef"},
        "body": {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        "meta": {"note": "first try"},
        "special_settings": {"headerModifications": [{"action": "remove", "name": "x-stainless-os"}]},
    }
    response = post(anon_client, row(key, provider_id=provider.pk, status_code=429,
                                     created_at="2026-01-29T10:30:00Z", detail=detail))
    assert response.json()["details_stored"] == 1
    stored = RequestDetail.objects.select_related("request").get()
    assert stored.method == "POST"
    assert stored.response_status == 429  # the row's status when the detail names none
    assert stored.headers == {"content-type": "application/json", "x-api-key": "sk-a******cdef"}
    assert stored.body["messages"] == [{"role": "user", "content": "[REDACTED]"}]
    assert stored.body["max_tokens"] == 10
    # Retention counts from the request's own time.
    assert stored.created_at == stored.request.created_at


def test_a_retry_with_details_fills_a_row_stored_without_them(anon_client, key):
    post(anon_client, row(key))
    response = post(anon_client, row(key, detail={"method": "POST", "body": {"a": 1}}))
    assert response.json() == {"received": 1, "inserted": 0, "duplicates": 1, "details_stored": 1}
    post(anon_client, row(key, detail={"method": "GET", "body": {"a": 2}}))
    assert RequestDetail.objects.get().method == "POST"  # the first copy stays


def test_a_retried_batch_does_not_bring_back_pruned_details(anon_client, key, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    old = (timezone.now() - timedelta(days=10)).isoformat()
    sent = row(key, created_at=old, detail={"method": "POST", "body": {"a": 1}})
    assert post(anon_client, sent).json()["details_stored"] == 1
    call_command("prune_session_details", stdout=StringIO())
    response = post(anon_client, sent)
    assert response.json() == {"received": 1, "inserted": 0, "duplicates": 1, "details_stored": 0}
    assert not RequestDetail.objects.exists()
    assert MessageRequest.objects.get().details_removed == "pruned"


def test_rows_already_written_by_the_dashboard_are_duplicates(anon_client, key):
    MessageRequestFactory(request_id="req-0", user=key.user, key=key)
    assert post(anon_client, row(key)).json()["inserted"] == 0


def test_a_detail_with_two_bodies_is_refused(anon_client, key):
    response = post(anon_client, row(key, detail={"body": {}, "body_text": "x"}))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "detail.body_text"


def test_bad_base64_is_refused(anon_client, key):
    response = post(anon_client, row(key, detail={"body_base64": "***"}))
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "detail.body_base64"


@pytest.mark.parametrize("value", ["1", "  7", True, False, "1e3"])
@pytest.mark.parametrize("field", ["user_id", "key_id", "provider_id", "status_code", "input_tokens",
                                   "duration_ms", "request_sequence"])
def test_integer_fields_refuse_strings_and_booleans_with_one_error(anon_client, alice, field, value):
    fields = {"request_id": "r", "user_id": alice.pk, field: value}
    response = post(anon_client, fields)
    body = assert_refused(response, field)
    assert body["error_count"] == 1, body["errors"]
    assert body["errors"][0]["message"] == "Enter a whole number (a JSON number, not a string or a boolean)."


def test_a_detail_response_status_refuses_a_string(anon_client, key):
    assert_refused(post(anon_client, row(key, detail={"response_status": "200"})), "detail.response_status")


def test_ingest_errors_are_in_english_whatever_the_deployment_language(anon_client, key, settings):
    settings.LANGUAGE_CODE = "zh-hans"
    response = post(anon_client, row(key, input_tokens=-1), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 400
    assert response.json()["error"] == (
        "rows[0].input_tokens: Ensure this value is greater than or equal to 0."
    )
    response = post(anon_client, row(key), token="wrong", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json()["error"].startswith("Unauthorized")


def test_a_soft_deleted_user_can_still_be_named(anon_client, db):
    user = UserFactory(username="gone")
    ApiKeyFactory(user=user)
    user.soft_delete()
    assert post(anon_client, {"request_id": "r", "user_id": user.pk}).status_code == 200


# --- Bodies PostgreSQL cannot store are 400s naming the row and the field, never 500s ---------

def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def assert_refused(response, field, row_index=0, *, in_message=None):
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    fields = [(e["row"], e["field"]) for e in body["errors"]]
    assert (row_index, field) in fields, body
    prefix = f"rows[{row_index}].{field}:" if row_index is not None else f"{field}:"
    assert prefix in body["error"]
    if in_message is not None:
        assert in_message in body["error"]
    assert MessageRequest.objects.count() == 0
    return body


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"provider_chain": [{"reason": "retry_failed", "note": "a\x00b"}]}, "provider_chain[0].note"),
        ({"provider_chain": [{"reason\x00": "retry_failed"}]}, 'provider_chain[0]["reason\\u0000"]'),
        ({"detail": {"body": {"model": "m\x00"}}}, "detail.body.model"),
        ({"detail": {"body": {"messages": [{"content": "\x00"}]}}}, "detail.body.messages[0].content"),
        ({"detail": {"headers": {"x-trace": "v\x00"}}}, "detail.headers.x-trace"),
        ({"detail": {"headers": {"x-trace": ["ok", "\x00"]}}}, "detail.headers.x-trace[1]"),
        ({"detail": {"meta": {"k": ["\x00"]}}}, "detail.meta.k[0]"),
        ({"detail": {"special_settings": {"headerModifications": [{"name": "a", "value": "\x00"}]}}},
         "detail.special_settings.headerModifications[0].value"),
        ({"detail": {"method": "PO\x00ST"}}, "detail.method"),
        ({"detail": {"client_url": "https://hub.example/\x00"}}, "detail.client_url"),
        ({"model": "claude\x00"}, "model"),
        ({"session_id": "\x00"}, "session_id"),
        ({"error_message": "boom\x00"}, "error_message"),
        ({"user_agent": "ua\x00"}, "user_agent"),
        ({"request_id": "req\x00"}, "request_id"),
        ({"key_id": None, "key_prefix": "sk-\x00"}, "key_prefix"),
        ({"colour\x00": 1}, '["colour\\u0000"]'),
    ],
)
def test_nul_in_any_string_is_refused_naming_its_path(anon_client, key, fields, field):
    assert_refused(post(anon_client, row(key, **fields)), field, in_message="NUL")


@pytest.mark.parametrize("where", ["body_base64", "body_text"])
def test_nul_inside_a_json_body_sent_raw_is_refused(anon_client, key, where):
    text = '{"model": "m", "messages": [{"role": "user", "content": "a\\u0000b"}]}'
    detail = {"body_base64": b64(text)} if where == "body_base64" else {"body_text": text}
    assert_refused(post(anon_client, row(key, detail=detail)), "detail." + where,
                   in_message="messages[0].content")


@pytest.mark.parametrize("store_messages", [True, False])
@pytest.mark.parametrize("where", ["body_base64", "body_text"])
def test_a_raw_text_body_with_nul_is_stored_as_base64(anon_client, key, settings, where,
                                                      store_messages):
    settings.STORE_SESSION_MESSAGES = store_messages
    text = "field=a\x00b&other=1"
    detail = {"body_base64": b64(text)} if where == "body_base64" else {"body_text": text}
    response = post(anon_client, row(key, detail=detail))
    assert response.status_code == 200, response.content[:300]
    stored = RequestDetail.objects.get()
    assert stored.body is None
    if store_messages:
        assert stored.body_format == "base64"
        assert base64.b64decode(stored.body_text) == text.encode()
    else:
        assert (stored.body_format, stored.body_text) == ("text", "[REDACTED]")


def raw_row(key, placeholder_fields: dict, literal: str) -> str:
    """A row as JSON text whose "@@" string value is replaced by a bare literal."""
    return json.dumps(row(key, **placeholder_fields)).replace('"@@"', literal)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"provider_chain": [{"reason": "retry_failed", "latency": "@@"}]}, "provider_chain[0].latency"),
        ({"detail": {"body": {"model": "m", "temperature": "@@"}}}, "detail.body.temperature"),
        ({"detail": {"meta": {"x": ["@@"]}}}, "detail.meta.x[0]"),
        ({"detail": {"headers": {"x-n": "@@"}}}, "detail.headers.x-n"),
        ({"cost_usd": "@@"}, "cost_usd"),
        ({"input_tokens": "@@"}, "input_tokens"),
    ],
)
def test_non_finite_numbers_are_refused_when_parsing(anon_client, key, fields, field, literal):
    response = post(anon_client, raw_row(key, fields, literal))
    assert_refused(response, field, in_message=literal.lstrip("-").replace("1e400", "out of range"))


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "1e400"])
def test_non_finite_numbers_in_a_raw_json_body_are_refused(anon_client, key, literal):
    text = '{"model": "m", "temperature": ' + literal + "}"
    response = post(anon_client, row(key, detail={"body_base64": b64(text)}))
    assert_refused(response, "detail.body_base64", in_message="temperature")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"model": "\ud800"}, "model"),
        ({"session_id": "abc\udfff"}, "session_id"),
        ({"provider_chain": [{"reason": "\udc00"}]}, "provider_chain[0].reason"),
        ({"detail": {"body": {"model": "\ud83d"}}}, "detail.body.model"),
        ({"detail": {"headers": {"x-\ud800": "v"}}}, 'detail.headers["x-\\ud800"]'),
        ({"detail": {"body_text": "text \ud800"}}, "detail.body_text"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_path(anon_client, key, fields, field):
    assert_refused(post(anon_client, row(key, **fields)), field, in_message="surrogate")


def test_a_lone_surrogate_encoded_raw_in_the_body_is_refused(anon_client, key):
    # CESU-style bytes for U+D800: json.loads decodes bytes with surrogatepass.
    raw = json.dumps(row(key, model="@@")).encode().replace(b"@@", b"\xed\xa0\x80")
    assert_refused(post(anon_client, raw), "model", in_message="surrogate")


def test_a_real_surrogate_pair_is_one_character_and_accepted(anon_client, key):
    response = post(anon_client, row(key, model="\ud83d\ude00", detail={"body": {"m": "\U0001F600"}}))
    assert response.status_code == 200, response.content[:300]
    assert MessageRequest.objects.get().model == "\U0001F600"


@pytest.mark.parametrize(
    "payload, field",
    [
        ("[" * 100000 + "]" * 100000, "body"),
        ('{"request_id": "r", "detail": {"body": ' + "[" * 100000 + "]" * 100000 + "}}", "body"),
    ],
)
def test_a_body_nested_beyond_the_parser_is_400(anon_client, db, payload, field):
    assert_refused(post(anon_client, payload), field, row_index=None, in_message="nested")


@pytest.mark.parametrize("depth", [150, 900])
def test_json_nested_deeper_than_the_limit_is_refused(anon_client, key, depth):
    payload = json.dumps(row(key, detail={"body": "@@"})).replace(
        '"@@"', "[" * depth + "]" * depth)
    assert_refused(post(anon_client, payload), "detail.body", in_message="nested")


@pytest.mark.parametrize("depth", [150, 900, 100000])
def test_a_raw_json_body_nested_too_deeply_is_refused(anon_client, key, depth):
    response = post(anon_client, row(key, detail={"body_text": "[" * depth + "]" * depth}))
    assert_refused(response, "detail.body_text", in_message="nested")


def test_ordinary_nesting_is_accepted(anon_client, key):
    body = {"tools": [{"input_schema": {"properties": {"a": {"items": {"items": {"type": "x"}}}}}}]}
    assert post(anon_client, row(key, detail={"body": body})).status_code == 200


@pytest.mark.parametrize(
    "field, value",
    [
        ("duration_ms", 10**12),
        ("duration_ms", 2**31),
        ("status_code", 32768),
        ("status_code", 10**12),
        ("input_tokens", 2**63),
        ("output_tokens", 10**30),
        ("cache_read_input_tokens", 2**64),
        ("cache_creation_5m_input_tokens", 2**63),
        ("cache_creation_1h_input_tokens", 2**63),
        ("request_sequence", 2**31),
        ("request_sequence", 10**20),
        ("user_id", 2**63),
        ("key_id", 2**63),
        ("provider_id", 2**63),
        ("created_at", 10**20),
    ],
)
def test_integers_beyond_the_columns_are_refused(anon_client, key, field, value):
    assert_refused(post(anon_client, row(key, **{field: value})), field)


def test_integers_at_the_column_limits_are_stored(anon_client, key):
    response = post(anon_client, row(key, duration_ms=2**31 - 1, input_tokens=2**63 - 1,
                                     request_sequence=2**31 - 1))
    assert response.status_code == 200, response.content[:300]
    stored = MessageRequest.objects.get()
    assert (stored.duration_ms, stored.input_tokens, stored.request_sequence) == (
        2**31 - 1, 2**63 - 1, 2**31 - 1)


def test_a_detail_response_status_beyond_its_column_is_refused(anon_client, key):
    assert_refused(post(anon_client, row(key, detail={"response_status": 10**9})),
                   "detail.response_status")


@pytest.mark.parametrize("entries", [1001, 40000])
def test_a_provider_chain_longer_than_the_cap_is_refused(anon_client, key, entries):
    chain = [{"reason": "retry_failed"}] * entries
    assert_refused(post(anon_client, row(key, provider_chain=chain)), "provider_chain",
                   in_message="1000")


def test_a_provider_chain_at_the_cap_is_stored(anon_client, key):
    response = post(anon_client, row(key, provider_chain=[{"reason": "retry_failed"}] * 1000))
    assert response.status_code == 200, response.content[:300]
    assert MessageRequest.objects.get().retry_count == 999


def test_retry_count_never_exceeds_its_column(db):
    from monitoring.retries import RETRY_COUNT_MAX, retry_count_from_chain

    assert RETRY_COUNT_MAX == 32767
    assert retry_count_from_chain([{"reason": "retry_failed"}] * 40000) == RETRY_COUNT_MAX


@pytest.mark.parametrize(
    "sent", ["1e30", "-1e30", 1e30, 10**30, "1e999999999", "-1E+400", "sNaN", "-sNaN", "Infinity"]
)
def test_costs_that_do_not_fit_the_column_are_refused(anon_client, key, sent):
    assert_refused(post(anon_client, row(key, cost_usd=sent)), "cost_usd")


def test_text_fields_are_stored_exactly_as_sent(anon_client, key):
    sent = {"request_id": " req-ws ", "session_id": " lead", "model": "claude ",
            "original_model": "\tm", "endpoint": " /v1/messages", "user_agent": "ua/1 ",
            "blocked_by": " guard", "error_message": " boom \n"}
    response = post(anon_client, row(key, **sent))
    assert response.status_code == 200, response.content[:300]
    stored = MessageRequest.objects.get()
    assert {name: getattr(stored, name) for name in sent} == sent


def test_an_empty_session_id_is_still_stored_as_null(anon_client, key):
    assert post(anon_client, row(key, session_id="")).status_code == 200
    assert MessageRequest.objects.get().session_id is None


ODD_ROWS = [
    {"created_at": "0001-01-01T00:00:00+08:00"},
    {"created_at": "9999-12-31T23:59:59-08:00"},
    {"created_at": -62135596800001},
    {"detail": {"method": "ß" * 16}},
    {"detail": {"method": "ﬃ"}},
    {"detail": {"headers": {"a": None, "b": [[1]]}}},
    {"detail": {"special_settings": {"headerModifications": [{"name": ["x"], "value": 1}],
                                     "bodyModifications": [{"path": {"a": 1}}]}}},
    {"detail": {"body": [[[[{"messages": [[[["x"]]]]}]]]], "meta": {"": {"": [None]}}}},
    {"detail": {"body": 10**4000, "headers": {"x-n": 1e308}}},
    {"detail": {"body_base64": " " + b64("{}") + " "}},
    {"detail": {"body_text": "\u2028\ufeff"}},
    {"detail": []},
    {"client_ip": "fe80::1%eth0"},
    {"cost_usd": "1e-1000000000"},
    {"cost_usd": "0E+1000000000"},
    {"cost_usd": "999999.9999999999999999"},
    {"status_code": "２００"},
    {"duration_ms": 1.5},
    {"request_sequence": "1e3"},
    {"user_id": True},
    {"provider_chain": [{"reason": "retry_failed", "statusCode": 10**30}] * 3},
]


@pytest.mark.parametrize("fields", ODD_ROWS)
def test_odd_rows_are_stored_or_refused_never_a_500(anon_client, key, fields):
    response = post(anon_client, row(key, **fields))
    assert response.status_code in (200, 400), response.content[:300]
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    "payload",
    [b"[]", b"{}", b'["\\u0000"]', b"[NaN]", b"\xef\xbb\xbf[]", "[]".encode("utf-16"),
     b'"\\ud800"', b"1" * 5000, b"[" + b"{}," * 3 + b"{}]"],
)
def test_odd_bodies_are_never_a_500(anon_client, db, payload):
    response = post(anon_client, payload)
    assert response.status_code in (200, 400), response.content[:300]



def test_the_query_of_an_endpoint_is_dropped_so_no_key_reaches_the_usage_log(anon_client, key):
    sent = "/v1beta/models/gemini-2.5-pro:generateContent?key=hunter2secret&alt=sse"
    response = post(anon_client, row(key, endpoint=sent))
    assert response.status_code == 200, response.content
    stored = MessageRequest.objects.get()
    assert stored.endpoint == "/v1beta/models/gemini-2.5-pro:generateContent"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT t::text FROM {MessageRequest._meta.db_table} t")
        assert "hunter2" not in cursor.fetchone()[0]

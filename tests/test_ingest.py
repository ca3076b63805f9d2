import json
from decimal import Decimal

import pytest

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


def test_a_soft_deleted_user_can_still_be_named(anon_client, db):
    user = UserFactory(username="gone")
    ApiKeyFactory(user=user)
    user.soft_delete()
    assert post(anon_client, {"request_id": "r", "user_id": user.pk}).status_code == 200

"""Masking at write time: what a proxy sends through the ingest API, and what the database
holds afterwards. The header and parameter lists are written out here, not imported, so a
shortened list in monitoring/masking.py fails these tests."""

import base64
import json

import pytest
from django.db import connection

from monitoring.models import MessageRequest, RequestDetail

TOKEN = "ingest-token-0123456789abcdef"
LISTED_HEADERS = [
    "authorization", "proxy-authorization", "x-api-key", "api-key", "anthropic-api-key",
    "x-goog-api-key", "x-auth-token", "cookie", "set-cookie",
]
LISTED_PARAMS = ["key", "api_key", "token", "access_token", "secret", "client_secret", "password"]
SECRET = "sk-ant-api03-SECRETSECRETSECRET-tail"


@pytest.fixture(autouse=True)
def _ingest_token(settings):
    settings.INGEST_TOKEN = TOKEN
    settings.STORE_SESSION_MESSAGES = False


@pytest.fixture
def store(anon_client, alice):
    """Send one row with `detail` through the API; return the stored RequestDetail and the
    raw text of its database row."""
    counter = iter(range(10_000))

    def send(**detail):
        request_id = f"mask-{next(counter)}"
        response = anon_client.post(
            "/api/ingest/requests",
            json.dumps({"request_id": request_id, "user_id": alice.pk, "detail": detail}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        )
        assert response.status_code == 200, response.content
        stored = RequestDetail.objects.get(request__request_id=request_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT t::text FROM {RequestDetail._meta.db_table} t WHERE request_id = %s",
                [stored.pk],
            )
            raw = cursor.fetchone()[0]
        return stored, raw

    return send


@pytest.mark.parametrize("name", LISTED_HEADERS)
def test_every_listed_header_is_masked(store, name):
    stored, raw = store(headers={name: SECRET})
    assert stored.headers == {name: "sk-a******tail"}
    assert "SECRETSECRET" not in raw


@pytest.mark.parametrize("name", ["Authorization", "X-API-Key", "COOKIE"])
def test_header_names_match_in_any_case(store, name):
    stored, _ = store(headers={name: SECRET})
    assert stored.headers[name] == "sk-a******tail"


@pytest.mark.parametrize(
    "sent, kept",
    [
        (f"Bearer {SECRET}", "Bearer sk-a******tail"),
        (f"bearer   {SECRET}", "Bearer sk-a******tail"),
        ("Bearer 12345678", "Bearer [REDACTED]"),  # 8 characters or fewer
        ("Bearer 123456789", "Bearer 1234******6789"),
        ("Bearer", "Bearer [REDACTED]"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED]"),
        ("basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED]"),
        ("Digest username=\"u\", response=\"0123456789\"", "Digest user******789\""),
        ("short", "[REDACTED]"),
        ("12345678", "[REDACTED]"),
        ("", "[REDACTED]"),
    ],
)
def test_authorization_forms(store, sent, kept):
    stored, _ = store(headers={"authorization": sent})
    assert stored.headers["authorization"] == kept


def test_repeated_headers_are_masked_one_by_one(store):
    stored, raw = store(headers={"set-cookie": ["sid=0123456789abcdef; HttpOnly", "a=b"]})
    assert stored.headers["set-cookie"] == ["sid=******Only", "[REDACTED]"]
    assert "0123456789abcdef" not in raw


def test_other_headers_are_kept_as_sent(store):
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01",
               "user-agent": "claude-cli/2.0.14", "x-request-token-count": "12"}
    stored, _ = store(headers=headers)
    assert stored.headers == headers


def test_vendor_key_headers_beyond_the_list_are_masked_too(store):
    stored, _ = store(headers={"x-custom-api-key": SECRET, "x-amz-security-token": SECRET})
    assert stored.headers == {"x-custom-api-key": "sk-a******tail", "x-amz-security-token": "sk-a******tail"}


@pytest.mark.parametrize("param", LISTED_PARAMS)
def test_every_listed_query_parameter_is_redacted(store, param):
    stored, raw = store(
        client_url=f"https://hub.example/v1/messages?beta=true&{param}=hunter2secret&x=1",
        upstream_url=f"https://api.example/v1beta/models/m:generateContent?{param.upper()}=hunter2secret",
    )
    assert stored.client_url == f"https://hub.example/v1/messages?beta=true&{param}=[REDACTED]&x=1"
    assert stored.upstream_url == (
        f"https://api.example/v1beta/models/m:generateContent?{param.upper()}=[REDACTED]"
    )
    assert "hunter2" not in raw


def test_the_rest_of_a_url_is_kept_byte_for_byte(store):
    url = "/v1/messages?q=a%20b&flag&empty=&k%65y=s3cret&api-key=s3cret&x=%E4%BD%A0"
    stored, raw = store(client_url=url)
    assert stored.client_url == "/v1/messages?q=a%20b&flag&empty=&k%65y=[REDACTED]&api-key=[REDACTED]&x=%E4%BD%A0"
    assert "s3cret" not in raw


def test_url_passwords_and_fragment_tokens_are_redacted(store):
    stored, raw = store(
        upstream_url="https://user:pa55word@api.example/v1?x=1",
        client_url="https://hub.example/cb#access_token=tok123456789&state=s",
    )
    assert stored.upstream_url == "https://user:[REDACTED]@api.example/v1?x=1"
    assert stored.client_url == "https://hub.example/cb#access_token=[REDACTED]&state=s"
    assert "pa55word" not in raw and "tok123456789" not in raw


BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4096,
    "stream": True,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "What is the secret plan?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "private reasoning", "signature": "sig-abc"},
            {"type": "tool_use", "id": "tu_1", "name": "bash", "input": {"command": "cat plan.txt"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": "the plan text"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}},
        ]},
    ],
    "tools": [{"name": "bash", "description": "Run a command", "input_schema": {"type": "object"}}],
}


def test_message_content_is_redacted_by_default(store):
    stored, raw = store(body=BODY)
    body = stored.body
    assert stored.body_format == "json"
    assert (body["model"], body["max_tokens"], body["stream"], body["tools"]) == (
        BODY["model"], 4096, True, BODY["tools"]
    )
    assert body["system"] == [{"type": "text", "text": "[REDACTED]", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0] == {"role": "user", "content": "[REDACTED]"}
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "[REDACTED]", "signature": "[REDACTED]"},
        {"type": "tool_use", "id": "tu_1", "name": "bash", "input": {"command": "[REDACTED]"}},
    ]
    assert body["messages"][2]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "[REDACTED]"}
    }
    for text in ("secret plan", "private reasoning", "cat plan.txt", "the plan text", "iVBORw0KGgo", "terse"):
        assert text not in raw


def test_other_apis_content_is_redacted_too(store):
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hola"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}],
              "systemInstruction": {"parts": [{"text": "be nice"}]}, "generationConfig": {"temperature": 0.2}}
    stored, raw = store(body=gemini)
    assert stored.body["contents"][0]["parts"] == [
        {"text": "[REDACTED]"}, {"inlineData": {"mimeType": "image/png", "data": "[REDACTED]"}}
    ]
    assert stored.body["generationConfig"] == {"temperature": 0.2}
    openai = {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]},
                                          {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\": 1}"}],
              "instructions": "secret instructions"}
    stored, raw = store(body=openai)
    assert stored.body["input"][1] == {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "[REDACTED]"}
    assert stored.body["instructions"] == "[REDACTED]"
    assert "hi there" not in raw and "secret instructions" not in raw


def test_message_content_is_kept_when_store_session_messages_is_on(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, _ = store(body=BODY)
    assert stored.body == BODY


def test_credentials_inside_a_body_are_masked_even_when_content_is_kept(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, raw = store(body={"model": "m", "api_key": SECRET, "metadata": {"user_id": "u1"}})
    assert stored.body == {"model": "m", "api_key": "sk-a******tail", "metadata": {"user_id": "u1"}}
    assert "SECRETSECRET" not in raw


def test_a_json_text_body_is_stored_as_json(store):
    stored, _ = store(body_text=json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    assert stored.body_format == "json"
    assert stored.body == {"model": "m", "messages": [{"role": "user", "content": "[REDACTED]"}]}


def test_a_body_that_is_not_json_is_kept_as_text_when_content_is_stored(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, _ = store(body_text="plain words, 你好\n")
    assert (stored.body_format, stored.body_text, stored.body) == ("text", "plain words, 你好\n", None)


def test_a_body_that_is_not_json_is_replaced_whole_when_content_is_redacted(store):
    stored, raw = store(body_text="plain words, 你好")
    assert (stored.body_format, stored.body_text) == ("text", "[REDACTED]")
    assert "plain words" not in raw


def test_a_form_encoded_body_has_its_secrets_masked(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, _ = store(headers={"Content-Type": "application/x-www-form-urlencoded"},
                      body_text="grant_type=client_credentials&client_secret=abc123456789")
    assert stored.body_text == "grant_type=client_credentials&client_secret=[REDACTED]"


def test_a_body_that_is_not_utf8_is_kept_as_base64_with_the_flag(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    raw_bytes = b"\x89PNG\r\n\x1a\n\x00\xff"
    encoded = base64.b64encode(raw_bytes).decode()
    stored, _ = store(body_base64=encoded)
    assert (stored.body_format, stored.body_text, stored.body) == ("base64", encoded, None)
    assert base64.b64decode(stored.body_text) == raw_bytes


def test_a_base64_body_that_is_utf8_json_is_stored_as_json(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    encoded = base64.b64encode(json.dumps({"model": "m"}).encode()).decode()
    stored, _ = store(body_base64=encoded)
    assert (stored.body_format, stored.body) == ("json", {"model": "m"})


def test_a_non_utf8_body_is_redacted_as_text_when_content_is_redacted(store):
    # [REDACTED] is not base64: the flag says what body_text holds.
    stored, _ = store(body_base64=base64.b64encode(b"\xff\xfe\x00").decode())
    assert (stored.body_format, stored.body_text) == ("text", "[REDACTED]")


def test_special_settings_do_not_leak_header_values(store):
    special = {
        "headerModifications": [
            {"action": "set", "name": "Authorization", "value": f"Bearer {SECRET}"},
            {"action": "remove", "name": "x-stainless-os"},
        ],
        "bodyModifications": [
            {"path": "messages.0.content", "action": "set", "value": "injected prompt"},
            {"path": "metadata.user_id", "action": "set", "value": "user-1"},
        ],
    }
    stored, raw = store(special_settings=special)
    mods = stored.special_settings
    assert mods["headerModifications"][0] == {"action": "set", "name": "Authorization", "value": "Bearer sk-a******tail"}
    assert mods["headerModifications"][1] == {"action": "remove", "name": "x-stainless-os"}
    assert mods["bodyModifications"][0]["value"] == "[REDACTED]"
    assert mods["bodyModifications"][1]["value"] == "user-1"
    assert "SECRETSECRET" not in raw and "injected prompt" not in raw


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://user:p@ss@host/v1", "https://user:[REDACTED]@host/v1"),
        ("https://TOKEN123456789@host/", "https://[REDACTED]@host/"),
        ("//user:pw@host/path", "//user:[REDACTED]@host/path"),
        ("https://host/v1?x=1;key=SECRET", "https://host/v1?x=1;key=[REDACTED]"),
        ("https://host/v1?a=1&b=2", "https://host/v1?a=1&b=2"),
        ("https://host/v1/a@b", "https://host/v1/a@b"),  # an @ in the path is no user info
        ("https://host/v1;key=SECRET/x;v=1", "https://host/v1;key=[REDACTED]/x;v=1"),  # path params
        ("https://host/v1?next=%2Fcb%3Fa%3D1%26token%3DSECRET&b=2", "https://host/v1?next=[REDACTED]&b=2"),
        ("https://host/v1?x=1%26key=SECRET", "https://host/v1?x=[REDACTED]"),
        ("https://host/v1?q=a%26b", "https://host/v1?q=a%26b"),
    ],
)
def test_user_info_path_parameters_and_encoded_queries_are_masked(url, expected):
    from monitoring.masking import mask_url

    assert mask_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        f" https://user:{SECRET}@host/v1",
        f"\thttps://user:{SECRET}@host/v1",
        f"\n https://user:{SECRET}@host/v1 ",
        f"https:\\\\user:{SECRET}@host/v1",
        f"https:/\\user:{SECRET}@host/v1",
        f"ht\ttps://user:{SECRET}@host/v1",
        f" //user:{SECRET}@host/v1",
    ],
)
def test_user_info_is_masked_whatever_whitespace_or_backslashes_surround_it(store, url):
    stored, raw = store(client_url=url, upstream_url=url)
    assert "SECRETSECRET" not in raw
    assert "user:[REDACTED]@host/v1" in stored.client_url


@pytest.mark.parametrize("name", ["x_api_key", "api_key", "X_Goog_Api_Key", "proxy_authorization", " cookie "])
def test_secret_headers_written_with_underscores_or_spaces_are_masked(store, name):
    stored, raw = store(headers={name: SECRET})
    assert stored.headers == {name: "sk-a******tail"}
    assert "SECRETSECRET" not in raw


@pytest.mark.parametrize("name", LISTED_HEADERS + ["x-custom-api-key", "x_amz_security_token"])
def test_every_secret_header_name_is_masked_inside_json_objects(store, name):
    special = {"headerModifications": [{"action": "set", "headers": {name: f"Bearer {SECRET}"}}]}
    stored, raw = store(special_settings=special, meta={"forwarded": {name: SECRET}},
                        body={"model": "m", "extra_headers": {name: [SECRET]}})
    assert "SECRETSECRET" not in raw
    assert stored.special_settings["headerModifications"][0]["headers"][name] == "Bearer sk-a******tail"
    assert stored.meta["forwarded"][name] == "sk-a******tail"
    assert stored.body["extra_headers"][name] == ["sk-a******tail"]


@pytest.mark.parametrize("field", ["name", "header", "key"])
def test_a_header_modification_names_its_header_by_name_header_or_key(store, field):
    special = {"headerModifications": [
        {"action": "set", field: "authorization", "value": f"Bearer {SECRET}"},
        {"action": "set", field: "x-trace", "value": "kept-as-sent"},
    ]}
    stored, raw = store(special_settings=special)
    mods = stored.special_settings["headerModifications"]
    assert mods[0]["value"] == "Bearer sk-a******tail"
    assert mods[1]["value"] == "kept-as-sent"
    assert "SECRETSECRET" not in raw


@pytest.mark.parametrize("name", ["referer", "origin", "location", ":path", "x-original-uri", "x-forwarded-uri"])
def test_query_secrets_in_url_valued_headers_are_redacted(store, name):
    value = "https://app.example/v1beta/models/m:generateContent?alt=sse&key=hunter2secret"
    if name == ":path":
        value = "/v1beta/models/m:generateContent?alt=sse&key=hunter2secret"
    stored, raw = store(headers={name: value})
    assert stored.headers[name] == value.replace("hunter2secret", "[REDACTED]")
    assert "hunter2" not in raw


def test_query_secrets_in_urls_inside_meta_special_settings_and_the_body_are_redacted(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, raw = store(
        meta={"upstream": "https://api.example/v1?api_key=hunter2secret"},
        special_settings={"headerModifications": [
            {"action": "set", "name": "referer", "value": "https://h.example/?token=hunter2secret"}
        ]},
        body={"model": "m", "callback": " https://h.example/cb?access_token=hunter2secret"},
    )
    assert stored.meta["upstream"] == "https://api.example/v1?api_key=[REDACTED]"
    assert stored.special_settings["headerModifications"][0]["value"] == "https://h.example/?token=[REDACTED]"
    assert stored.body["callback"] == "https://h.example/cb?access_token=[REDACTED]"
    assert "hunter2" not in raw


def test_secrets_in_the_usage_rows_error_message_and_provider_chain_are_masked(anon_client, alice):
    error = "Upstream 400 from POST https://generativelanguage.example/v1beta/m:generateContent?key=hunter2secret: bad"
    chain = [
        {"reason": "initial_selection"},
        {"reason": "retry_failed", "url": "https://api.example/v1?api_key=hunter2secret", "x-api-key": SECRET},
        {"reason": "request_success", "statusCode": 200},
    ]
    response = anon_client.post(
        "/api/ingest/requests",
        json.dumps({"request_id": "mask-row", "user_id": alice.pk, "error_message": error,
                    "provider_chain": chain}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )
    assert response.status_code == 200, response.content
    stored = MessageRequest.objects.get(request_id="mask-row")
    assert stored.error_message == error.replace("hunter2secret", "[REDACTED]")
    assert stored.provider_chain[1] == {
        "reason": "retry_failed", "url": "https://api.example/v1?api_key=[REDACTED]", "x-api-key": "sk-a******tail",
    }
    assert stored.retry_count == 1
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT t::text FROM {MessageRequest._meta.db_table} t")
        raw = cursor.fetchone()[0]
    assert "hunter2" not in raw and "SECRETSECRET" not in raw


def test_long_runs_of_spaces_and_long_unbroken_text_are_masked_in_one_pass(store, settings):
    """Masking reads a string in one pass: the trimming of URL-like strings and the URL search
    in error messages once rescanned the rest of the string from every position of a
    whitespace run or an unbroken token, so one 300,000-character prompt or upstream error
    (content that the proxy's users, not its operator, write) held an ingest for minutes."""
    settings.STORE_SESSION_MESSAGES = True
    padding = " " * 300_000
    stored, _ = store(
        body={"model": "m", "messages": [{"role": "user", "content": "a" + padding + "b"}],
              "callback": "/cb?token=hunter2secret" + padding},
        headers={"referer": "x" + padding + "y"},
    )
    assert stored.body["messages"][0]["content"] == "a" + padding + "b"
    assert stored.body["callback"] == "/cb?token=[REDACTED]"
    assert stored.headers["referer"] == "x" + padding + "y"


def test_a_long_unbroken_error_message_is_masked_in_one_pass(anon_client, alice):
    error = "A" * 300_000 + " then https://api.example/v1?key=hunter2secret; " + "B;" * 100_000
    response = anon_client.post(
        "/api/ingest/requests",
        json.dumps({"request_id": "long-error", "user_id": alice.pk, "error_message": error}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )
    assert response.status_code == 200, response.content
    stored = MessageRequest.objects.get(request_id="long-error").error_message
    assert stored == error.replace("hunter2secret", "[REDACTED]")


def test_headers_sent_as_name_value_pairs_are_masked_wherever_they_are(store, settings):
    """Headers also travel as lists: [name, value] pairs (fetch's Headers entries, Python's
    header tuples) and Node's flat rawHeaders [name, value, name, value]."""
    settings.STORE_SESSION_MESSAGES = True
    pairs = [["Authorization", f"Bearer {SECRET}"], ["content-type", "application/json"]]
    stored, raw = store(
        meta={"headers": pairs, "rawHeaders": ["X-Api-Key", SECRET, "Accept", "*/*"]},
        body={"model": "m", "request": {"headers": pairs}},
        special_settings={"headerModifications": [["set", "cookie", SECRET], ["x-trace", "1"]]},
    )
    assert "SECRETSECRET" not in raw
    masked_pairs = [["Authorization", "Bearer sk-a******tail"], ["content-type", "application/json"]]
    assert stored.meta == {"headers": masked_pairs, "rawHeaders": ["X-Api-Key", "sk-a******tail", "Accept", "*/*"]}
    assert stored.body["request"] == {"headers": masked_pairs}
    assert stored.special_settings["headerModifications"] == [["set", "cookie", "sk-a******tail"], ["x-trace", "1"]]


@pytest.mark.parametrize("field", ["values", "to", "from", "replacement", "set"])
def test_a_secret_headers_modification_masks_whatever_field_holds_its_value(store, field):
    special = {"headerModifications": [
        {"action": "replace", "name": "x-api-key", field: [SECRET] if field == "values" else SECRET},
    ]}
    stored, raw = store(special_settings=special)
    assert "SECRETSECRET" not in raw
    mod = stored.special_settings["headerModifications"][0]
    assert mod["action"] == "replace" and mod["name"] == "x-api-key"
    assert mod[field] == (["sk-a******tail"] if field == "values" else "sk-a******tail")


@pytest.mark.parametrize(
    "url, expected",
    [
        # Query parameters named like a secret header (apikey, x-api-key, *-token).
        ("https://h.example/v1?apikey=hunter2secret&x=1", "https://h.example/v1?apikey=[REDACTED]&x=1"),
        ("https://h.example/v1?x-api-key=hunter2secret", "https://h.example/v1?x-api-key=[REDACTED]"),
        ("https://b.example/o?X-Amz-Security-Token=hunter2secret&X-Amz-Date=1",
         "https://b.example/o?X-Amz-Security-Token=[REDACTED]&X-Amz-Date=1"),
        # A query inside a parameter's value, unencoded.
        ("https://h.example/login?next=/cb?token=hunter2secret&x=1", "https://h.example/login?next=[REDACTED]&x=1"),
        ("https://h.example/login?next=/cb?page=2", "https://h.example/login?next=/cb?page=2"),
        # A query in the fragment, after a hash router's path.
        ("https://app.example/#/callback?access_token=hunter2secret&state=s",
         "https://app.example/#/callback?access_token=[REDACTED]&state=s"),
        # Browsers skip any number of slashes after a web scheme: the user info is still one.
        ("https:///user:hunter2secret@host/v1", "https:///user:[REDACTED]@host/v1"),
        ("https:\\\\\\user:hunter2secret@host/v1", "https:\\\\\\user:[REDACTED]@host/v1"),
    ],
)
def test_secret_parameters_named_like_headers_fragment_queries_and_extra_slashes_are_masked(store, url, expected):
    stored, raw = store(client_url=url)
    assert stored.client_url == expected
    assert "hunter2" not in raw


def test_headers_written_as_lines_are_masked(store, anon_client, alice, settings):
    """`Name: value` strings (curl's -H list, a raw request head, an upstream error quoting
    the request) hide a credential as well as a header object does."""
    settings.STORE_SESSION_MESSAGES = True
    lines = [f"Authorization: Bearer {SECRET}", "Content-Type: application/json"]
    head = f"POST /v1/messages HTTP/1.1\r\nHost: api.example\r\nx-api-key:{SECRET}\r\nCookie:  a={SECRET}\r\n"
    stored, raw = store(
        meta={"curl_headers": lines, "raw_head": head},
        special_settings={"headerModifications": [f"set Proxy-Authorization: Basic {SECRET}"]},
        headers={"Authorization:": f"Bearer {SECRET}"},
    )
    assert "SECRETSECRET" not in raw
    assert stored.meta["curl_headers"] == ["Authorization: Bearer sk-a******tail", "Content-Type: application/json"]
    assert stored.meta["raw_head"] == (
        "POST /v1/messages HTTP/1.1\r\nHost: api.example\r\nx-api-key:sk-a******tail\r\nCookie:  a=sk******tail\r\n"
    )
    assert stored.special_settings["headerModifications"] == ["set Proxy-Authorization: Basic [REDACTED]"]
    assert stored.headers == {"Authorization:": "Bearer sk-a******tail"}


@pytest.mark.parametrize(
    "text",
    [
        f"curl -H 'Authorization: Bearer {SECRET}' https://api.example/v1/messages",
        f'curl -H "x-api-key: {SECRET}" -d @body.json',
        f"upstream refused (Authorization: Bearer {SECRET})",
        f"error: [x-goog-api-key: {SECRET}]",
        f'{{"Authorization": "Bearer {SECRET}", "accept": "*/*"}}',
        f"{{'authorization': 'Bearer {SECRET}'}}",
    ],
)
def test_headers_quoted_or_bracketed_inside_text_are_masked(store, settings, text):
    settings.STORE_SESSION_MESSAGES = True
    stored, raw = store(meta={"note": text})
    assert "SECRETSECRET" not in raw
    assert "sk-a******" in stored.meta["note"]


def test_a_quoted_header_value_is_masked_up_to_its_closing_quote(store, settings):
    settings.STORE_SESSION_MESSAGES = True
    stored, _ = store(meta={"note": f"curl -H 'Authorization: Bearer {SECRET}' https://api.example/v1"})
    assert stored.meta["note"] == "curl -H 'Authorization: Bearer sk-a******tail' https://api.example/v1"


def test_headers_as_name_value_objects_are_masked(store):
    # HAR files and several proxies' logs: [{"name": ..., "value": ...}, ...].
    har = [{"name": "Authorization", "value": f"Bearer {SECRET}"}, {"name": "Accept", "value": "*/*"}]
    stored, raw = store(meta={"har_headers": har})
    assert "SECRETSECRET" not in raw
    assert stored.meta["har_headers"] == [
        {"name": "Authorization", "value": "Bearer sk-a******tail"}, {"name": "Accept", "value": "*/*"}
    ]

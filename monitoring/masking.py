"""Masking applied to request details before they are stored: nothing unmasked reaches the
database, so nothing unmasked can reach an export."""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "anthropic-api-key",
        "x-goog-api-key",
        "x-auth-token",
        "cookie",
        "set-cookie",
    }
)
SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "token", "access_token", "secret", "client_secret", "password"}
)
# Where message content lives in the request bodies of the supported APIs.
CONTENT_KEYS = ("messages", "system", "input", "instructions", "contents", "prompt", "systemInstruction")


def mask_token(token: str) -> str:
    """First and last 4 characters around ******; 8 characters or fewer: [REDACTED]."""
    if len(token) <= 8:
        return REDACTED
    return f"{token[:4]}******{token[-4:]}"


def mask_secret_value(value: str) -> str:
    text = str(value).strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() == "basic":
        return "Basic " + REDACTED
    if scheme.lower() == "bearer":
        return "Bearer " + mask_token(rest.strip())
    return mask_token(text)


def mask_headers(headers: dict) -> dict:
    masked = {}
    for name, value in (headers or {}).items():
        if str(name).lower() in SECRET_HEADERS:
            if isinstance(value, list):
                masked[name] = [mask_secret_value(v) for v in value]
            else:
                masked[name] = mask_secret_value(value)
        else:
            masked[name] = value
    return masked


def mask_url(url: str) -> str:
    if not url or "?" not in url:
        return url
    parts = urlsplit(url)
    query = [
        (k, REDACTED if k.lower() in SECRET_QUERY_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]")))


def _redact_content(value):
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, list):
        return [_redact_content(item) for item in value]
    if isinstance(value, dict):
        return {
            k: (_redact_content(v) if k in {"content", "text", "parts", "input", "output"} else v)
            for k, v in value.items()
        }
    return value


def redact_body(body, *, store_messages: bool | None = None):
    """Message content replaced by [REDACTED] unless STORE_SESSION_MESSAGES is true; the shape
    (roles, model, parameters) is kept for debugging."""
    if store_messages is None:
        store_messages = settings.STORE_SESSION_MESSAGES
    if store_messages or not isinstance(body, dict):
        return body
    return {
        k: (_redact_content(v) if k in CONTENT_KEYS else v)
        for k, v in body.items()
    }

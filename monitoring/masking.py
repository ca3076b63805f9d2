"""Masking applied to request details before they are stored: nothing unmasked reaches the
database, so nothing unmasked can reach an export.

`mask_detail()` is the one entry point of the write path (the ingest API); the helpers below it
are public because the demo seeder masks with them too.
"""

import base64
import binascii
import re
from urllib.parse import unquote_plus

from django.conf import settings

from . import jsonsafe

REDACTED = "[REDACTED]"
# The reference system's list (REFERENCE.md), compared case-insensitively.
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
# Beyond the list: vendor headers that carry a key or a token under another name
# (x-custom-api-key, x-amz-security-token, x-client-secret) are masked the same way.
SECRET_HEADER_SUFFIXES = ("api-key", "apikey", "-token", "-secret")
SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "token", "access_token", "secret", "client_secret", "password"}
)
# JSON fields (in bodies, meta, special settings) whose value is a credential: every secret
# header name (is_secret_header: api_key, access_token, client_secret, cookie, ...) and these.
# "key" is left out: in JSON it is a common ordinary field name, unlike in a query string.
SECRET_JSON_FIELDS = frozenset({"password", "secret"})
# Where message content lives in the request bodies of the supported APIs (Anthropic messages,
# OpenAI chat/completions/responses/embeddings, Gemini generateContent).
CONTENT_KEYS = frozenset(
    {"messages", "system", "input", "instructions", "contents", "prompt", "systemInstruction",
     "system_instruction", "suffix"}
)
# Inside content, these fields describe its shape (who spoke, which block type, which tool) and
# are kept; every other string below a content key is content (text, tool inputs, thinking,
# image and document data, function arguments) and is replaced.
STRUCTURAL_KEYS = frozenset(
    {"type", "role", "id", "tool_use_id", "tool_call_id", "call_id", "name", "status",
     "cache_control", "media_type", "mime_type", "mimeType", "format", "detail"}
)

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s+(.*)$", re.S)
# The authority of `scheme://` or scheme-relative `//` URLs; its user info ends at its LAST @.
# Like browsers (the WHATWG URL parser), `\` counts as `/`, and a third slash or more is
# skipped (`https:///user:pw@host` is user:pw at host).
_AUTHORITY_RE = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]{2,})([^/\\?#]*)")
# A string that is a URL or a path (`https://...`, `/v1/...?key=`), not prose.
_URL_LIKE_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]")
# What URL parsers drop: C0 controls and spaces at either end, and tab, CR, LF anywhere.
# The trailing run is only tried where a run starts (the lookbehind): tried from every
# position, a long run of spaces inside a string was rescanned once per space.
_URL_EDGES_RE = re.compile(r"^[\x00-\x20\s]+|(?<![\x00-\x20\s])[\x00-\x20\s]+$")
_URL_IGNORED = str.maketrans("", "", "\t\r\n")


def mask_token(token: str) -> str:
    """First and last 4 characters around ******; 8 characters or fewer: [REDACTED]."""
    if len(token) <= 8:
        return REDACTED
    return f"{token[:4]}******{token[-4:]}"


def mask_secret_value(value) -> str:
    """`Bearer X` keeps X's first and last 4 characters; `Basic ...` becomes `Basic [REDACTED]`
    (its base64 would leak the start of the user name and the end of the password); any other
    `<scheme> <credentials>` keeps the scheme; a bare value is masked as a token."""
    text = "" if value is None else str(value).strip()
    match = _SCHEME_RE.match(text)
    if match:
        scheme, credentials = match.group(1), match.group(2).strip()
        if scheme.lower() == "basic":
            return "Basic " + REDACTED
        if scheme.lower() == "bearer":
            return "Bearer " + mask_token(credentials)
        if credentials:
            return f"{scheme} {mask_token(credentials)}"
    if text.lower() == "basic":
        return "Basic " + REDACTED
    if text.lower() == "bearer":
        return "Bearer " + REDACTED
    return mask_token(text)


def is_secret_header(name) -> bool:
    """The one test of a header (or JSON field) name: any case, surrounding spaces ignored,
    `_` read as `-` (x_api_key, api_key: CGI-style names and some proxies' spelling)."""
    key = str(name).strip().rstrip(":").rstrip().lower().replace("_", "-")
    return key in SECRET_HEADERS or key.endswith(SECRET_HEADER_SUFFIXES)


# `Name:` where a name starts (not inside another token): a header written as a line, bare,
# quoted or bracketed (`-H 'Authorization: …'`, `(x-api-key: …)`, `{"Authorization": "…"}`).
# Possessive, and tried only where a name can start, so one pass over the text.
_TOKEN_CHARS = "!#$%&*+.^_`|~0-9A-Za-z-"
_HEADER_LINE_NAME_RE = re.compile(
    rf"(?<![{_TOKEN_CHARS}])([{_TOKEN_CHARS}]++)(([\"']?)[ \t]*+:[ \t]*+([\"']?))"
)
_LINE_END_RE = re.compile(r"[\r\n]")


def mask_header_lines(text: str) -> str:
    """`Authorization: Bearer ...` inside a string (curl's -H list, a raw request head, an
    error quoting a request, JSON written into text): the value after a secret header's name
    is masked, up to the end of the line or the quote that closes it."""
    if not isinstance(text, str) or ":" not in text:
        return text
    parts, done = [], 0
    for match in _HEADER_LINE_NAME_RE.finditer(text):
        if match.start() < done or not is_secret_header(match.group(1)):
            continue
        line_end = _LINE_END_RE.search(text, match.end())
        end = line_end.start() if line_end else len(text)
        # A quoted value ('Authorization: Bearer x' or "Authorization": "Bearer x") ends at
        # its closing quote.
        before = text[match.start() - 1] if match.start() else ""
        quote = match.group(4) or (before if before in "\"'" and not match.group(3) else "")
        if quote:
            closing = text.find(quote, match.end(), end)
            end = closing if closing != -1 else end
        parts += [text[done:match.end()], mask_secret_value(text[match.end():end])]
        done = end
    return "".join(parts) + text[done:] if parts else text


def _mask_secret_leaves(value):
    """Everything under a secret name: each string (or number) masked, null and booleans kept."""
    if isinstance(value, dict):
        return {k: _mask_secret_leaves(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_secret_leaves(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    return mask_secret_value(value)


def mask_url_like(value):
    """mask_url for a string that is a URL or a path (a referer, `:path`, a callback in a
    body); any other value is returned as it is."""
    if isinstance(value, str) and _URL_LIKE_RE.match(_URL_EDGES_RE.sub("", value)):
        return mask_url(value)
    return value


def mask_headers(headers: dict) -> dict:
    masked = {}
    for name, value in (headers or {}).items():
        if is_secret_header(name):
            masked[name] = _mask_secret_leaves(value)
        elif isinstance(value, list | tuple):
            masked[name] = [mask_url_like(v) for v in value]
        else:
            masked[name] = mask_url_like(value)
    return masked


def _is_secret_param(raw_name: str) -> bool:
    """The listed names, and names of secret headers (apikey, x-api-key, x-amz-security-token)."""
    name = unquote_plus(raw_name).strip().lower().replace("-", "_")
    return name in SECRET_QUERY_PARAMS or is_secret_header(name)


def mask_query(query: str) -> str:
    """Replace the values of secret parameters; every other byte of the query is kept as it
    was (re-encoding the whole query would change `%20` to `+` and drop empty `=`)."""
    if not query:
        return query
    parts = []
    # `;` separates parameters too (older servers and some proxies accept it).
    for piece in re.split(r"([&;])", query):
        name, _sep, value = piece.partition("=")
        secret = piece not in "&;" and (_is_secret_param(name) or _hides_secret_param(value))
        parts.append(f"{name}={REDACTED}" if secret else piece)
    return "".join(parts)


def _hides_secret_param(value: str) -> bool:
    """A value that decodes to a query of its own with a secret in it (`next=%2Fcb%3Ftoken%3D..`,
    `x=1%26key=..`, `next=/cb?token=..`): redacted whole, since a server or a later redirect
    reads it as a query."""
    if "%" not in value and "?" not in value:
        return False
    decoded = unquote_plus(value)
    return any(
        "=" in piece and _is_secret_param(piece.partition("=")[0])
        for piece in re.split(r"[&;?#]", decoded)
    )


_PATH_PARAM_RE = re.compile(r";([^;/=?#]*)=([^;/?#]*)")


def _mask_path_params(path: str) -> str:
    """`/v1;key=...`: parameters of a path segment (RFC 3986 matrix parameters)."""
    return _PATH_PARAM_RE.sub(
        lambda m: f";{m.group(1)}={REDACTED}" if _is_secret_param(m.group(1)) else m.group(0), path
    )


def mask_url(url: str) -> str:
    """Secret query parameters (also in the fragment, where OAuth puts access_token) and the
    password of `scheme://user:password@host` are redacted. Works on full URLs and on bare
    paths, and never raises on malformed input. Leading and trailing whitespace, and tabs or
    newlines inside, are read as URL parsers do; a URL with nothing to mask is returned as
    it was sent."""
    if not url:
        return url
    sent = str(url)
    url = _URL_EDGES_RE.sub("", sent).translate(_URL_IGNORED)
    match = _AUTHORITY_RE.match(url)
    if match and "@" in match.group(2):
        userinfo, _, host = match.group(2).rpartition("@")
        user, colon, _password = userinfo.partition(":")
        # user:password keeps the user; a lone user info is often a token, so it goes whole.
        masked_info = f"{user}:{REDACTED}" if colon else REDACTED
        url = f"{match.group(1)}{masked_info}@{host}{url[match.end():]}"
    base, hash_sign, fragment = url.partition("#")
    path, question, query = base.partition("?")
    masked = _mask_path_params(path) + question + mask_query(query)
    if hash_sign:
        # `#access_token=..` (OAuth) or a hash router's `#/callback?access_token=..`.
        masked += hash_sign + "?".join(
            mask_query(part) if "=" in part else part for part in fragment.split("?")
        )
    return sent if masked == _URL_EDGES_RE.sub("", sent).translate(_URL_IGNORED) else masked


def is_secret_field(name) -> bool:
    return is_secret_header(name) or str(name).strip().lower() in SECRET_JSON_FIELDS


# A URL, or anything with a query, inside free text (an upstream's error message). Linear:
# a scheme is only tried where a run of scheme characters starts, and a query-like word only
# where a word starts, each then read once (the first ? or ;, then the first = after it); tried
# from every position, one long unbroken word was rescanned once per character.
_URL_IN_TEXT_RE = re.compile(
    r"""(?:(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+:)?//[^\s"'<>]+"""
    r"""|(?<![^\s"'<>])[^\s"'<>?;]*+[?;][^\s"'<>=]*+=[^\s"'<>]*+"""
)


def mask_urls_in_text(text: str) -> str:
    """mask_url on every URL found in `text`; the rest of the text is kept as it is."""
    if not text:
        return text

    def mask(match):
        # Punctuation that ends a sentence is not part of the URL, as linkifiers read it.
        url = match.group(0).rstrip(".,;:!?)]}")
        return mask_url(url) + match.group(0)[len(url):]

    return _URL_IN_TEXT_RE.sub(mask, text)


def mask_usage_row(row: dict) -> None:
    """The usage row's own fields that can carry a credential, masked in place: its error
    message (upstream errors quote the URL they called) and its provider chain (JSON)."""
    if row.get("error_message"):
        row["error_message"] = mask_header_lines(mask_urls_in_text(row["error_message"]))
    if row.get("provider_chain"):
        row["provider_chain"] = mask_secret_fields(row["provider_chain"])


def mask_secret_fields(value):
    """Credentials that travel inside JSON (a body's api_key, a header set by a header
    modification, a URL's ?key=) are masked at any depth, whatever STORE_SESSION_MESSAGES
    says."""
    if isinstance(value, dict):
        masked = {
            k: _mask_secret_leaves(v) if is_secret_field(k) else mask_secret_fields(v)
            for k, v in value.items()
        }
        # A header as an object ({"name": "Authorization", "value": ...}: HAR files, header
        # modifications): every value-carrying field of a secret one.
        return _mask_header_modification(masked)
    if isinstance(value, str):
        return mask_header_lines(mask_url_like(value))
    if isinstance(value, list):
        masked = [mask_secret_fields(item) for item in value]
        # Headers as lists: [name, value] pairs and Node's flat rawHeaders [name, value, ...].
        # The item after a secret name is its value (a list that only happens to hold such a
        # name, a schema's "required", loses its next item: masking errs on hiding).
        for index in range(1, len(value)):
            previous = value[index - 1]
            if isinstance(previous, str) and is_secret_field(previous):
                masked[index] = _mask_secret_leaves(value[index])
        return masked
    return mask_url_like(value)


def _redact_content(value):
    if isinstance(value, str):
        return REDACTED
    if isinstance(value, list):
        return [_redact_content(item) for item in value]
    if isinstance(value, dict):
        return {k: (v if k in STRUCTURAL_KEYS else _redact_content(v)) for k, v in value.items()}
    return value  # numbers, booleans and null say nothing on their own


def redact_body(body, *, store_messages: bool | None = None):
    """Message content replaced by [REDACTED] unless STORE_SESSION_MESSAGES is true; the shape
    (roles, block types, tool names, model, parameters) is kept for debugging. A JSON body that
    is not an object has no known shape, so all of its text is content."""
    if store_messages is None:
        store_messages = settings.STORE_SESSION_MESSAGES
    if store_messages:
        return body
    if isinstance(body, dict):
        return {k: (_redact_content(v) if k in CONTENT_KEYS else v) for k, v in body.items()}
    if isinstance(body, list):
        return [redact_body(item, store_messages=False) for item in body]
    return _redact_content(body)


def _redact_modification(mod, store_messages: bool):
    """A body modification that touched message content carries content in its values."""
    if store_messages or not isinstance(mod, dict):
        return mod
    path = str(mod.get("path") or mod.get("field") or "")
    head = re.split(r"[.\[/]", path.lstrip("$./"), maxsplit=1)[0]
    if head in CONTENT_KEYS:
        return {k: (v if k in {"path", "field", "action", "op", "type"} else _redact_content(v))
                for k, v in mod.items()}
    return mod


# The fields of a header modification that say what it does; any other field of one that
# touches a secret header may hold the value (value, values, before, after, to, from, ...).
_MODIFICATION_NAME_KEYS = ("name", "header", "key")
_MODIFICATION_KEPT_KEYS = frozenset({*_MODIFICATION_NAME_KEYS, "action", "op", "operation", "type"})


def _mask_header_modification(mod):
    """{"action": "set", "name" | "header" | "key": <header>, "value": ...}: the header's
    name is under any of those three keys, as proxies spell it."""
    if not isinstance(mod, dict):
        return mod
    name = next((mod[k] for k in _MODIFICATION_NAME_KEYS if isinstance(mod.get(k), str)), "")
    if not is_secret_header(name):
        return mod
    return {k: (v if k in _MODIFICATION_KEPT_KEYS else _mask_secret_leaves(v))
            for k, v in mod.items()}


def mask_special_settings(special: dict, *, store_messages: bool | None = None) -> dict:
    if store_messages is None:
        store_messages = settings.STORE_SESSION_MESSAGES
    # mask_secret_fields masks header modifications too (any object naming a secret header).
    special = mask_secret_fields(dict(special or {}))
    bodies = special.get("bodyModifications")
    if isinstance(bodies, list):
        special["bodyModifications"] = [_redact_modification(m, store_messages) for m in bodies]
    return special


def _is_form(headers: dict) -> bool:
    for name, value in (headers or {}).items():
        if str(name).lower() == "content-type":
            return "application/x-www-form-urlencoded" in str(value).lower()
    return False


class UnstorableBody(ValueError):
    """A raw body whose content PostgreSQL cannot store; the message says where and why."""


def store_body(
    *, body=None, body_text: str | None = None, body_base64: str | None = None,
    headers: dict | None = None, store_messages: bool | None = None,
) -> tuple:
    """(body, body_text, body_format) as stored. Raw bodies are parsed when they are JSON; a
    body that is not JSON is kept as text, one that is not UTF-8 as base64 (format "base64";
    "text" once redacted, since [REDACTED] is not base64).
    Without STORE_SESSION_MESSAGES a non-JSON body is replaced whole: its content cannot be
    told apart from its shape. A form-encoded body always has its secret fields masked.

    A text body holding NUL, which a text column cannot store, is kept as base64 too. A raw
    body that is JSON PostgreSQL cannot store (NUL or a lone surrogate in a string, NaN,
    Infinity, nesting beyond jsonsafe.MAX_DEPTH) is refused, not kept as text: as text its
    secret fields would escape masking.

    Raises ValueError when body_base64 is not valid base64, UnstorableBody (a ValueError) when
    the body cannot be stored."""
    if store_messages is None:
        store_messages = settings.STORE_SESSION_MESSAGES
    if body_base64 is not None:
        try:
            raw = base64.b64decode(body_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not valid base64") from exc
        try:
            body_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _raw_body(body_base64, store_messages)
    if body_text is not None:
        try:
            body, suspect = jsonsafe.loads(body_text)
        except jsonsafe.TooDeep as exc:
            raise UnstorableBody(str(exc)) from exc
        except ValueError:
            text = mask_query(body_text) if _is_form(headers) else body_text
            if (problem := jsonsafe.char_problem(text.replace("\x00", ""))) is not None:
                raise UnstorableBody(problem) from None
            if "\x00" in text:
                return _raw_body(base64.b64encode(text.encode("utf-8")).decode("ascii"), store_messages)
            return None, (text if store_messages else REDACTED), "text"
        for path, problem in jsonsafe.problems(body, check_scalars=suspect):
            where = jsonsafe.render_path(path) or "the top level"
            raise UnstorableBody(f"Its JSON at {where}: {problem}")
    if body is None:
        return None, "", "json"
    return redact_body(mask_secret_fields(body), store_messages=store_messages), "", "json"


def _raw_body(encoded: str, store_messages: bool) -> tuple:
    """A body only base64 can hold; redacted, it is the text [REDACTED], flagged as text."""
    if store_messages:
        return None, encoded, "base64"
    return None, REDACTED, "text"


def mask_detail(detail: dict, *, store_messages: bool | None = None) -> dict:
    """Field values of a RequestDetail from what a proxy sent, every secret masked and message
    content redacted per STORE_SESSION_MESSAGES. `detail` holds the validated ingest fields."""
    if store_messages is None:
        store_messages = settings.STORE_SESSION_MESSAGES
    headers = detail.get("headers") or {}
    body, body_text, body_format = store_body(
        body=detail.get("body"),
        body_text=detail.get("body_text"),
        body_base64=detail.get("body_base64"),
        headers=headers,
        store_messages=store_messages,
    )
    return {
        "method": (detail.get("method") or "").upper(),
        "client_url": mask_url(detail.get("client_url") or ""),
        "upstream_url": mask_url(detail.get("upstream_url") or ""),
        "headers": mask_headers(headers),
        "body": body,
        "body_text": body_text,
        "body_format": body_format,
        "response_status": detail.get("response_status"),
        "meta": mask_secret_fields(detail.get("meta") or {}),
        "special_settings": mask_special_settings(
            detail.get("special_settings") or {}, store_messages=store_messages
        ),
    }

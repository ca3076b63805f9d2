"""The machine-facing API: a proxy posts its usage rows here. Not a dashboard page: no session,
no CSRF (there is no cookie to ride on), a deployment token instead."""

import hmac
import logging
from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from exports.access import json_error

from .ingest import IngestErrors, ingest_rows, parse_payload

log = logging.getLogger("monitoring.ingest")


def in_english(view):
    """Machine-facing answers in one language: the sender's log is read by whoever runs the
    proxy, and Django's validator texts would otherwise follow LANGUAGE_CODE (zh-hans)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        with translation.override("en"):
            return view(request, *args, **kwargs)

    return wrapper


def ingest_token_error(request):
    """None when the request carries the deployment's ingest token, else the error response.
    The comparison takes the same time wherever the first wrong character is."""
    expected = settings.INGEST_TOKEN
    if not expected:
        return json_error(503, _("Ingestion is disabled: INGEST_TOKEN is not set."))
    scheme, _sep, presented = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        # REMOTE_ADDR only, as the audit does: a forwarded-for header is the sender's word.
        log.warning("ingest_unauthorized client_ip=%s", request.META.get("REMOTE_ADDR"))
        response = json_error(401, _("Unauthorized: send Authorization: Bearer <INGEST_TOKEN>."))
        response["WWW-Authenticate"] = 'Bearer realm="ingest"'
        return response
    return None


class LengthRequired(Exception):
    """No Content-Length (a chunked upload): WSGI servers then hand Django an empty body."""


def read_body(request, limit: int) -> bytes | None:
    """At most `limit` bytes of the body, or None when it is longer. Read straight from the
    stream: request.body would apply DATA_UPLOAD_MAX_MEMORY_SIZE, meant for forms."""
    length = request.META.get("CONTENT_LENGTH")
    if not length:
        raise LengthRequired
    try:
        declared = int(length)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    data = request.read(limit + 1)
    return None if len(data) > limit else data


@csrf_exempt
@require_POST
@in_english
def ingest_requests(request):
    if (denied := ingest_token_error(request)) is not None:
        return denied
    if request.content_type != "application/json":
        return json_error(415, _("Send the rows as application/json."))
    try:
        raw = read_body(request, settings.INGEST_MAX_BODY_BYTES)
    except LengthRequired:
        return json_error(411, _("Send a Content-Length: chunked uploads are not read."))
    if raw is None:
        return json_error(
            413,
            _("The body is larger than INGEST_MAX_BODY_BYTES (%(n)s bytes): send smaller batches.")
            % {"n": settings.INGEST_MAX_BODY_BYTES},
        )
    try:
        result = ingest_rows(parse_payload(raw), max_rows=settings.INGEST_MAX_ROWS)
    except IngestErrors as errors:
        log.warning("ingest_rejected errors=%s first=%s", errors.total, errors.errors[:1])
        return json_error(400, errors.text(), errors=errors.errors, error_count=errors.total)
    log.info("ingest_batch %s", result.as_dict())
    return JsonResponse(result.as_dict())

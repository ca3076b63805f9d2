"""The single-request JSON export: one function, `session_request_export`, behind the dashboard
button, the Django admin action and `manage.py export_session_request`.

The document is the spec's shape (sessionId, sequence, meta, headers, body, specialSettings)
plus what debugging needs (request id, method, client and upstream URL, status code, body
format). Everything in it was masked before it was stored (monitoring/masking.py); the export
adds no secrets because the database holds none. One request is small, so the file is built in
memory and sent with a Content-Length.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from monitoring.models import MessageRequest, RequestDetail

from .access import json_error
from .audit import Kind, Outcome, finish_audit, start_audit
from .filters import WholeNumberField


class SessionRequestForm(forms.Form):
    """The one validator of the URL, the admin and the command's arguments."""

    session_id = forms.CharField(label=gettext_lazy("Session ID"), max_length=200, strip=False)
    sequence = WholeNumberField(
        label=gettext_lazy("Sequence"), required=False, min_value=1, max_value=2**31 - 1
    )
    request_id = forms.CharField(label=gettext_lazy("Request ID"), required=False, max_length=64)

    def error_text(self) -> str:
        return "; ".join(
            f"{name}: {' '.join(str(m) for m in messages)}"
            for name, messages in self.errors.items()
        )


class RequestUnavailable(Exception):
    """No file to give. `reason` is machine-readable: not_found (no such usage row),
    never_recorded (the row exists, its details never came), pruned (deleted by the
    retention) or deleted (deleted in the Django admin)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class SessionRequestExport:
    request: MessageRequest
    filename: str
    content: bytes


# Characters no file system takes in a name; the rest of a session id is kept as it is.
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def export_filename(session_id: str, sequence: int | None) -> str:
    """session-{first 8 characters}[-seq-{n}]-request.json (the spec's two rules)."""
    head = _UNSAFE_FILENAME.sub("_", (session_id or "")[:8])
    if sequence is None:
        return f"session-{head}-request.json"
    return f"session-{head}-seq-{sequence}-request.json"


def iso_time(value: datetime) -> str:
    """ISO 8601 with milliseconds: Z in UTC, else the offset of TIME_ZONE (as the CSV)."""
    local = timezone.localtime(value)
    text = local.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if local.utcoffset() == timedelta(0) else text


def find_session_request(
    *, session_id: str, sequence: int | None = None, request_id: str | None = None
) -> MessageRequest:
    """The request of `session_id` with that sequence (the newest one if a proxy logged the
    number twice), or without a sequence when `sequence` is None. `request_id` picks one
    among several. Served by the (session_id, request_sequence) index."""
    rows = MessageRequest.objects.filter(session_id=session_id).select_related("provider")
    if sequence:
        rows = rows.filter(request_sequence=sequence)
    else:
        rows = rows.filter(request_sequence__isnull=True)
    if request_id:
        rows = rows.filter(request_id=request_id)
    row = rows.order_by("-created_at", "-id").first()
    if row is None:
        if sequence:
            message = _("Session %(session)s has no request #%(n)s.") % {
                "session": session_id,
                "n": sequence,
            }
        else:
            message = _("Session %(session)s has no request without a sequence number.") % {
                "session": session_id
            }
        raise RequestUnavailable("not_found", message)
    return row


def missing_details(row: MessageRequest) -> RequestUnavailable:
    """Why a usage row has no details: what was recorded when they were removed (pruning or
    the Django admin mark the row in the same transaction), else they never came."""
    removed = MessageRequest.DetailsRemoved
    when = iso_time(row.details_removed_at) if row.details_removed_at else "?"
    if row.details_removed == removed.PRUNED:
        return RequestUnavailable(
            "pruned",
            _(
                "The details of this request were pruned on %(when)s: they are kept for "
                "SESSION_DETAILS_RETENTION_DAYS (now %(days)s) days after the request."
            ) % {"when": when, "days": settings.SESSION_DETAILS_RETENTION_DAYS},
        )
    if row.details_removed == removed.DELETED:
        return RequestUnavailable(
            "deleted",
            _("The details of this request were deleted in the Django admin on %(when)s.")
            % {"when": when},
        )
    return RequestUnavailable(
        "never_recorded",
        _("No details were recorded for this request: the proxy did not send them."),
    )


def load_detail(row: MessageRequest) -> RequestDetail | None:
    try:
        return row.detail
    except RequestDetail.DoesNotExist:
        return None


def request_document(row: MessageRequest, detail: RequestDetail) -> dict:
    special = detail.special_settings if isinstance(detail.special_settings, dict) else {}
    stored_meta = detail.meta if isinstance(detail.meta, dict) else {}
    return {
        "sessionId": row.session_id,
        "sequence": row.request_sequence,
        "requestId": row.request_id,
        "meta": {
            **stored_meta,
            # The usage row is the truth for these; the proxy's own meta fills in the rest.
            "model": row.model,
            "originalModel": row.original_model,
            "providerId": row.provider_id,
            "providerName": row.provider.name if row.provider else None,
            "endpoint": row.endpoint,
            "timestamp": iso_time(row.created_at),
        },
        "method": detail.method,
        "clientUrl": detail.client_url,
        "upstreamUrl": detail.upstream_url,
        "statusCode": (
            detail.response_status if detail.response_status is not None else row.status_code
        ),
        "headers": detail.headers,
        "body": (
            detail.body if detail.body_format == RequestDetail.BodyFormat.JSON else detail.body_text
        ),
        "bodyFormat": detail.body_format,
        "specialSettings": {"headerModifications": [], "bodyModifications": [], **special},
    }


def render_document(document: dict) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def session_request_export(row: MessageRequest) -> SessionRequestExport:
    """The file of one usage row; raises RequestUnavailable when its details are missing."""
    detail = load_detail(row)
    if detail is None:
        raise missing_details(row)
    return SessionRequestExport(
        request=row,
        filename=export_filename(row.session_id, row.request_sequence),
        content=render_document(request_document(row, detail)),
    )


def audit_filters(row: MessageRequest | None, **lookup) -> dict:
    filters = {k: v for k, v in lookup.items() if v not in (None, "")}
    if row is not None:
        filters["request_id"] = row.request_id
    return filters


def session_request_response(request, *, channel: str, row: MessageRequest | None = None, **lookup):
    """The download for the dashboard and the admin action: the row given, or the one
    `lookup` (session_id, sequence, request_id) finds. Audited either way; a missing request
    or missing details is a 404 whose JSON says which."""
    try:
        row = row or find_session_request(**lookup)
        export = session_request_export(row)
    except RequestUnavailable as exc:
        audit = start_audit(
            kind=Kind.SESSION_REQUEST, channel=channel, user=request.user, request=request,
            filters=audit_filters(row, **lookup),
        )
        finish_audit(audit, outcome=Outcome.FAILED, detail=f"{exc.reason}: {exc.message}")
        return json_error(404, exc.message, reason=exc.reason)
    audit = start_audit(
        kind=Kind.SESSION_REQUEST, channel=channel, user=request.user, request=request,
        filters=audit_filters(row, **lookup),
    )
    response = HttpResponse(export.content, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, export.filename)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    finish_audit(audit, outcome=Outcome.OK, rows=1, bytes=len(export.content))
    return response

"""The single-request JSON export over HTTP (admins only)."""

from django.views.decorators.http import require_safe

from .access import export_view, json_error
from .audit import Channel, Kind
from .session_request import SessionRequestForm, session_request_response


@require_safe
@export_view(Kind.SESSION_REQUEST)
def session_request_json(request, session_id: str, sequence: int | None = None):
    """/exports/sessions/<id>/requests/<n>.json, and /exports/sessions/<id>/request.json for
    the request without a sequence (?request_id= picks one if there are several)."""
    form = SessionRequestForm({
        "session_id": session_id,
        "sequence": sequence,
        "request_id": request.GET.get("request_id", ""),
    })
    if not form.is_valid():
        return json_error(400, form.error_text())
    return session_request_response(request, channel=Channel.WEB, **form.cleaned_data)

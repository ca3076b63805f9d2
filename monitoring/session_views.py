"""The session monitor (admins only, like the session request export): the list of sessions
and one session's requests with the details of the selected one."""

from urllib.parse import urlencode

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe

from accounts.models import ApiKey, User
from exports.access import admin_page
from exports.filters import quick_ranges
from exports.session_request import (
    export_filename,
    load_detail,
    missing_details,
    request_document,
)

from .sessions import (
    DEFAULT_DAYS,
    REQUESTS_PER_PAGE,
    SessionFilterForm,
    pretty_json,
    session_page,
    session_requests,
    session_url,
    with_default_window,
)


@require_safe
@admin_page
def sessions(request):
    form = SessionFilterForm(request.GET)
    filters, default_window = with_default_window(form.cleaned_data if form.is_valid() else {})
    page = session_page(filters, request.GET.get("page"), settings.SESSION_PAGE_SIZE)
    query = {k: v for k, v in request.GET.items() if k != "page" and v != ""}
    return render(request, "dashboard/sessions.html", {
        "form": form,
        "page": page,
        "query": urlencode(query),
        "default_window": default_window,
        "default_days": DEFAULT_DAYS,
        "users": User.objects.order_by("username"),
        "keys": ApiKey.objects.select_related("user").order_by("user__username", "name"),
        "quick_ranges": [(label, int(start.timestamp() * 1000)) for label, start in quick_ranges()],
    })


def export_url(row) -> str:
    """The export of exactly this row: the sequence in the path as the spec has it, and the
    request id in case a session holds that sequence twice."""
    if row.request_sequence:
        path = session_url("exports:session-request-json", row.session_id, row.request_sequence)
    else:
        path = session_url("exports:session-request-json-unsequenced", row.session_id)
    return f"{path}?{urlencode({'request_id': row.request_id})}"


@require_safe
@admin_page
def session_detail(request, session_id: str):
    rows = session_requests(session_id)
    page = Paginator(rows, REQUESTS_PER_PAGE).get_page(request.GET.get("page"))
    if not page.object_list:
        raise Http404("No such session.")
    selected = None
    if request.GET.get("request"):
        row = rows.filter(request_id=request.GET["request"]).first()
        if row is None:
            raise Http404("No such request in this session.")
        detail = load_detail(row)
        # The panel shows what the file holds: the export's own document.
        doc = request_document(row, detail) if detail else None
        selected = {
            "row": row,
            "doc": doc,
            "export_url": export_url(row),
            "filename": export_filename(row.session_id, row.request_sequence),
            "unavailable": None if detail else missing_details(row),
        }
        if doc:
            body = doc["body"]
            selected.update(
                headers=pretty_json(doc["headers"]),
                body=pretty_json(body) if doc["bodyFormat"] == "json" else body,
                meta=pretty_json(doc["meta"]),
                special=pretty_json(doc["specialSettings"]),
            )
    return render(request, "dashboard/session_detail.html", {
        "session_id": session_id,
        "page": page,
        "selected": selected,
        "page_query": urlencode({"page": page.number}) if page.number > 1 else "",
    })

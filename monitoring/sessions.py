"""Sessions as the session monitor shows them: usage rows grouped by session_id.

A page is built in two steps so that neither touches more rows than it needs:
1. the sessions active in the filtered window, newest activity first, one page of ids (a range
   scan of the time, user or key index, then a hash aggregate);
2. the totals of those ids only, over all their rows (the (session_id, request_sequence) index).
Without a time filter the window is the last DEFAULT_DAYS days, so the first step stays
bounded on a table of millions of rows; "All time" is one click away.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

from django import forms
from django.contrib.postgres.aggregates import ArrayAgg
from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.http import RFC3986_SUBDELIMS
from django.utils.translation import gettext_lazy

from accounts.models import ApiKey, User
from exports.filters import TimeWindowForm, WholeNumberField
from exports.usage import total_tokens_expr

from .models import MessageRequest, Provider, RequestDetail

DEFAULT_DAYS = 7
REQUESTS_PER_PAGE = 100


class SessionFilterForm(TimeWindowForm):
    user_id = WholeNumberField(label=gettext_lazy("User"), required=False, min_value=1)
    key_id = WholeNumberField(label=gettext_lazy("Key"), required=False, min_value=1)


def session_url(viewname: str, session_id: str, *args) -> str:
    """reverse() of a URL that holds a session id in its path (the session page, the export).

    Browsers resolve `.` and `..` path segments in a link (`/sessions/team/../x/` is requested
    as `/sessions/x/`, another session), and so do `%2e` forms; an encoded slash is left alone
    and decoded by the server before routing. So the slashes of an id with such a segment are
    sent as %2F; other ids keep theirs, readable."""
    url = reverse(viewname, args=[session_id, *args])
    if not {".", ".."} & set(session_id.split("/")):
        return url
    quoted = quote(session_id, safe=RFC3986_SUBDELIMS + "/~:@")  # as reverse() quotes it
    head, _, tail = url.partition(quoted)
    return head + quoted.replace("/", "%2F") + tail


def with_default_window(filters: dict, now: datetime | None = None) -> tuple[dict, bool]:
    """The filters, with a start DEFAULT_DAYS ago when no time was given; and whether that
    default applies."""
    if filters.get("start_time") or filters.get("end_time"):
        return filters, False
    start = timezone.localtime(now) - timedelta(days=DEFAULT_DAYS)
    return {**filters, "start_time": start}, True


def session_rows(filters: dict) -> QuerySet:
    # > '' is "has a session id" in one sargable condition (NOT NULL and not empty).
    q = MessageRequest.objects.filter(session_id__gt="")
    if filters.get("user_id"):
        q = q.filter(user_id=filters["user_id"])
    if filters.get("key_id"):
        q = q.filter(key_id=filters["key_id"])
    if filters.get("start_time"):
        q = q.filter(created_at__gte=filters["start_time"])
    if filters.get("end_time"):
        q = q.filter(created_at__lt=filters["end_time"])
    return q


@dataclass
class SessionSummary:
    session_id: str
    requests: int
    tokens: int | None
    cost: object
    first_at: datetime
    last_at: datetime
    users: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    providers: list = field(default_factory=list)


def _names(model, ids: set, attr: str) -> dict:
    if not ids:
        return {}
    manager = getattr(model, "all_objects", model.objects)
    return dict(manager.filter(pk__in=ids).values_list("pk", attr))


def summarize_sessions(session_ids: list[str]) -> list[SessionSummary]:
    """Totals over every row of each session (not only the rows inside the window), in the
    order of `session_ids`."""
    if not session_ids:
        return []
    stats = (
        MessageRequest.objects.filter(session_id__in=session_ids)
        .values("session_id")
        .annotate(
            requests=Count("id"),
            tokens=Sum(total_tokens_expr()),
            cost=Sum("cost_usd"),
            first_at=Min("created_at"),
            last_at=Max("created_at"),
            user_ids=ArrayAgg("user_id", distinct=True),
            key_ids=ArrayAgg("key_id", distinct=True, filter=Q(key_id__isnull=False)),
            provider_ids=ArrayAgg(
                "provider_id", distinct=True, filter=Q(provider_id__isnull=False)
            ),
        )
        .order_by()
    )
    stats = {s["session_id"]: s for s in stats}
    def ids(name):
        return {i for s in stats.values() for i in (s[name] or []) if i is not None}

    users = _names(User, ids("user_ids"), "username")
    keys = _names(ApiKey, ids("key_ids"), "name")
    providers = _names(Provider, ids("provider_ids"), "name")
    summaries = []
    for session_id in session_ids:
        s = stats.get(session_id)
        if s is None:
            continue
        summaries.append(
            SessionSummary(
                session_id=session_id,
                requests=s["requests"],
                tokens=s["tokens"],
                cost=s["cost"],
                first_at=s["first_at"],
                last_at=s["last_at"],
                users=sorted(users.get(i, f"#{i}") for i in s["user_ids"] or []),
                keys=sorted(keys.get(i, f"#{i}") for i in s["key_ids"] or []),
                providers=sorted(providers.get(i, f"#{i}") for i in s["provider_ids"] or []),
            )
        )
    return summaries


def session_page(filters: dict, page_number, per_page: int) -> Page:
    """One page of sessions, newest activity first; its object_list holds SessionSummary."""
    ordered = (
        session_rows(filters)
        .values("session_id")
        .annotate(last_seen=Max("created_at"))
        .order_by("-last_seen", "session_id")
    )
    page = Paginator(ordered, per_page).get_page(page_number)
    page.object_list = summarize_sessions([s["session_id"] for s in page.object_list])
    return page


def session_requests(session_id: str) -> QuerySet:
    """A session's requests in sequence (rows without one last, by time), each marked with
    whether its details are stored."""
    return (
        MessageRequest.objects.filter(session_id=session_id)
        .select_related("user", "key", "provider")
        .annotate(has_detail=Exists(RequestDetail.objects.filter(request_id=OuterRef("pk"))))
        .order_by(F("request_sequence").asc(nulls_last=True), "created_at", "id")
    )


def pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.shortcuts import redirect, render

from exports.filters import UsageFilterForm, filter_usage, quick_ranges, scope_filters
from exports.usage import total_tokens_expr

from .choices import usage_filter_choices


def quick_range_links(query: dict) -> list[tuple[str, str]]:
    """(label, query string): each quick range keeps the other filters and replaces the time."""
    other = {k: v for k, v in query.items() if k not in ("start_time", "end_time")}
    return [
        (label, urlencode({**other, "start_time": int(start.timestamp() * 1000)}))
        for label, start in quick_ranges()
    ]


@login_required
def home(request):
    return redirect("dashboard:logs")


@login_required
def usage_logs(request):
    form = UsageFilterForm(request.GET)
    form.is_valid()
    # The valid filters still apply; the page lists the invalid ones as not applied.
    applied = form.cleaned_data
    filters = scope_filters(request.user, applied)
    rows = filter_usage(filters)
    totals = rows.aggregate(
        requests=Count("id"), tokens=Sum(total_tokens_expr()), cost=Sum("cost_usd")
    )
    paginator = Paginator(rows.select_related("user", "key", "provider"), settings.USAGE_PAGE_SIZE)
    paginator.count = totals["requests"]  # already counted; spare a second COUNT(*)
    page = paginator.get_page(request.GET.get("page"))
    query = {k: v for k, v in request.GET.items() if k != "page" and v != ""}
    limit = settings.USAGE_EXPORT_MAX_ROWS
    return render(
        request,
        "dashboard/usage_logs.html",
        {
            "form": form,
            "page": page,
            "totals": totals,
            "choices": usage_filter_choices(request.user),
            "query": urlencode(query),
            "quick_ranges": quick_range_links(query),
            "exclude_200": filters.get("exclude_status_200", False),
            "export_limit": limit,
            "export_truncated": limit is not None and totals["requests"] > limit,
        },
    )

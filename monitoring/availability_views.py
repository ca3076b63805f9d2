"""The availability pages (admins only): endpoint cards, an endpoint's health page with its
probe terminal, the terminal's refresh, and "Probe now"."""

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from exports.access import admin_page
from exports.probe_logs import (
    RANGE_LABELS,
    RANGES,
    ProbeLogFilterForm,
    format_latency,
    format_probe_line,
    latest_probe_logs,
    probe_lines,
    resolve_window,
)

from .availability import latency_chart, latency_series, window_of
from .masking import mask_url
from .models import ProviderEndpoint
from .prober import EndpointGone, probe_now

DEFAULT_RANGE = "24h"
SPARK_BUCKETS, CHART_BUCKETS = 48, 120


@require_safe
@admin_page
def availability(request):
    chosen = request.GET.get("range")
    range_key = chosen if chosen in RANGES else DEFAULT_RANGE
    end = timezone.now()
    start = end - RANGES[range_key]
    endpoints = list(ProviderEndpoint.objects.select_related("provider"))
    series = latency_series(start, end, SPARK_BUCKETS, [e.pk for e in endpoints])
    cards = [
        {
            "endpoint": e,
            "series": series[e.pk],
            "chart": latency_chart(series[e.pk], 240, 48),
            "last_latency": format_latency(e.last_probe_latency_ms),
            "url": mask_url(e.url),
        }
        for e in endpoints
    ]
    return render(
        request,
        "dashboard/availability.html",
        {
            "cards": cards,
            "range": range_key,
            "ranges": RANGE_LABELS.items(),
            "start": start,
            "end": end,
            "time_zone": settings.TIME_ZONE,
        },
    )


def terminal_filters(request) -> ProbeLogFilterForm:
    """The page's filters: the export's form, over the last 24 hours unless asked otherwise."""
    data = request.GET.copy()
    if "range" not in data and not data.get("start_time"):
        data["range"] = DEFAULT_RANGE
    return ProbeLogFilterForm(data)


@require_safe
@admin_page
def endpoint_health(request, endpoint_id):
    endpoint = get_object_or_404(ProviderEndpoint.objects.select_related("provider"), pk=endpoint_id)
    form = terminal_filters(request)
    now = timezone.now()
    filters = form.cleaned_data if form.is_valid() else {"range": DEFAULT_RANGE}
    start, end = window_of(*resolve_window(filters, now), now, timedelta(days=1))
    series = latency_series(start, end, CHART_BUCKETS, [endpoint.pk])[endpoint.pk]
    entries = latest_probe_logs(endpoint.pk, filters, now=now) if form.is_valid() else []
    query = urlencode({k: v for k, v in form.data.items() if v != ""})
    return render(
        request,
        "dashboard/endpoint_health.html",
        {
            "endpoint": endpoint,
            "form": form,
            "series": series,
            "chart": latency_chart(series, 800, 200),
            "lines": probe_lines(entries),
            "query": query,
            "start": start,
            "end": end,
            "last_latency": format_latency(endpoint.last_probe_latency_ms),
            "url": mask_url(endpoint.url),
            "refresh_ms": settings.PROBE_TERMINAL_REFRESH_S * 1000,
            "time_zone": settings.TIME_ZONE,
        },
    )


@require_safe
@admin_page
def endpoint_lines(request, endpoint_id):
    """The terminal's refresh: the export's lines for the same filters, without the comment
    line and without an audit record (it is a view, polled every few seconds, not a download)."""
    endpoint = get_object_or_404(ProviderEndpoint, pk=endpoint_id)
    form = terminal_filters(request)
    if not form.is_valid():
        return HttpResponse(form.error_text(), status=400, content_type="text/plain; charset=utf-8")
    body = "".join(f"{line}\n" for line in probe_lines(latest_probe_logs(endpoint.pk, form.cleaned_data)))
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@admin_page
def endpoint_probe(request, endpoint_id):
    endpoint = get_object_or_404(ProviderEndpoint, pk=endpoint_id)
    try:
        entry = probe_now(endpoint)
    except EndpointGone as exc:
        raise Http404 from exc
    level = messages.SUCCESS if entry.ok else messages.WARNING
    text = _("Probed %(endpoint)s: %(line)s")
    name = endpoint.label or mask_url(endpoint.url)
    messages.add_message(request, level, text % {"endpoint": name, "line": format_probe_line(entry)})
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return redirect(target)
    return redirect("dashboard:endpoint-health", endpoint.pk)

"""The probe-log export: one endpoint's probes as text, one line each.

    [HH:mm:ss] OK 200 45ms
    [HH:mm:ss] FAIL 502 120ms HTTP 502 Bad Gateway
    [HH:mm:ss] FAIL - 5.00s Timed out after 5000 ms

The newest `max_lines` matching probes, oldest first. `-` stands for a missing status (TCP
probes, timeouts) or latency. Times and the file's date are in settings.TIME_ZONE. A file with
lines starts with one comment line naming the endpoint (the reference system's file did not say
whose probes it held, and its lines carry no date); no probe line can start with `#`. When
nothing matches the file is empty.

One function, `probe_logs_export`, behind the dashboard download, the terminal on the
endpoint's page, the admin action and `manage.py export_probe_logs`; one form,
`ProbeLogFilterForm`, validates the filters of all of them.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from monitoring.masking import mask_url
from monitoring.models import ProbeLog, ProviderEndpoint

from .audit import Kind, start_audit
from .filters import TimestampField, TimeWindowForm, WholeNumberField, filters_for_audit
from .streaming import streaming_download

MAX_LINES_DEFAULT = 100
MAX_LINES_LIMIT = 1000

# Quick ranges of the availability pages (and of the export, as a convenience): the window
# ends now, when the request is served.
RANGES = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
RANGE_LABELS = {
    "15m": gettext_lazy("Last 15 minutes"),
    "1h": gettext_lazy("Last hour"),
    "6h": gettext_lazy("Last 6 hours"),
    "24h": gettext_lazy("Last 24 hours"),
    "7d": gettext_lazy("Last 7 days"),
}

FILTER_FIELDS = ("start_time", "end_time", "range", "status", "search", "max_lines")


class CaseInsensitiveChoiceField(forms.ChoiceField):
    """status=OK, status=Fail, range=1H: the choices are lower case, what is typed need not be."""

    def to_python(self, value):
        return super().to_python(value).strip().lower()


class ProbeLogFilterForm(TimeWindowForm):
    start_time = TimestampField(
        label=gettext_lazy("Start time"),
        required=False,
        help_text=gettext_lazy("Milliseconds since the epoch or ISO 8601."),
    )
    range = CaseInsensitiveChoiceField(
        label=gettext_lazy("Time range"),
        required=False,
        choices=[("", gettext_lazy("All")), *RANGE_LABELS.items()],
        help_text=gettext_lazy("Instead of a start time: this long before now."),
    )
    status = CaseInsensitiveChoiceField(
        label=gettext_lazy("Status"),
        required=False,
        choices=[("all", gettext_lazy("All")), ("ok", "OK"), ("fail", "FAIL")],
    )
    search = forms.CharField(
        label=gettext_lazy("Search"),
        required=False,
        max_length=200,
        help_text=gettext_lazy("In error messages and error types; a number matches the status."),
    )
    max_lines = WholeNumberField(
        label=gettext_lazy("Max lines"),
        required=False,
        min_value=1,
        max_value=MAX_LINES_LIMIT,
        help_text=gettext_lazy("The newest matching probes, 1 to 1000; 100 by default."),
    )

    def clean_status(self):
        return self.cleaned_data.get("status") or "all"

    def clean_max_lines(self):
        value = self.cleaned_data.get("max_lines")
        return MAX_LINES_DEFAULT if value is None else value

    def clean_search(self):
        return (self.cleaned_data.get("search") or "").strip()

    def clean(self):
        data = super().clean()
        if data.get("range") and data.get("start_time"):
            self.add_error("range", _("Give a time range or a start time, not both."))
        return data


def resolve_window(filters: dict, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """(start, end) of the filters; a quick range becomes a start relative to `now`."""
    start = filters.get("start_time")
    if filters.get("range"):
        start = (now or timezone.now()) - RANGES[filters["range"]]
    return start, filters.get("end_time")


def filter_probe_logs(endpoint_id: int, filters: dict, queryset: QuerySet | None = None,
                      now: datetime | None = None) -> QuerySet:
    """Matching probe logs of one endpoint, newest first, on the (endpoint, created_at, id)
    index."""
    q = ProbeLog.objects.all() if queryset is None else queryset
    q = q.filter(endpoint_id=endpoint_id)
    start, end = resolve_window(filters, now)
    if start:
        q = q.filter(created_at__gte=start)
    if end:
        q = q.filter(created_at__lt=end)
    status = filters.get("status") or "all"
    if status == "ok":
        q = q.filter(ok=True)
    elif status == "fail":
        q = q.filter(ok=False)
    text = filters.get("search")
    if text:
        match = Q(error_message__icontains=text) | Q(error_type__icontains=text)
        if text.isdigit() and len(text) <= 3:
            match |= Q(status_code=int(text))
        q = q.filter(match)
    return q.order_by("-created_at", "-id")


def display_zone() -> ZoneInfo:
    # The deployment's zone, read at call time (not the request's active zone): lines and the
    # file name must agree, whoever downloads.
    return ZoneInfo(settings.TIME_ZONE)


def format_latency(ms: int | None) -> str:
    """45ms below a second; 1.50s from 1000 ms up (rounded half up to the hundredth); - unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    centis = (ms + 5) // 10
    return f"{centis // 100}.{centis % 100:02d}s"


_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}
# Everything a viewer might take for a line break or that would hide text: C0/C1 controls,
# DEL, and the Unicode line and paragraph separators.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_message(text: str) -> str:
    """One line, always: CR, LF, tab and backslash as \\r \\n \\t \\\\, other controls as
    \\uXXXX. Surrounding whitespace is dropped, so a line never ends in a space."""
    text = text.strip()
    return _UNSAFE.sub(lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def format_probe_line(entry: ProbeLog, zone: ZoneInfo | None = None) -> str:
    at = entry.created_at.astimezone(zone or display_zone())
    parts = [
        f"[{at:%H:%M:%S}]",
        "OK" if entry.ok else "FAIL",
        "-" if entry.status_code is None else str(entry.status_code),
        format_latency(entry.latency_ms),
    ]
    if not entry.ok:
        message = escape_message(entry.error_message or "")
        if message:
            parts.append(message)
    return " ".join(parts)


def endpoint_comment(endpoint: ProviderEndpoint, first: datetime, last: datetime,
                     zone: ZoneInfo) -> str:
    """`# probe logs of <provider> / <label> <url> (endpoint N); <first> .. <last> <zone>`"""
    url = escape_message(mask_url(endpoint.url))
    name = escape_message(f"{endpoint.provider.name} / {endpoint.label or url}")
    span = f"{first.astimezone(zone):%Y-%m-%d %H:%M:%S} .. {last.astimezone(zone):%Y-%m-%d %H:%M:%S}"
    return f"# probe logs of {name} {url} (endpoint {endpoint.pk}); {span} {zone.key}"


def latest_probe_logs(endpoint_id: int, filters: dict, queryset: QuerySet | None = None,
                      now: datetime | None = None) -> list[ProbeLog]:
    """The newest max_lines matching probes, in time order (oldest first)."""
    limit = filters.get("max_lines") or MAX_LINES_DEFAULT
    rows = list(filter_probe_logs(endpoint_id, filters, queryset, now)[:limit])
    rows.reverse()
    return rows


def probe_lines(entries: list[ProbeLog], zone: ZoneInfo | None = None) -> list[str]:
    zone = zone or display_zone()
    return [format_probe_line(entry, zone) for entry in entries]


class ProbeLogText:
    """The file: a comment naming the endpoint, then one line per probe, each ending in LF.
    At most MAX_LINES_LIMIT lines, so it is rendered at once and sent as one chunk."""

    def __init__(self, endpoint: ProviderEndpoint, entries: list[ProbeLog], zone: ZoneInfo):
        self.rows = len(entries)
        if not entries:
            self.body = b""
        else:
            head = endpoint_comment(endpoint, entries[0].created_at, entries[-1].created_at, zone)
            self.body = "".join(f"{line}\n" for line in [head, *probe_lines(entries, zone)]).encode()

    def __iter__(self):
        if self.body:
            yield self.body


@dataclass
class ProbeLogExport:
    source: ProbeLogText
    filename: str
    filters: dict


def export_filename(now: datetime | None = None, zone: ZoneInfo | None = None) -> str:
    """probe-logs-YYYY-MM-DD.txt, dated today in the zone of the lines."""
    return f"probe-logs-{(now or timezone.now()).astimezone(zone or display_zone()):%Y-%m-%d}.txt"


def probe_logs_export(endpoint: ProviderEndpoint, filters: dict, queryset: QuerySet | None = None,
                      now: datetime | None = None) -> ProbeLogExport:
    now = now or timezone.now()
    zone = display_zone()
    entries = latest_probe_logs(endpoint.pk, filters, queryset, now)
    return ProbeLogExport(
        source=ProbeLogText(endpoint, entries, zone),
        filename=export_filename(now, zone),
        filters={"endpoint_id": endpoint.pk, **filters_for_audit(filters)},
    )


def probe_logs_response(request, endpoint: ProviderEndpoint, filters: dict, *, channel: str,
                        queryset: QuerySet | None = None, audit_filters: dict | None = None):
    """The download, for the dashboard and the admin action alike."""
    export = probe_logs_export(endpoint, filters, queryset)
    audit = start_audit(
        kind=Kind.PROBE_LOGS,
        channel=channel,
        user=request.user,
        request=request,
        filters={**export.filters, **(audit_filters or {})},
    )
    return streaming_download(
        request,
        export.source,
        audit=audit,
        filename=export.filename,
        content_type="text/plain; charset=utf-8",
    )

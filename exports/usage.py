"""The usage-log CSV: one function, `usage_csv_export`, behind the dashboard, the admin action
and `manage.py export_usage_logs`.

Cells are formatted and escaped in SQL (the hub_csv_* functions, see exports/csvfile.py) and
the rows leave PostgreSQL through COPY ... TO STDOUT, so the file streams at COPY speed with flat
memory: Python only relays blocks of bytes.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, F, Func, Q, QuerySet, TextField, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from psycopg import ClientCursor

from monitoring.models import TOKEN_FIELDS

from .audit import Kind, start_audit
from .csvfile import BOM, text_line
from .streaming import streaming_download

# The spec's 18 columns, in its order; the Chinese names come from the zh-hans catalogue.
COLUMNS = (
    _("Time"),
    _("User"),
    _("Key"),
    _("Provider"),
    _("Model"),
    _("Original model"),
    _("Endpoint"),
    _("Status code"),
    _("Input tokens"),
    _("Output tokens"),
    _("Cache write 5m"),
    _("Cache write 1h"),
    _("Cache read"),
    _("Total tokens"),
    _("Cost (USD)"),
    _("Duration (ms)"),
    _("Session ID"),
    _("Retry count"),
)

# Relay COPY's per-row messages in blocks of about this size.
CHUNK_BYTES = 64 * 1024


def _text(expr):
    return Func(expr, function="hub_csv_text", output_field=TextField())


def total_tokens_expr():
    """Sum of the five token columns; empty when all five are (an in-flight row)."""
    first, *rest = (Coalesce(F(name), Value(0)) for name in TOKEN_FIELDS)
    total = sum(rest, first)
    any_known = Q()
    for name in TOKEN_FIELDS:
        any_known |= Q(**{f"{name}__isnull": False})
    return Case(When(any_known, then=total), default=None, output_field=BigIntegerField())


def csv_rows(queryset: QuerySet) -> QuerySet:
    """The export's 18 cells per row, as SQL expressions, in the queryset's order."""
    tz = timezone.get_current_timezone_name() if settings.USE_TZ else "UTC"
    return queryset.values_list(
        Func(F("created_at"), Value(tz), function="hub_csv_time", output_field=TextField()),
        _text(F("user__username")),
        _text(F("key__name")),
        _text(F("provider__name")),
        _text(F("model")),
        _text(F("original_model")),
        _text(F("endpoint")),
        "status_code",
        *TOKEN_FIELDS,
        total_tokens_expr(),
        Func(F("cost_usd"), function="hub_csv_decimal", output_field=TextField()),
        "duration_ms",
        _text(F("session_id")),
        "retry_count",
    )


def header_line() -> str:
    return text_line([str(name) for name in COLUMNS])


class UsageCsvSource:
    """BOM and header, then the rows of one COPY statement. `rows` is set when COPY ends."""

    def __init__(self, queryset: QuerySet):
        self.sql, self.params = csv_rows(queryset).query.sql_with_params()
        self.rows: int | None = None
        # The header is rendered now, in the request's language, not later inside the iterator.
        self.head = (BOM + header_line()).encode()

    def __iter__(self):
        yield self.head
        connection.ensure_connection()
        statement = ClientCursor(connection.connection).mogrify(
            f"COPY ({self.sql}) TO STDOUT WITH (FORMAT csv)", self.params
        )
        # atomic(): closing the stream early cancels the COPY, which aborts the transaction it
        # ran in; the exception unwinding through here rolls that back (or its savepoint).
        with transaction.atomic(), connection.cursor() as cursor:
            # JIT compiling this wide projection costs seconds up front and saves little on a
            # streamed scan; without it the first rows leave sooner and the whole runs faster.
            cursor.execute("SET LOCAL jit = off")
            with cursor.copy(statement) as copy:
                buffer, size = [], 0
                for block in copy:
                    buffer.append(block)
                    size += len(block)
                    if size >= CHUNK_BYTES:
                        yield b"".join(buffer)
                        buffer, size = [], 0
                if buffer:
                    yield b"".join(buffer)
            self.rows = cursor.rowcount


@dataclass
class UsageExport:
    source: UsageCsvSource
    row_limit: int | None = None
    truncated: bool = False
    filters: dict = field(default_factory=dict)


def usage_csv_export(queryset: QuerySet) -> UsageExport:
    """Prepare the CSV of `queryset` (already filtered and scoped). With USAGE_EXPORT_MAX_ROWS
    set, the file stops there and `truncated` says whether rows were left out."""
    limit = settings.USAGE_EXPORT_MAX_ROWS
    truncated = False
    queryset = queryset.order_by("-created_at", "-id")
    if limit is not None:
        truncated = queryset[limit : limit + 1].exists()
        queryset = queryset[:limit]
    return UsageExport(source=UsageCsvSource(queryset), row_limit=limit, truncated=truncated)


def export_filename(now=None) -> str:
    return f"usage-logs-{timezone.localtime(now):%Y%m%d-%H%M%S}.csv"


def usage_csv_response(request, queryset: QuerySet, *, channel: str, filters: dict):
    """The download, for the dashboard and the admin action alike. `queryset` must already be
    scoped to what request.user may see."""
    export = usage_csv_export(queryset)
    audit = start_audit(
        kind=Kind.USAGE_CSV, channel=channel, user=request.user, request=request, filters=filters
    )
    if export.truncated:
        audit.detail = f"truncated at USAGE_EXPORT_MAX_ROWS={export.row_limit}"
    response = streaming_download(
        request,
        export.source,
        audit=audit,
        filename=export_filename(),
        content_type="text/csv; charset=utf-8",
    )
    if export.truncated:
        response["X-Export-Truncated"] = str(export.row_limit)
    return response

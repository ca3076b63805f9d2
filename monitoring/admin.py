from datetime import timedelta

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from exports.access import can_export, scope_usage
from exports.audit import Channel, Kind
from exports.probe_logs import MAX_LINES_LIMIT, probe_logs_response
from exports.session_request import session_request_response
from exports.usage import usage_csv_response

from .choices import distinct_values
from .models import (
    NON_200,
    MessageRequest,
    ProbeLog,
    Provider,
    ProviderEndpoint,
    RequestDetail,
)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "provider_type", "url", "is_enabled", "created_at"]
    list_filter = ["provider_type", "is_enabled"]
    search_fields = ["name", "url"]


@admin.register(ProviderEndpoint)
class ProviderEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "__str__", "provider", "url", "is_enabled", "last_probe_at", "last_probe_ok",
        "last_probe_status_code", "last_probe_latency_ms",
    ]
    list_filter = ["provider", "is_enabled", "last_probe_ok"]
    search_fields = ["url", "label", "provider__name"]
    list_select_related = ["provider"]


@admin.register(ProbeLog)
class ProbeLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "endpoint", "source", "ok", "status_code", "latency_ms", "error_type"]
    list_filter = ["ok", "source", "error_type", "endpoint"]
    list_select_related = ["endpoint"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ["export_text"]

    @admin.action(description=_("Download selected probe logs as text"), permissions=["export"])
    def export_text(self, request, queryset):
        endpoint_ids = list(queryset.order_by().values_list("endpoint_id", flat=True).distinct()[:2])
        if len(endpoint_ids) != 1:
            self.message_user(
                request, _("Select probe logs of one endpoint: the file is one endpoint's log."),
                messages.ERROR,
            )
            return None
        count = queryset.count()
        if count > MAX_LINES_LIMIT:
            self.message_user(
                request,
                _("%(count)s probe logs selected; a file holds at most %(limit)s lines. "
                  "Narrow the selection (for example by date).")
                % {"count": count, "limit": MAX_LINES_LIMIT},
                messages.ERROR,
            )
            return None
        endpoint = ProviderEndpoint.objects.select_related("provider").get(pk=endpoint_ids[0])
        return probe_logs_response(
            request, endpoint, {"max_lines": MAX_LINES_LIMIT}, channel=Channel.ADMIN,
            queryset=queryset, audit_filters=selection_for_audit(request),
        )

    def has_export_permission(self, request):
        return can_export(request.user, Kind.PROBE_LOGS)


class StatusFilter(admin.SimpleListFilter):
    title = _("status code")
    parameter_name = "status"
    CODES = (200, 400, 401, 403, 404, 429, 500, 502, 503, 504)

    def lookups(self, request, model_admin):
        return [
            ("non200", _("not 200")),
            ("inflight", _("in flight")),
            *[(str(code), str(code)) for code in self.CODES],
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "non200":
            return queryset.filter(NON_200)
        if value == "inflight":
            return queryset.filter(status_code__isnull=True)
        if value and value.isdigit():
            return queryset.filter(status_code=int(value))
        return queryset


class RetryFilter(admin.SimpleListFilter):
    title = _("min retry count")
    parameter_name = "min_retry_count"

    def lookups(self, request, model_admin):
        return [(str(n), f"≥ {n}") for n in (1, 2, 3)]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(retry_count__gte=int(self.value()))
        return queryset


class TimeRangeFilter(admin.SimpleListFilter):
    title = _("time")
    parameter_name = "range"
    DAYS = {"today": 0, "7d": 7, "30d": 30}

    def lookups(self, request, model_admin):
        return [("today", _("Today")), ("7d", _("Last 7 days")), ("30d", _("Last 30 days"))]

    def queryset(self, request, queryset):
        if self.value() not in self.DAYS:
            return queryset
        now = timezone.localtime()
        if self.value() == "today":
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            start = now - timedelta(days=self.DAYS[self.value()])
        return queryset.filter(created_at__gte=start)


class DistinctValueFilter(admin.SimpleListFilter):
    """Values seen in the usage log (cached), for model and endpoint."""

    field: str

    def lookups(self, request, model_admin):
        return [(v, v) for v in distinct_values(self.field, None)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class ModelFilter(DistinctValueFilter):
    title = _("model")
    parameter_name = "model"
    field = "model"


class EndpointFilter(DistinctValueFilter):
    title = _("endpoint")
    parameter_name = "endpoint"
    field = "endpoint"


def selection_for_audit(request) -> dict:
    if request.POST.get("select_across") == "1":
        return {"selection": "all", "changelist_query": request.GET.urlencode()}
    ids = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
    return {"selection": "ids", "ids": ids[:1000], "count": len(ids)}


class RequestDetailInline(admin.StackedInline):
    model = RequestDetail
    can_delete = False
    extra = 0
    readonly_fields = [
        "method", "client_url", "upstream_url", "headers", "body", "body_text", "body_format",
        "response_status", "meta", "special_settings", "created_at",
    ]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(MessageRequest)
class MessageRequestAdmin(admin.ModelAdmin):
    list_display = [
        "created_at", "user", "key", "provider", "model", "endpoint", "status_code",
        "input_tokens", "output_tokens", "cost_usd", "duration_ms", "session_id", "retry_count",
    ]
    list_filter = [
        TimeRangeFilter, StatusFilter, RetryFilter, "user", "provider", "key", ModelFilter,
        EndpointFilter,
    ]
    # Exact matches only: a LIKE over tens of millions of rows would not use the indexes.
    search_fields = ["=session_id", "=request_id"]
    search_help_text = _("Exact session ID or request ID.")
    list_select_related = ["user", "key", "provider"]
    show_full_result_count = False
    list_per_page = 50
    raw_id_fields = ["user", "key", "provider"]
    readonly_fields = ["retry_count"]
    inlines = [RequestDetailInline]
    actions = ["export_csv"]

    @admin.action(description=_("Export selected rows as CSV"), permissions=["export"])
    def export_csv(self, request, queryset):
        rows = scope_usage(request.user, queryset)
        return usage_csv_response(
            request,
            rows,
            channel=Channel.ADMIN,
            filters=selection_for_audit(request),
        )

    def has_export_permission(self, request):
        return can_export(request.user, Kind.USAGE_CSV)


@admin.register(RequestDetail)
class RequestDetailAdmin(admin.ModelAdmin):
    list_display = ["request", "method", "client_url", "response_status", "created_at"]
    list_select_related = ["request"]
    raw_id_fields = ["request"]
    show_full_result_count = False
    search_fields = ["=request__session_id", "=request__request_id"]
    search_help_text = _("Exact session ID or request ID.")
    actions = ["export_json"]

    @admin.action(description=_("Export the selected request as JSON"), permissions=["export"])
    def export_json(self, request, queryset):
        details = list(queryset.select_related("request__provider")[:2])
        if len(details) != 1:
            self.message_user(request, _("Select exactly one request to export."), messages.WARNING)
            return None
        return session_request_response(request, channel=Channel.ADMIN, row=details[0].request)

    def has_export_permission(self, request):
        return can_export(request.user, Kind.SESSION_REQUEST)

    # Details are written only by the ingest path, which masks them; an edit form would let an
    # unmasked value in. Deleting stays possible (and pruning does it in bulk).
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

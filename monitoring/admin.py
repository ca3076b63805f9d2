from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from exports.access import can_export, is_admin, scope_usage
from exports.audit import Channel, Kind
from exports.filters import (
    TimeWindowForm,
    UsageFilterForm,
    filter_usage,
    normalize_endpoint,
    quick_ranges,
)
from exports.probe_logs import MAX_LINES_LIMIT, probe_logs_response
from exports.session_request import session_request_response
from exports.usage import usage_csv_response

from .choices import usage_filter_choices
from .detail_retention import mark_details_deleted
from .models import (
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


def clean_param(name: str, value: str):
    """A usage-log filter value from the changelist's URL, validated by the field of the form
    that every other channel uses; a bad value gets Django admin's "incorrect lookup" notice
    instead of a 500."""
    try:
        return UsageFilterForm.base_fields[name].clean(value)
    except ValidationError as exc:
        raise IncorrectLookupParameters(f"{name}: {' '.join(exc.messages)}") from exc


class UsageListFilter(admin.SimpleListFilter):
    """One usage-log filter, under the form field's name (the export's query parameter), applied
    by filter_usage like everywhere else."""

    def lookups(self, request, model_admin):
        return self.choices_for(usage_filter_choices(request.user))

    def choices_for(self, choices: dict) -> list[tuple[str, str]]:
        raise NotImplementedError

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        value = clean_param(self.parameter_name, self.value())
        return filter_usage({self.parameter_name: value}, queryset, hide_non_billing=False)


class UserFilter(UsageListFilter):
    title = _("user")
    parameter_name = "user_id"

    def choices_for(self, choices):
        return [(str(u.pk), u.username) for u in choices["users"]]


class KeyFilter(UsageListFilter):
    title = _("key")
    parameter_name = "key_id"

    def choices_for(self, choices):
        return [(str(k.pk), f"{k.user.username} · {k.name}") for k in choices["keys"]]


class ProviderFilter(UsageListFilter):
    title = _("provider")
    parameter_name = "provider_id"

    def choices_for(self, choices):
        return [(str(p.pk), p.name) for p in choices["providers"]]


class ModelFilter(UsageListFilter):
    title = _("model")
    parameter_name = "model"

    def choices_for(self, choices):
        return [(m, m) for m in choices["models"]]


class EndpointFilter(UsageListFilter):
    title = _("endpoint")
    parameter_name = "endpoint"

    def choices_for(self, choices):
        # Matching ignores case and a trailing "/": offer each endpoint once.
        return [(e, e) for e in sorted({normalize_endpoint(e) for e in choices["endpoints"]})]


class StatusFilter(UsageListFilter):
    title = _("status code")
    parameter_name = "status_code"
    CODES = (200, 400, 401, 403, 404, 429, 500, 502, 503, 504)

    def choices_for(self, choices):
        return [
            ("non200", _("not 200")),
            ("inflight", _("in flight")),
            *[(str(code), str(code)) for code in self.CODES],
        ]

    def queryset(self, request, queryset):
        if self.value() == "non200":
            return filter_usage({"exclude_status_200": True}, queryset, hide_non_billing=False)
        if self.value() == "inflight":
            return queryset.filter(status_code__isnull=True)
        return super().queryset(request, queryset)


class RetryFilter(UsageListFilter):
    title = _("min retry count")
    parameter_name = "min_retry_count"

    def choices_for(self, choices):
        return [(str(n), f"≥ {n}") for n in (1, 2, 3, 5)]


class TimeWindowFilter(admin.ListFilter):
    """start_time and end_time (end exclusive) as the export takes them, milliseconds or ISO
    8601, with the page's quick ranges as links."""

    title = _("time")
    PARAMS = ("start_time", "end_time")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.PARAMS:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]

    def has_output(self):
        return True

    def expected_parameters(self):
        return list(self.PARAMS)

    def choices(self, changelist):
        yield {
            "selected": not self.used_parameters,
            "query_string": changelist.get_query_string(remove=self.PARAMS),
            "display": _("All"),
        }
        for label, start in quick_ranges():
            yield {
                "selected": False,
                "query_string": changelist.get_query_string(
                    {"start_time": int(start.timestamp() * 1000)}, remove=["end_time"]
                ),
                "display": label,
            }

    def queryset(self, request, queryset):
        if not self.used_parameters:
            return queryset
        form = TimeWindowForm(self.used_parameters)
        if not form.is_valid():
            raise IncorrectLookupParameters(form.error_text())
        return filter_usage(form.cleaned_data, queryset, hide_non_billing=False)


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
        TimeWindowFilter, StatusFilter, RetryFilter, UserFilter, KeyFilter, ProviderFilter,
        ModelFilter, EndpointFilter,
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

    # Usage rows are the proxy's record (ingested, masked, retry count derived): readable and
    # deletable here, never typed in or edited by hand.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_changelist_instance(self, request):
        # Django answers a bad filter value with a bare redirect to ?e=1; say which one it was.
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            self.message_user(
                request, _("Filters not applied: %(error)s") % {"error": exc}, messages.ERROR
            )
            raise

    def get_queryset(self, request):
        # Staff who are not admins (given view permission by hand) see their own rows only,
        # in the list, the change pages and the export action alike.
        return scope_usage(request.user, super().get_queryset(request))

    def get_list_filter(self, request):
        if is_admin(request.user):
            return self.list_filter
        return [f for f in self.list_filter if f is not UserFilter]

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

    def get_queryset(self, request):
        # As for the usage rows: staff who are not admins (given view permission by hand) see
        # the details of their own requests only.
        return scope_usage(request.user, super().get_queryset(request), owner="request__user_id")

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

    # A deletion is recorded on the usage row, so the export says "deleted", not "never
    # recorded"; in one transaction with the delete.
    def delete_model(self, request, obj):
        request_id = obj.pk  # delete() sets obj.pk to None
        with transaction.atomic():
            super().delete_model(request, obj)
            mark_details_deleted([request_id])

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True))
            super().delete_queryset(request, queryset)
            mark_details_deleted(ids)

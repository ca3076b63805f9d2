"""The usage-log filters: one form validates them for the dashboard page, the CSV export and
`manage.py export_usage_logs`; one function turns them into a queryset."""

import re
from datetime import UTC, datetime, timedelta

from django import forms
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from monitoring.models import NON_200, NON_BILLING_ENDPOINTS, MessageRequest, normalized_endpoint

from .access import is_admin

FILTER_FIELDS = (
    "user_id",
    "key_id",
    "provider_id",
    "session_id",
    "start_time",
    "end_time",
    "status_code",
    "exclude_status_200",
    "model",
    "endpoint",
    "min_retry_count",
)


class TimestampField(forms.Field):
    """Milliseconds since the epoch, or ISO 8601 (a time without offset is in TIME_ZONE)."""

    default_error_messages = {
        "invalid": gettext_lazy("Enter milliseconds since the epoch or an ISO 8601 time."),
        "range": gettext_lazy("Enter a time between the years 1900 and 9000."),
    }

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            parsed = value
        else:
            text = str(value).strip()
            try:
                if re.fullmatch(r"-?[0-9]+", text):
                    parsed = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
                else:
                    parsed = datetime.fromisoformat(text)
            except (ValueError, OverflowError, OSError) as exc:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc
        try:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed)
            # Far from these, converting to a local time zone overflows datetime.
            in_range = datetime(1900, 1, 1, tzinfo=UTC) <= parsed <= datetime(9000, 1, 1, tzinfo=UTC)
        except (ValueError, OverflowError) as exc:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc
        if not in_range:
            raise forms.ValidationError(self.error_messages["range"], code="range")
        return parsed


class WholeNumberField(forms.IntegerField):
    """ASCII digits only, within PostgreSQL's bigint. Django's IntegerField takes whatever
    Python's int() takes (full-width and Arabic-Indic digits, 1_0), and an id past bigint
    matched nothing instead of being refused."""

    def __init__(self, *, max_value=2**63 - 1, **kwargs):
        super().__init__(max_value=max_value, **kwargs)

    def to_python(self, value):
        if value not in self.empty_values and not isinstance(value, int):
            if not re.fullmatch(r"[+-]?[0-9]+", str(value).strip()):
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class StrictBooleanField(forms.Field):
    """true/false, 1/0, on/off, yes/no; anything else is an error, not silently true."""

    widget = forms.CheckboxInput
    TRUE = {"1", "true", "on", "yes"}
    FALSE = {"", "0", "false", "off", "no"}
    default_error_messages = {"invalid": gettext_lazy("Enter true or false.")}

    def to_python(self, value):
        if isinstance(value, bool):
            return value
        text = "" if value is None else str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


class StrictCheckboxInput(forms.CheckboxInput):
    # Django's CheckboxInput turns any unknown string into True; hand the raw value to the field.
    def value_from_datadict(self, data, files, name):
        return data.get(name)


class TimeWindowForm(forms.Form):
    """The base of every filter form: a time window (end exclusive, after the start) and all
    errors on one line naming their fields, for 400 bodies and CommandErrors alike."""

    start_time = TimestampField(label=gettext_lazy("Start time"), required=False)
    end_time = TimestampField(
        label=gettext_lazy("End time"),
        required=False,
        help_text=gettext_lazy("Exclusive."),
    )

    def clean(self):
        data = super().clean()
        start, end = data.get("start_time"), data.get("end_time")
        if start and end and end <= start:
            self.add_error("end_time", _("End time must be after start time."))
        return data

    def error_text(self) -> str:
        """'<field>: <message>; <field>: <message>'."""
        return "; ".join(
            f"{field}: {' '.join(str(m) for m in messages)}"
            for field, messages in self.errors.items()
        )


class UsageFilterForm(TimeWindowForm):
    user_id = WholeNumberField(label=gettext_lazy("User"), required=False, min_value=1)
    key_id = WholeNumberField(label=gettext_lazy("Key"), required=False, min_value=1)
    provider_id = WholeNumberField(label=gettext_lazy("Provider"), required=False, min_value=1)
    session_id = forms.CharField(label=gettext_lazy("Session ID"), required=False, max_length=200)
    status_code = WholeNumberField(
        label=gettext_lazy("Status code"), required=False, min_value=100, max_value=599
    )
    exclude_status_200 = StrictBooleanField(
        label=gettext_lazy("Exclude 200"), required=False, widget=StrictCheckboxInput
    )
    model = forms.CharField(label=gettext_lazy("Model"), required=False, max_length=200)
    endpoint = forms.CharField(label=gettext_lazy("Endpoint"), required=False, max_length=500)
    min_retry_count = WholeNumberField(
        label=gettext_lazy("Min retry count"), required=False, min_value=0, max_value=1000
    )


def scope_filters(user, filters: dict) -> dict:
    """Admins (and commands run without --as-user, user None) see every row; anyone else is
    held to their own user id, whatever the request said."""
    scoped = {k: v for k, v in filters.items() if v not in (None, "", False)}
    if user is not None and not is_admin(user):
        scoped["user_id"] = user.pk
    return scoped


def normalize_endpoint(value: str) -> str:
    return value.strip().rstrip("/").lower()


def filter_usage(
    filters: dict, queryset: QuerySet | None = None, *, hide_non_billing: bool = True
) -> QuerySet:
    """Apply cleaned, scoped filters (AND). Newest first, on the (created_at, id) index.
    Without an endpoint filter the non-billing endpoints are left out, as in the reference
    system's page and export; the admin changelist, which shows the table as it is, passes
    hide_non_billing=False."""
    q = MessageRequest.objects.all() if queryset is None else queryset
    if filters.get("user_id") is not None:
        q = q.filter(user_id=filters["user_id"])
    if filters.get("key_id") is not None:
        q = q.filter(key_id=filters["key_id"])
    if filters.get("provider_id") is not None:
        q = q.filter(provider_id=filters["provider_id"])
    if filters.get("session_id"):
        q = q.filter(session_id=filters["session_id"])
    if filters.get("start_time"):
        q = q.filter(created_at__gte=filters["start_time"])
    if filters.get("end_time"):
        q = q.filter(created_at__lt=filters["end_time"])
    if filters.get("status_code") is not None:
        q = q.filter(status_code=filters["status_code"])
    if filters.get("exclude_status_200"):
        q = q.filter(NON_200)
    if filters.get("model"):
        q = q.filter(model=filters["model"])
    q = q.alias(endpoint_key=normalized_endpoint())
    if filters.get("endpoint"):
        q = q.filter(endpoint_key=normalize_endpoint(filters["endpoint"]))
    elif hide_non_billing:
        q = q.exclude(endpoint_key__in=NON_BILLING_ENDPOINTS)
    if filters.get("min_retry_count"):
        q = q.filter(retry_count__gte=filters["min_retry_count"])
    return q.order_by("-created_at", "-id")


def filters_for_audit(filters: dict) -> dict:
    """JSON-safe copy: times as ISO 8601."""
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in filters.items()
        if v not in (None, "", False)
    }


def quick_ranges(now: datetime | None = None) -> list[tuple[str, datetime]]:
    """(label, start) of the page's quick ranges, in the deployment's time zone."""
    now = timezone.localtime(now)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        (_("Today"), today),
        (_("Last 7 days"), now - timedelta(days=7)),
        (_("Last 30 days"), now - timedelta(days=30)),
    ]

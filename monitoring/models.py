import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .retries import retry_count_from_chain


class Provider(models.Model):
    class Type(models.TextChoices):
        CLAUDE = "claude", "Claude"
        CLAUDE_AUTH = "claude-auth", "Claude (auth)"
        CODEX = "codex", "Codex"
        GEMINI = "gemini", "Gemini"
        GEMINI_CLI = "gemini-cli", "Gemini CLI"
        OPENAI_COMPATIBLE = "openai-compatible", "OpenAI compatible"

    name = models.CharField(_("name"), max_length=200, unique=True)
    url = models.URLField(_("URL"), max_length=500)
    provider_type = models.CharField(
        _("type"), max_length=32, choices=Type.choices, default=Type.CLAUDE
    )
    is_enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("provider")
        verbose_name_plural = _("providers")
        ordering = ["name"]

    def __str__(self):
        return self.name


class ProbeErrorType(models.TextChoices):
    TIMEOUT = "timeout", _("timeout")
    NETWORK_ERROR = "network_error", _("network error")
    INVALID_URL = "invalid_url", _("invalid URL")
    HTTP_5XX = "http_5xx", _("HTTP 5xx")
    UNKNOWN_ERROR = "unknown_error", _("unknown error")


class ProviderEndpoint(models.Model):
    provider = models.ForeignKey(
        Provider, on_delete=models.CASCADE, related_name="endpoints", verbose_name=_("provider")
    )
    url = models.CharField(_("URL"), max_length=500)
    label = models.CharField(_("label"), max_length=200, blank=True)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    # The last probe result, written in the same transaction as its probe log.
    last_probe_at = models.DateTimeField(_("last probe at"), null=True, blank=True)
    last_probe_ok = models.BooleanField(_("last probe OK"), null=True, blank=True)
    last_probe_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_probe_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_probe_error_type = models.CharField(
        max_length=32, choices=ProbeErrorType.choices, blank=True
    )
    last_probe_error_message = models.TextField(blank=True)
    # When the prober should probe next. Probers claim due rows with SELECT ... FOR UPDATE SKIP
    # LOCKED and push this forward in the same transaction, so several probers on several hosts
    # probe each endpoint once per interval (see monitoring/prober.py). Null: due now.
    next_probe_at = models.DateTimeField(_("next probe at"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("provider endpoint")
        verbose_name_plural = _("provider endpoints")
        ordering = ["provider__name", "label", "id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "url"], name="endpoint_unique_url"),
        ]

    def __str__(self):
        return self.label or self.url


class ProbeLog(models.Model):
    class Source(models.TextChoices):
        SCHEDULED = "scheduled", _("scheduled")
        MANUAL = "manual", _("manual")

    endpoint = models.ForeignKey(
        ProviderEndpoint,
        on_delete=models.CASCADE,
        related_name="probe_logs",
        verbose_name=_("endpoint"),
    )
    source = models.CharField(
        _("source"), max_length=16, choices=Source.choices, default=Source.SCHEDULED
    )
    ok = models.BooleanField(_("OK"))
    status_code = models.PositiveSmallIntegerField(_("status code"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    error_type = models.CharField(
        _("error type"), max_length=32, choices=ProbeErrorType.choices, blank=True
    )
    error_message = models.TextField(_("error message"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("probe log")
        verbose_name_plural = _("probe logs")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                F("endpoint"), F("created_at").desc(), F("id").desc(), name="probe_endpoint_time"
            ),
        ]

    def __str__(self):
        return f"{self.endpoint_id} {self.created_at:%Y-%m-%d %H:%M:%S} {'OK' if self.ok else 'FAIL'}"


def normalized_endpoint(field: str = "endpoint"):
    """Endpoint as filters compare it: lower case, trailing slashes dropped. The same expression
    backs an index, so keep the two in step."""
    return Lower(Func(F(field), Value("/"), function="rtrim"))


# Rows that finished with a status other than 200 (in-flight rows have none). One definition for
# the "exclude 200" filter and the partial index that serves it.
NON_200 = Q(status_code__lt=200) | Q(status_code__gt=200)

# Endpoints that cost nothing and are hidden unless an endpoint filter asks for them.
NON_BILLING_ENDPOINTS = ("/v1/messages/count_tokens", "/v1/responses/compact")


# The five token columns of a usage row; "total tokens" is their sum.
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
)


def new_request_id() -> str:
    return uuid.uuid4().hex


class MessageRequest(models.Model):
    """One request through the proxy: the usage log. Expect tens of millions of rows."""

    class DetailsRemoved(models.TextChoices):
        PRUNED = "pruned", _("pruned by the retention")
        DELETED = "deleted", _("deleted in the Django admin")

    request_id = models.CharField(
        _("request ID"),
        max_length=64,
        unique=True,
        default=new_request_id,
        help_text=_("The proxy's id for the request; ingestion is idempotent on it."),
    )
    created_at = models.DateTimeField(_("time"), default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="message_requests",
        verbose_name=_("user"),
        db_index=False,  # led by mr_user_time; a second index would only slow writes
    )
    key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="message_requests",
        verbose_name=_("key"),
        db_index=False,  # led by mr_key_time
    )
    # The final provider; empty when the proxy blocked the request itself.
    provider = models.ForeignKey(
        Provider,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="message_requests",
        verbose_name=_("provider"),
        db_index=False,  # led by mr_provider_time
    )
    model = models.CharField(_("model"), max_length=200, blank=True)
    original_model = models.CharField(_("original model"), max_length=200, blank=True)
    endpoint = models.CharField(_("endpoint"), max_length=500, blank=True)
    status_code = models.PositiveSmallIntegerField(
        _("status code"), null=True, blank=True, help_text=_("Empty while in flight.")
    )
    input_tokens = models.BigIntegerField(_("input tokens"), null=True, blank=True)
    output_tokens = models.BigIntegerField(_("output tokens"), null=True, blank=True)
    cache_creation_5m_input_tokens = models.BigIntegerField(
        _("cache write 5m"), null=True, blank=True
    )
    cache_creation_1h_input_tokens = models.BigIntegerField(
        _("cache write 1h"), null=True, blank=True
    )
    cache_read_input_tokens = models.BigIntegerField(_("cache read"), null=True, blank=True)
    cost_usd = models.DecimalField(
        _("cost (USD)"), max_digits=21, decimal_places=15, null=True, blank=True
    )
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    session_id = models.CharField(_("session ID"), max_length=200, null=True, blank=True)
    request_sequence = models.PositiveIntegerField(
        _("request sequence"),
        null=True,
        blank=True,
        help_text=_("1-based number of the request inside its session."),
    )
    provider_chain = models.JSONField(_("provider chain"), default=list, blank=True)
    # Stored, indexed, and always written by retry_count_from_chain(): see monitoring/retries.py.
    retry_count = models.PositiveSmallIntegerField(_("retry count"), default=0, editable=False)
    user_agent = models.CharField(_("user agent"), max_length=500, blank=True)
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    blocked_by = models.CharField(_("blocked by"), max_length=100, blank=True)
    # Why the request details are gone, recorded when they go (in the statement that deletes
    # them): an export's 404 then states the fact instead of guessing it from the row's age,
    # and a retried ingest does not bring back what the retention removed.
    # db_default: rows also arrive by COPY (seed_demo), which names its columns.
    details_removed = models.CharField(
        _("details removed"), max_length=8, choices=DetailsRemoved.choices, blank=True,
        editable=False, default="", db_default="",
    )
    details_removed_at = models.DateTimeField(
        _("details removed at"), null=True, blank=True, editable=False
    )

    class Meta:
        db_table = "message_request"
        verbose_name = _("usage log")
        verbose_name_plural = _("usage logs")
        ordering = ["-created_at", "-id"]
        # Every filter of the usage-log page leads with its own column, then time, so "filter X,
        # newest first" is an index range scan; the first is the export's order.
        indexes = [
            models.Index(F("created_at").desc(), F("id").desc(), name="mr_time"),
            models.Index(F("user"), F("created_at").desc(), F("id").desc(), name="mr_user_time"),
            models.Index(F("key"), F("created_at").desc(), F("id").desc(), name="mr_key_time"),
            models.Index(
                F("provider"), F("created_at").desc(), F("id").desc(), name="mr_provider_time"
            ),
            models.Index(F("session_id"), F("request_sequence"), name="mr_session_seq"),
            models.Index(F("model"), F("created_at").desc(), name="mr_model_time"),
            models.Index(F("status_code"), F("created_at").desc(), name="mr_status_time"),
            models.Index(normalized_endpoint(), F("created_at").desc(), name="mr_endpoint_time"),
            # Rows with retries are few: a partial index keeps min_retry_count cheap.
            models.Index(
                F("retry_count"),
                F("created_at").desc(),
                name="mr_retry_time",
                condition=Q(retry_count__gt=0),
            ),
            # "Exclude 200" keeps the errors, a small share of traffic.
            models.Index(
                F("created_at").desc(),
                F("id").desc(),
                name="mr_non200_time",
                condition=NON_200,
            ),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model} {self.status_code or '-'}"

    def save(self, *args, **kwargs):
        self.retry_count = retry_count_from_chain(self.provider_chain)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "provider_chain" in update_fields:
            kwargs["update_fields"] = {*update_fields, "retry_count"}
        super().save(*args, **kwargs)

    @property
    def total_tokens(self) -> int | None:
        parts = [getattr(self, name) for name in TOKEN_FIELDS]
        if all(p is None for p in parts):
            return None
        return sum(p or 0 for p in parts)


class RequestDetail(models.Model):
    """What was sent for one usage row, masked before it is stored (see the ingest path)."""

    class BodyFormat(models.TextChoices):
        JSON = "json", "JSON"
        TEXT = "text", _("text")
        BASE64 = "base64", "base64"

    request = models.OneToOneField(
        MessageRequest,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="detail",
        verbose_name=_("request"),
    )
    method = models.CharField(_("method"), max_length=16, blank=True)
    client_url = models.TextField(_("client URL"), blank=True)
    upstream_url = models.TextField(_("upstream URL"), blank=True)
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    # JSON bodies are kept as parsed JSON; anything else as text, or base64 when not UTF-8.
    body = models.JSONField(_("body"), null=True, blank=True)
    body_text = models.TextField(_("body (raw)"), blank=True)
    body_format = models.CharField(
        _("body format"), max_length=8, choices=BodyFormat.choices, default=BodyFormat.JSON
    )
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    meta = models.JSONField(_("meta"), default=dict, blank=True)
    special_settings = models.JSONField(_("special settings"), default=dict, blank=True)
    created_at = models.DateTimeField(_("stored at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("request detail")
        verbose_name_plural = _("request details")

    def __str__(self):
        return f"detail of {self.request_id}"

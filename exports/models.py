from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ExportAudit(models.Model):
    """One record per export attempt, written by exports.audit and never edited by people."""

    class Kind(models.TextChoices):
        USAGE_CSV = "usage_csv", _("usage logs (CSV)")
        DATABASE_BACKUP = "database_backup", _("database backup")
        DATABASE_RESTORE = "database_restore", _("database restore")
        SESSION_REQUEST = "session_request", _("session request (JSON)")
        PROBE_LOGS = "probe_logs", _("probe logs (text)")

    class Channel(models.TextChoices):
        WEB = "web", _("dashboard")
        ADMIN = "admin", _("Django admin")
        COMMAND = "command", _("management command")

    class Outcome(models.TextChoices):
        RUNNING = "running", _("running")
        OK = "ok", _("ok")
        CANCELLED = "cancelled", _("cancelled")
        FAILED = "failed", _("failed")
        DENIED = "denied", _("denied")

    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    channel = models.CharField(_("channel"), max_length=16, choices=Channel.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("user"),
    )
    # Who, in words that survive the user's deletion: a username, "anonymous", or the OS user
    # that ran a command.
    actor = models.CharField(_("actor"), max_length=200)
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    filters = models.JSONField(_("filters"), default=dict, blank=True)
    rows = models.BigIntegerField(_("rows"), null=True, blank=True)
    bytes = models.BigIntegerField(_("bytes"), default=0)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome.choices, default=Outcome.RUNNING
    )
    detail = models.TextField(_("detail"), blank=True)
    started_at = models.DateTimeField(_("started at"), default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("export audit record")
        verbose_name_plural = _("export audit records")
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["kind", "-started_at"], name="audit_kind_time")]

    def __str__(self):
        return f"{self.get_kind_display()} by {self.actor} at {self.started_at:%Y-%m-%d %H:%M:%S}"

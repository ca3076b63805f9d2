"""Audit records of exports: every attempt, by every channel, ends in one ExportAudit row."""

import getpass
import logging

from django.utils import timezone

from .models import ExportAudit

log = logging.getLogger("exports.audit")

Kind = ExportAudit.Kind
Channel = ExportAudit.Channel
Outcome = ExportAudit.Outcome


def _client_ip(request) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client says unless a trusted proxy
    # rewrote it, and an audit trail must not be forgeable.
    return request.META.get("REMOTE_ADDR") or None if request is not None else None


def _actor(user) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    if user is None:
        try:
            return f"os:{getpass.getuser()}"
        except Exception:  # no login name in some containers
            return "os:unknown"
    return "anonymous"


def start_audit(
    *, kind: str, channel: str, user=None, request=None, filters: dict | None = None
) -> ExportAudit:
    """Open a record (outcome "running") before the first byte is produced. `user` None means
    the operating-system user running a management command."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    return ExportAudit.objects.create(
        kind=kind,
        channel=channel,
        user=user if authenticated else None,
        actor=_actor(user),
        client_ip=_client_ip(request),
        filters=filters or {},
    )


def finish_audit(
    audit: ExportAudit, *, outcome: str, rows: int | None = None, bytes: int = 0, detail: str = ""
) -> None:
    audit.outcome = outcome
    audit.rows = rows
    audit.bytes = bytes
    audit.detail = "; ".join(p for p in (audit.detail, detail) if p)[:2000]
    audit.finished_at = timezone.now()
    audit.save(update_fields=["outcome", "rows", "bytes", "detail", "finished_at"])
    log.info(
        "export_finished kind=%s channel=%s actor=%s outcome=%s rows=%s bytes=%s",
        audit.kind, audit.channel, audit.actor, outcome, rows, bytes,
    )


def record_denied(*, kind: str, channel: str, user=None, request=None, detail: str = "") -> None:
    audit = start_audit(kind=kind, channel=channel, user=user, request=request)
    finish_audit(audit, outcome=Outcome.DENIED, detail=detail)

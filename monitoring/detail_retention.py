"""Retention of stored request details: SESSION_DETAILS_RETENTION_DAYS, counted from the
request's time (a detail's created_at is its usage row's). The usage rows stay."""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .models import RequestDetail


def retention_cutoff(days: int | None = None, now: datetime | None = None) -> datetime:
    days = settings.SESSION_DETAILS_RETENTION_DAYS if days is None else days
    return (now or timezone.now()) - timedelta(days=days)


def prune_details(*, cutoff: datetime, batch_size: int, on_batch=None) -> int:
    """Delete details stored before `cutoff`, `batch_size` per statement, each statement its
    own transaction: locks stay short and a long prune can be stopped and resumed. Served by
    the index on created_at."""
    deleted = 0
    while True:
        old = RequestDetail.objects.filter(created_at__lt=cutoff).order_by()
        batch = old.values("pk")[:batch_size]
        # A fast delete (no cascades, no signals): one DELETE ... WHERE pk IN (SELECT ... LIMIT n).
        count, _ = RequestDetail.objects.filter(pk__in=batch).delete()
        deleted += count
        if on_batch is not None and count:
            on_batch(deleted)
        if count < batch_size:
            return deleted

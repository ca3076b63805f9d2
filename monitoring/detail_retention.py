"""Retention of stored request details: SESSION_DETAILS_RETENTION_DAYS, counted from the
request's time (a detail's created_at is its usage row's). The usage rows stay."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import MessageRequest, RequestDetail


def retention_cutoff(days: int | None = None, now: datetime | None = None) -> datetime:
    days = settings.SESSION_DETAILS_RETENTION_DAYS if days is None else days
    return (now or timezone.now()) - timedelta(days=days)


def prune_details(*, cutoff: datetime, batch_size: int, on_batch=None) -> int:
    """Delete details stored before `cutoff`, `batch_size` per statement, each statement its
    own transaction: locks stay short and a long prune can be stopped and resumed. Served by
    the index on created_at.

    The statement that deletes a batch also marks its usage rows details_removed=pruned, so
    a row can never be left without its details and without the reason."""
    quote = connection.ops.quote_name
    details, usage = quote(RequestDetail._meta.db_table), quote(MessageRequest._meta.db_table)
    # SKIP LOCKED: two prunes at once take different rows instead of queueing.
    sql = (
        f"WITH gone AS (DELETE FROM {details} WHERE request_id IN ("
        f"SELECT request_id FROM {details} WHERE created_at < %s LIMIT %s FOR UPDATE SKIP LOCKED"
        f") RETURNING request_id) "
        f"UPDATE {usage} SET details_removed = %s, details_removed_at = %s "
        f"WHERE id IN (SELECT request_id FROM gone)"
    )
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                sql, [cutoff, batch_size, MessageRequest.DetailsRemoved.PRUNED, timezone.now()]
            )
            count = cursor.rowcount
        deleted += count
        if on_batch is not None and count:
            on_batch(deleted)
        if count < batch_size:
            return deleted


def mark_details_deleted(request_ids) -> None:
    """Record on the usage rows that their details were deleted by hand (the Django admin)."""
    MessageRequest.objects.filter(pk__in=list(request_ids)).update(
        details_removed=MessageRequest.DetailsRemoved.DELETED, details_removed_at=timezone.now()
    )

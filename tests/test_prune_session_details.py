from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import MessageRequest, RequestDetail

from .factories import MessageRequestFactory, RequestDetailFactory


def detail_aged(user, days: float):
    at = timezone.now() - timedelta(days=days)
    return RequestDetailFactory(request=MessageRequestFactory(user=user, created_at=at), created_at=at)


def test_details_older_than_the_retention_are_deleted_and_usage_rows_kept(alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    old = [detail_aged(alice, d) for d in (7.01, 8, 30)]
    young = [detail_aged(alice, d) for d in (0, 6.9)]
    out = StringIO()
    call_command("prune_session_details", stdout=out)
    assert set(RequestDetail.objects.values_list("pk", flat=True)) == {d.pk for d in young}
    assert MessageRequest.objects.count() == 5
    assert "Deleted 3 request details" in out.getvalue()
    assert "usage rows kept" in out.getvalue()
    assert {d.pk for d in old}.isdisjoint(RequestDetail.objects.values_list("pk", flat=True))


def test_details_are_deleted_in_batches_each_marking_its_rows_in_the_same_statement(alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 1
    for _ in range(5):
        detail_aged(alice, 3)
    with CaptureQueriesContext(connection) as queries:
        call_command("prune_session_details", "--batch-size", "2", stdout=StringIO())
    deletes = [q["sql"] for q in queries.captured_queries if "DELETE" in q["sql"]]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert all("LIMIT 2" in sql and "UPDATE" in sql for sql in deletes)
    assert not RequestDetail.objects.exists()
    assert MessageRequest.objects.filter(details_removed="pruned").count() == 5


def test_a_pruned_request_exports_as_pruned(admin_client, alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    detail = detail_aged(alice, 10)
    row = detail.request
    call_command("prune_session_details", stdout=StringIO())
    response = admin_client.get(f"/exports/sessions/{row.session_id}/requests/{row.request_sequence}.json")
    assert response.status_code == 404
    assert response.json()["reason"] == "pruned"


def test_pruning_records_on_each_usage_row_that_its_details_were_pruned(alice, settings):
    settings.SESSION_DETAILS_RETENTION_DAYS = 7
    old, young = detail_aged(alice, 10).request, detail_aged(alice, 1).request
    never = MessageRequestFactory(user=alice, created_at=timezone.now() - timedelta(days=10))
    before = timezone.now()
    call_command("prune_session_details", stdout=StringIO())
    for row in (old, young, never):
        row.refresh_from_db()
    assert old.details_removed == "pruned" and before <= old.details_removed_at <= timezone.now()
    assert (young.details_removed, young.details_removed_at) == ("", None)
    assert (never.details_removed, never.details_removed_at) == ("", None)


def test_a_bad_batch_size_is_refused(db):
    with pytest.raises(CommandError, match="--batch-size"):
        call_command("prune_session_details", "--batch-size", "0")

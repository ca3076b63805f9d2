"""manage.py seed_demo: the demo data set the run command starts with, checked for the variety the
dashboard and the exports are meant to be tried on."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F, Q

from accounts.models import ApiKey, User
from monitoring.models import MessageRequest, ProbeLog, ProviderEndpoint, RequestDetail
from monitoring.retries import retry_count_from_chain


@pytest.fixture
def seeded(db):
    out = io.StringIO()
    call_command("seed_demo", "--requests", "3000", "--days", "3", "--seed", "7", stdout=out)
    return out.getvalue()


def test_seeding_prints_the_generated_password_once_and_it_signs_in(seeded, client):
    password = seeded.split("the password: ")[1].split()[0]
    for name in ("admin", "alice", "bob"):
        assert client.login(username=name, password=password), name
    assert User.objects.get(username="admin").is_admin
    assert not User.objects.get(username="alice").is_admin


def test_the_usage_rows_cover_what_the_exports_must_handle(seeded):
    rows = MessageRequest.objects.all()
    assert rows.count() == 3000
    statuses = set(rows.values_list("status_code", flat=True).distinct())
    assert {200, 400, 401, 429, 500, 502, 503, None} <= statuses
    assert rows.filter(provider=None).exclude(blocked_by="").exists()  # blocked by the proxy
    assert rows.exclude(model=F("original_model")).exists()  # model redirects
    assert rows.filter(cache_read_input_tokens__gt=0).exists()
    assert rows.filter(retry_count__gte=1).exists()
    assert rows.filter(request_sequence__gt=1).values("session_id").distinct().count() > 10
    assert rows.filter(Q(session_id__startswith="=") | Q(key__name__startswith="=")).exists()
    for row in rows.exclude(provider_chain=None)[:200]:
        assert row.retry_count == retry_count_from_chain(row.provider_chain)
    assert ProbeLog.objects.filter(ok=False).exists() and ProbeLog.objects.filter(ok=True).exists()
    assert ProviderEndpoint.objects.exists()
    assert ApiKey.objects.filter(user__username="alice").count() >= 2


def test_stored_details_are_masked_like_ingested_ones(seeded):
    details = RequestDetail.objects.all()
    assert details.exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM monitoring_requestdetail t")
        raw = "\n".join(row[0] for row in cursor.fetchall())
    assert "Bearer sk-" in raw and "******" in raw  # masked, not dropped
    assert "api_key=xyz123456789" not in raw and "key=secret-" not in raw
    assert "sid=abc" not in raw
    body = json.dumps(details.first().body)
    assert "[REDACTED]" in body  # message content, STORE_SESSION_MESSAGES is off


def test_seeding_twice_is_refused_and_if_empty_does_nothing(seeded):
    with pytest.raises(CommandError, match="seed an empty database"):
        call_command("seed_demo", "--requests", "1", stdout=io.StringIO())
    out = io.StringIO()
    call_command("seed_demo", "--requests", "1", "--if-empty", stdout=out)
    assert "not added" in out.getvalue()
    assert MessageRequest.objects.count() == 3000


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--requests", "-1"], ["--days", "0"]])
def test_bad_options_are_a_command_error(args):
    with pytest.raises(CommandError):
        call_command("seed_demo", *args, stdout=io.StringIO())

#!/usr/bin/env python
"""Which index serves each usage-log filter? Runs EXPLAIN (ANALYZE) for the dashboard's page query
(filter, newest first, LIMIT page size) and its COUNT, on the database DATABASE_URL names (seed it
first: manage.py seed_demo --requests 1000000).

    DATABASE_URL=... .venv/bin/python bench/explain_filters.py [--analyze]
"""

import os
import re
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import ApiKey, User  # noqa: E402
from exports.filters import filter_usage  # noqa: E402
from monitoring.models import MessageRequest, Provider  # noqa: E402


def plan(queryset, analyze: bool) -> tuple[list[str], str]:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        options = "ANALYZE, BUFFERS" if analyze else "COSTS OFF"
        cursor.execute(f"EXPLAIN ({options}) {sql}", params)
        lines = [row[0] for row in cursor.fetchall()]
    found = re.findall(
        r"Index(?: Only)? Scan(?: Backward)? using (\w+)|Bitmap Index Scan on (\w+)", "\n".join(lines)
    )
    indexes = sorted({a or b for a, b in found})
    timing = next((line for line in lines if line.startswith("Execution Time")), "")
    return indexes, timing


def main() -> None:
    analyze = "--analyze" in sys.argv
    total = MessageRequest.objects.count()
    alice = User.objects.get(username="alice")
    key = ApiKey.objects.filter(user=alice).first()
    provider = Provider.objects.order_by("pk").first()
    session = MessageRequest.objects.exclude(session_id=None).values_list("session_id", flat=True).first()
    now = timezone.now()
    cases = {
        "none": {},
        "user_id": {"user_id": alice.pk},
        "key_id": {"key_id": key.pk},
        "provider_id": {"provider_id": provider.pk},
        "session_id": {"session_id": session},
        "start_time (last day)": {"start_time": now - timedelta(days=1)},
        "end_time (before 29 days ago)": {"end_time": now - timedelta(days=29)},
        "status_code=503": {"status_code": 503},
        "exclude_status_200": {"exclude_status_200": True},
        "model": {"model": "claude-3-5-haiku-20241022"},
        "endpoint=/v1/responses": {"endpoint": "/v1/responses"},
        "min_retry_count=2": {"min_retry_count": 2},
        "user_id + last 7 days": {"user_id": alice.pk, "start_time": now - timedelta(days=7)},
    }
    print(f"{total:,} usage rows; page query = filter, ORDER BY created_at DESC, id DESC LIMIT 50\n")
    print(f"{'filter':32} {'matching':>10}  {'page query':44} {'count query'}")
    for name, filters in cases.items():
        rows = filter_usage(filters)
        matching = rows.count()
        page_idx, page_time = plan(rows[:50], analyze)
        count_idx, count_time = plan(rows.order_by().values("pk"), analyze)
        page = ",".join(page_idx) or "NO INDEX (seq scan)"
        count = ",".join(count_idx) or "NO INDEX (seq scan)"
        if analyze:
            page += f" [{page_time.split(':')[1].strip()}]"
            count += f" [{count_time.split(':')[1].strip()}]"
        print(f"{name:32} {matching:>10,}  {page:44} {count}")


if __name__ == "__main__":
    main()

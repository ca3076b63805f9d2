#!/usr/bin/env python
"""Batches of usage rows through POST /api/ingest/requests, served by gunicorn on loopback.

    DATABASE_URL=<a seeded database> .venv/bin/python bench/ingest_batch.py [--rows 1000] [--runs 5]

Per run, one fresh batch of --rows rows (new request ids) is posted twice: first stored, then
the same batch again (a proxy's retry: every row a duplicate). Two batch kinds: rows only, and
rows each carrying request details (headers, a ~2 KB JSON body, URLs, special settings) that are
masked before storage. Reports wall time per POST (client side, so JSON encoding of the request
is excluded, HTTP and the server's JSON parsing, validation, masking and the INSERTs included),
then the median. Finally, in-process without HTTP, the split between validation and the INSERTs.
The bench rows are deleted at the end.
"""

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("SECRET_KEY", "bench-secret")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from accounts.models import ApiKey  # noqa: E402
from monitoring.ingest import insert_details, insert_rows, validate_rows  # noqa: E402
from monitoring.models import MessageRequest, Provider  # noqa: E402

PREFIX = "bench-ingest-"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch(tag: str, rows: int, keys: list, provider_id, with_details: bool) -> list[dict]:
    batch = []
    for n in range(rows):
        key = keys[n % len(keys)]
        row = {
            "request_id": f"{PREFIX}{tag}-{n}",
            "created_at": "2026-12-01T10:30:00.000Z",
            "model": "claude-sonnet-4-5-20250929",
            "original_model": "claude-3-5-sonnet-20241022",
            "endpoint": "/v1/messages",
            "status_code": 200,
            "input_tokens": 1500, "output_tokens": 3200, "cache_creation_5m_input_tokens": 0,
            "cache_creation_1h_input_tokens": 0, "cache_read_input_tokens": 1200,
            "cost_usd": "0.015600000000000",
            "duration_ms": 2450,
            "session_id": f"{PREFIX}{tag}-s{n // 8}",
            "request_sequence": n % 8 + 1,
            "provider_id": provider_id,
            "provider_chain": [
                {"id": provider_id, "reason": "initial_selection"},
                {"id": provider_id, "reason": "retry_failed", "statusCode": 502},
                {"id": provider_id, "reason": "retry_success", "statusCode": 200},
            ],
            "user_agent": "claude-cli/2.0.14 (external, cli)",
            "client_ip": "203.0.113.7",
        }
        # Half name their key by id, half by prefix.
        row["key_id" if n % 2 else "key_prefix"] = key.pk if n % 2 else key.prefix
        if with_details:
            row["detail"] = {
                "method": "POST",
                "client_url": "https://hub.example/v1/messages?beta=true&key=sk-0123456789",
                "upstream_url": "https://api.anthropic.example/v1/messages",
                "headers": {
                    "authorization": f"Bearer sk-{secrets.token_hex(16)}",
                    "x-api-key": f"sk-ant-{secrets.token_hex(20)}",
                    "content-type": "application/json",
                    "anthropic-version": "2023-06-01",
                    "user-agent": "claude-cli/2.0.14",
                },
                "body": {
                    "model": "claude-sonnet-4-5-20250929", "max_tokens": 4096, "stream": True,
                    "system": [{"type": "text", "text": "You are terse. " * 20}],
                    "messages": [
                        {"role": "user", "content": "Summarise this, please. " * 40},
                        {"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
                    ],
                },
                "special_settings": {
                    "headerModifications": [{"action": "remove", "name": "x-stainless-os"}],
                    "bodyModifications": [{"path": "metadata.user_id", "action": "set", "value": "u"}],
                },
            }
        batch.append(row)
    return batch


def post(port: int, token: str, body: bytes) -> tuple[float, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", "/api/ingest/requests", body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "Host": "localhost",
    })
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}: {data[:500]!r}")
    return elapsed, json.loads(data)


def start_server(token: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "INGEST_TOKEN": token, "DEBUG": "false", "ALLOWED_HOSTS": "localhost,127.0.0.1",
           "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "hub.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "2", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start")


def in_process_split(rows: int, keys, provider_id) -> tuple[float, float]:
    batch = make_batch("inproc", rows, keys, provider_id, with_details=True)
    started = time.perf_counter()
    cleaned = validate_rows(batch, max_rows=len(batch))
    validated = time.perf_counter()
    with transaction.atomic():
        inserted = insert_rows(cleaned)
        insert_details(cleaned, inserted)
    return validated - started, time.perf_counter() - validated


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    keys = list(ApiKey.objects.order_by("pk")[:4])
    provider = Provider.objects.order_by("pk").first()
    if not keys:
        raise SystemExit("No API keys: seed the database first (manage.py seed_demo).")
    MessageRequest.objects.filter(request_id__startswith=PREFIX).delete()
    token = secrets.token_urlsafe(32)
    server, port = start_server(token)
    results = {}
    try:
        post(port, token, json.dumps(make_batch("warmup", 10, keys, provider and provider.pk, True)).encode())
        for kind, tag, with_details in (("rows only", "plain", False), ("rows with details", "detail", True)):
            first, retry = [], []
            for run in range(args.runs):
                batch = make_batch(f"{tag}{run}", args.rows, keys, provider and provider.pk, with_details)
                body = json.dumps(batch).encode()
                t1, r1 = post(port, token, body)
                t2, r2 = post(port, token, body)
                assert r1["inserted"] == args.rows and r2["inserted"] == 0, (r1, r2)
                first.append(t1)
                retry.append(t2)
                print(f"{kind:18} run {run + 1}: {len(body) / 1e6:5.2f} MB  stored {t1 * 1000:7.1f} ms"
                      f"  retried {t2 * 1000:7.1f} ms  ({r1})")
            results[kind] = (statistics.median(first), statistics.median(retry), len(body))
        split = [in_process_split(args.rows, keys, provider and provider.pk) for _ in range(3)]
    finally:
        server.terminate()
        server.wait(timeout=10)
        MessageRequest.objects.filter(request_id__startswith=PREFIX).delete()
    print()
    print(f"Median of {args.runs} runs, {args.rows} rows per batch, gunicorn on loopback:")
    for kind, (stored, retried, size) in results.items():
        print(f"  {kind:18} {size / 1e6:5.2f} MB body: stored in {stored * 1000:6.1f} ms "
              f"({args.rows / stored:,.0f} rows/s), retry (all duplicates) {retried * 1000:6.1f} ms")
    validate_s = statistics.median(v for v, _ in split)
    insert_s = statistics.median(i for _, i in split)
    print(f"  in process, rows with details: validation + masking {validate_s * 1000:.1f} ms, "
          f"INSERTs {insert_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()

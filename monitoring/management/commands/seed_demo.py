import json
import random
import secrets
import time
import uuid
from datetime import timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from monitoring.masking import mask_detail
from monitoring.models import (
    MessageRequest,
    ProbeErrorType,
    ProbeLog,
    Provider,
    ProviderEndpoint,
    RequestDetail,
)
from monitoring.retries import retry_count_from_chain

# Hostile text on purpose: formula payloads, separators, quotes, newlines, CJK, emoji.
KEYS = {
    "admin": ["admin-key", "ops\nsecond line"],
    "alice": ["production-key", '=HYPERLINK("http://evil.example","click")', "测试密钥 🚀"],
    "bob": ['dev, "quoted" key', "+cmd|' /C calc'!A0", "@SUM(1+1)"],
}
PROVIDERS = [
    ("anthropic-main", "claude", "https://api.anthropic.example"),
    ("anthropic-backup", "claude", "https://backup.anthropic.example"),
    ("＝SUM(1,2) relay", "openai-compatible", "https://relay.example"),
    ("gemini-pool 🌐", "gemini", "https://gemini.example"),
    ("codex, \"east\"", "codex", "https://codex.example"),
]
# (model used, model the client asked for); a differing pair is a redirect.
MODELS = [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4-5-20250929", "claude-3-5-sonnet-20241022"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),
    ("claude-opus-4-1-20250805", "claude-3-opus"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022"),
    ("gpt-5-codex", "gpt-5-codex"),
    ("gemini-2.5-pro", "gemini-2.5-pro"),
    ("-danger-model", "-danger-model"),
]
# $ per million tokens: input, output, cache write, cache read.
PRICES = {
    "claude-sonnet-4-5-20250929": (3, 15, 3.75, 0.3),
    "claude-opus-4-1-20250805": (15, 75, 18.75, 1.5),
    "claude-3-5-haiku-20241022": (0.8, 4, 1, 0.08),
    "gpt-5-codex": (1.25, 10, 1.25, 0.125),
    "gemini-2.5-pro": (1.25, 10, 1.25, 0.31),
    "-danger-model": (1, 1, 1, 1),
}
ENDPOINTS = [
    ("/v1/messages", 70),
    ("/v1/messages/count_tokens", 6),
    ("/v1/chat/completions", 8),
    ("/v1/responses", 8),
    ("/v1/responses/compact", 2),
    ("/V1/Messages/", 3),
    ("/v1beta/models/gemini-2.5-pro:generateContent", 3),
]
STATUSES = [(200, 80), (400, 3), (401, 2), (429, 4), (500, 3), (502, 3), (503, 2), (None, 1)]
ERRORS = {
    400: 'invalid_request_error: "messages" must not be empty, see docs',
    401: "=HYPERLINK(\"http://evil.example\") invalid x-api-key",
    429: "rate_limit_error: 请求过多，请稍后重试 ⏳",
    500: "upstream error\nline two, with a comma",
    502: "Bad gateway: connection reset by peer",
    503: "overloaded_error: Overloaded",
}
USER_AGENTS = ["claude-cli/2.0.14 (external, cli)", "codex_cli_rs/0.46.0", "python-httpx/0.27"]
COLUMNS = [
    "request_id", "created_at", "user_id", "key_id", "provider_id", "model", "original_model",
    "endpoint", "status_code", "input_tokens", "output_tokens", "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens", "cache_read_input_tokens", "cost_usd", "duration_ms",
    "session_id", "request_sequence", "provider_chain", "retry_count", "user_agent", "client_ip",
    "error_message", "blocked_by",
]


def weighted(pairs):
    values, weights = zip(*pairs)
    return values, weights


class Command(BaseCommand):
    help = (
        "Fill the database with a realistic demo data set: users admin, alice and bob, their "
        "API keys, providers, endpoints with probe logs, and N usage rows over the last D days "
        "(redirects, every status code, in-flight and blocked rows, sessions, retries and hedges, "
        "stored request details, hostile text). Rows are written with COPY, so 1,000,000 take "
        "minutes, not hours."
    )

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=20000, help="usage rows (default 20000)")
        parser.add_argument("--days", type=int, default=30, help="spread over the last D days (default 30)")
        parser.add_argument(
            "--password",
            help="password of admin, alice and bob; without it one is generated and printed once",
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="do nothing when the database already has users"
        )
        parser.add_argument("--seed", type=int, help="random seed, for a reproducible data set")

    def handle(self, *args, requests, days, password, if_empty, seed, **options):
        if requests < 0:
            raise CommandError("--requests must be 0 or more.")
        if days < 1:
            raise CommandError("--days must be 1 or more.")
        if if_empty and User.all_objects.exists():
            self.stdout.write("The database already has users: demo data not added (--if-empty).")
            return
        if User.all_objects.filter(username__in=KEYS).exists():
            raise CommandError("Users admin, alice or bob exist already: seed an empty database.")
        rng = random.Random(seed)
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        started = time.monotonic()
        with transaction.atomic():
            users, keys = self.make_users(password)
            providers, endpoints = self.make_providers()
            self.make_probe_logs(endpoints, rng)
        written = self.make_usage(requests, days, users, keys, providers, rng)
        self.stdout.write(
            f"Seeded {written:,} usage rows over {days} days in {time.monotonic() - started:.1f} s."
        )
        if generated:
            self.stdout.write(
                f"Users admin (admin), alice and bob (users) have the password: {password}\n"
                "It is shown only this once."
            )

    def make_users(self, password):
        users, keys = {}, {}
        for name in KEYS:
            user = User(username=name, role=User.Role.ADMIN if name == "admin" else User.Role.USER)
            user.set_password(password)
            user.save()
            users[name] = user
            keys[name] = [ApiKey.objects.issue(user=user, name=key_name)[0] for key_name in KEYS[name]]
        return users, keys

    def make_providers(self):
        providers, endpoints = [], []
        for name, kind, url in PROVIDERS:
            provider = Provider.objects.create(name=name, provider_type=kind, url=url)
            providers.append(provider)
            for label, path in (("primary", "/v1/messages"), ("fallback", "/v1/messages?region=2")):
                endpoints.append(
                    ProviderEndpoint.objects.create(
                        provider=provider, url=url + path, label=f"{name} {label}"
                    )
                )
        return providers, endpoints

    def make_probe_logs(self, endpoints, rng):
        """A day of probes at one a minute; one endpoint flaps, one is down for an hour."""
        now = timezone.now()
        logs = []
        for index, endpoint in enumerate(endpoints):
            for minute in range(24 * 60, 0, -1):
                at = now - timedelta(minutes=minute, seconds=rng.random() * 5)
                down = (index == 1 and rng.random() < 0.15) or (index == 2 and 300 < minute < 360)
                if down:
                    kind = rng.choice([ProbeErrorType.TIMEOUT, ProbeErrorType.HTTP_5XX, ProbeErrorType.NETWORK_ERROR])
                    status = 502 if kind == ProbeErrorType.HTTP_5XX else None
                    message = {
                        ProbeErrorType.TIMEOUT: "Connection timeout",
                        ProbeErrorType.HTTP_5XX: "HTTP 502 Bad Gateway",
                        ProbeErrorType.NETWORK_ERROR: "connect ECONNREFUSED\nretrying",
                    }[kind]
                    latency = 5000 if kind == ProbeErrorType.TIMEOUT else rng.randint(20, 400)
                    logs.append(ProbeLog(endpoint=endpoint, ok=False, status_code=status,
                                         latency_ms=latency, error_type=kind, error_message=message,
                                         created_at=at))
                else:
                    logs.append(ProbeLog(endpoint=endpoint, ok=True, status_code=None,
                                         latency_ms=int(rng.lognormvariate(3.8, 0.5)), created_at=at))
            last = logs[-1]
            endpoint.last_probe_at = last.created_at
            endpoint.last_probe_ok = last.ok
            endpoint.last_probe_status_code = last.status_code
            endpoint.last_probe_latency_ms = last.latency_ms
            endpoint.last_probe_error_type = last.error_type
            endpoint.last_probe_error_message = last.error_message
            endpoint.save()
        ProbeLog.objects.bulk_create(logs, batch_size=5000)

    def chains(self, provider_ids):
        """Provider-chain templates (JSON text, retry count) per final provider."""
        templates = {}
        for pid in provider_ids:
            other = next(p for p in provider_ids if p != pid)
            sel = {"id": pid, "name": f"p{pid}", "reason": "initial_selection"}
            options = [
                ([sel, {"id": pid, "reason": "request_success", "statusCode": 200}], 85),
                ([{**sel, "reason": "session_reuse"}, {"id": pid, "reason": "request_success", "statusCode": 200}], 6),
                ([{**sel, "id": other}, {"id": other, "reason": "retry_failed", "statusCode": 502},
                  {"id": pid, "reason": "retry_success", "statusCode": 200}], 4),
                ([{**sel, "id": other}, {"id": other, "reason": "system_error", "errorMessage": "ECONNRESET"},
                  {"id": other, "reason": "retry_failed", "statusCode": 503},
                  {"id": pid, "reason": "retry_success", "statusCode": 200}], 2),
                ([{**sel, "id": other}, {"id": other, "reason": "hedge_triggered"},
                  {"id": pid, "reason": "hedge_launched"}, {"id": pid, "reason": "hedge_winner", "statusCode": 200},
                  {"id": other, "reason": "hedge_loser_cancelled"}], 2),
                ([{**sel, "id": other}, {"id": other, "reason": "concurrent_limit_failed"},
                  {"id": pid, "reason": "request_success", "statusCode": 200}], 1),
            ]
            templates[pid] = [
                (json.dumps(chain), retry_count_from_chain(chain), weight) for chain, weight in options
            ]
        return templates

    def make_usage(self, count, days, users, keys, providers, rng):
        if count == 0:
            return 0
        now = timezone.now()
        span = days * 86400
        provider_ids = [p.pk for p in providers]
        chains = self.chains(provider_ids)
        endpoints, endpoint_w = weighted(ENDPOINTS)
        statuses, status_w = weighted(STATUSES)
        owners = [(users[name], key) for name in KEYS for key in keys[name]]
        owner_w = [1 if u.username == "admin" else 3 for u, _ in owners]
        details = []
        written = 0
        clock = 0.0
        mean_gap = span / max(count / 3.6, 1)  # 3.6 requests per session on average
        table = MessageRequest._meta.db_table
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                while written < count:
                    # One session: 1-8 sequential requests by one key, seconds to minutes apart.
                    user, key = rng.choices(owners, owner_w)[0]
                    session = f"sess_{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
                    if rng.random() < 0.002:
                        session = "=1+1 " + session  # a hostile session id
                    # Sessions start in time order, as a proxy writes them: the table's physical
                    # order follows created_at, like a real usage log's.
                    clock += rng.expovariate(1 / mean_gap)
                    at = now - timedelta(seconds=max(span - clock, 0))
                    model, original = rng.choice(MODELS)
                    provider = rng.choice(provider_ids)
                    length = min(rng.choice((1, 1, 2, 3, 4, 6, 8)), count - written)
                    for sequence in range(1, length + 1):
                        row, detail = self.usage_row(
                            rng, user, key, provider, model, original, session, sequence, at,
                            chains, endpoints, endpoint_w, statuses, status_w,
                        )
                        copy.write_row(row)
                        if detail is not None:
                            details.append(detail)
                        at = min(at + timedelta(seconds=rng.uniform(3, 90)), now)
                        written += 1
        self.make_details(details)
        # Fresh statistics: until autovacuum gets to the new rows the planner has none and picks
        # sequential scans for the filtered counts of the usage-log page.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
        return written

    def usage_row(self, rng, user, key, provider, model, original, session, sequence, at,
                  chains, endpoints, endpoint_w, statuses, status_w):
        status = rng.choices(statuses, status_w)[0]
        endpoint = rng.choices(endpoints, endpoint_w)[0]
        blocked = ""
        chain, retries = "[]", 0
        if status in (400, 429) and rng.random() < 0.3:
            blocked = rng.choice(["sensitive_word", "rate_limit", "warmup"])
            provider = None
        else:
            chain, retries, _ = rng.choices(chains[provider], [w for *_, w in chains[provider]])[0]
        in_flight = status is None
        tokens = [None] * 5
        cost = None
        if not in_flight and not blocked:
            inp = int(rng.lognormvariate(7, 1.2))
            out = int(rng.lognormvariate(6, 1.1)) if status == 200 else 0
            c5 = int(rng.lognormvariate(7, 1)) if rng.random() < 0.2 else 0
            c1 = int(rng.lognormvariate(7, 1)) if rng.random() < 0.05 else 0
            cr = int(rng.lognormvariate(8, 1)) if rng.random() < 0.4 else 0
            tokens = [inp, out, c5, c1, cr]
            p_in, p_out, p_cw, p_cr = PRICES[model]
            cost = (Decimal(inp * p_in + out * p_out + (c5 + c1 * 1.6) * p_cw + cr * p_cr)
                    / Decimal(1_000_000)).quantize(Decimal("1e-15"))
        elif blocked:
            tokens = [0, 0, 0, 0, 0]
            cost = Decimal(0)
        request_id = uuid.UUID(int=rng.getrandbits(128)).hex
        row = (
            request_id, at, user.pk, key.pk, provider, model, original, endpoint, status,
            *tokens, cost, None if in_flight else int(rng.lognormvariate(7.5, 0.8)), session,
            sequence, chain, retries, rng.choice(USER_AGENTS),
            f"203.0.113.{rng.randint(1, 254)}", ERRORS.get(status, "") if not blocked else f"blocked: {blocked}",
            blocked,
        )
        detail = None
        if rng.random() < 0.03 or session.startswith("="):
            detail = (request_id, at, model, provider, endpoint, status, key)
        return row, detail

    def make_details(self, details):
        """Stored request details, masked exactly as the ingest path masks them."""
        if not details:
            return
        ids = dict(MessageRequest.objects.filter(request_id__in=[d[0] for d in details]).values_list("request_id", "pk"))
        objs = []
        for request_id, at, model, provider, endpoint, status, key in details:
            body = {
                "model": model,
                "max_tokens": 4096,
                "stream": True,
                "system": "You are a helpful assistant. 你好 🚀",
                "messages": [
                    {"role": "user", "content": '=HYPERLINK("http://evil.example") summarise, "please"\nthanks'},
                    {"role": "assistant", "content": [{"type": "text", "text": "Sure."}]},
                ],
            }
            headers = {
                "authorization": f"Bearer sk-{secrets.token_hex(16)}",
                "x-api-key": f"sk-ant-{secrets.token_hex(20)}",
                "content-type": "application/json",
                "anthropic-version": "2023-06-01",
                "user-agent": USER_AGENTS[0],
                "cookie": "sid=abc",
            }
            masked = mask_detail({
                "method": "POST",
                "client_url": f"https://hub.example{endpoint}?beta=true&key=secret-{request_id[:6]}",
                "upstream_url": f"https://api.anthropic.example{endpoint}?api_key=xyz123456789",
                "headers": headers,
                "body": body,
                "response_status": status,
                "meta": {"model": model, "providerId": provider, "timestamp": at.isoformat()},
                "special_settings": {
                    "headerModifications": [{"action": "remove", "name": "x-stainless-os"}],
                    "bodyModifications": [
                        {"path": "metadata.user_id", "action": "set", "value": "user-42"}
                    ],
                },
            })
            objs.append(RequestDetail(request_id=ids[request_id], created_at=at, **masked))
        RequestDetail.objects.bulk_create(objs, batch_size=2000)

"""Ingestion of usage rows (and their request details) sent by a proxy: validate a batch, then
store it in two bulk statements, idempotent on each row's request_id.

The whole batch is validated before anything is written, so a batch is stored entirely or not
at all, and a retried batch (the proxy timed out waiting for our answer) adds nothing twice:
rows are inserted with ON CONFLICT (request_id) DO NOTHING.
"""

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import KEY_PREFIX_LEN, ApiKey, User
from exports.filters import TimestampField

from . import jsonsafe
from .masking import UnstorableBody, mask_detail, mask_usage_row
from .models import TOKEN_FIELDS, MessageRequest, Provider, RequestDetail
from .retries import retry_count_from_chain

# Errors listed in one 400 answer; the rest are counted, not listed.
MAX_REPORTED_ERRORS = 50
# Entries of one provider chain: a real chain has a handful; retry_count (a smallint) is
# computed from it.
MAX_PROVIDER_CHAIN = 1000


class StrictCharField(forms.CharField):
    """A JSON string: a number or an object is an error, not silently str()-ed. Kept exactly
    as sent (no stripping): " lead" and "lead" are different sessions; only "" is empty."""

    def __init__(self, *, strip=False, allow_nul=False, **kwargs):
        super().__init__(strip=strip, **kwargs)
        if allow_nul:  # a raw body, stored as base64 when it holds NUL
            self.validators = [
                v for v in self.validators
                if not isinstance(v, ProhibitNullCharactersValidator)
            ]

    def to_python(self, value):
        if value is not None and not isinstance(value, str):
            raise ValidationError("Enter a string.", code="invalid")
        return super().to_python(value)


class EndpointField(StrictCharField):
    """The endpoint is a path (`/v1/messages`): a query or fragment sent with it is dropped,
    so a `?key=...` never reaches the usage log, its indexes or the CSV, and endpoint filters
    match whatever query the client used."""

    def to_python(self, value):
        value = super().to_python(value)
        return value and value.partition("?")[0].partition("#")[0]


class StrictIntegerField(forms.IntegerField):
    """A JSON integer: a string ("1") or a boolean (true is an int in Python) is one clear
    error, as a number is for a string field."""

    default_error_messages = {
        "invalid": "Enter a whole number (a JSON number, not a string or a boolean).",
    }

    def to_python(self, value):
        if isinstance(value, str | bool):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class JsonObjectField(forms.Field):
    def to_python(self, value):
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError("Enter a JSON object.", code="invalid")
        return value


class JsonListField(forms.Field):
    def __init__(self, *, max_items=None, **kwargs):
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_python(self, value):
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError("Enter a JSON list.", code="invalid")
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(
                "At most %(max)s entries (%(n)s sent).",
                code="max_items",
                params={"max": self.max_items, "n": len(value)},
            )
        return value


class HeadersField(JsonObjectField):
    """{name: value}; a value is a string or a list of strings (repeated headers)."""

    def validate(self, value):
        super().validate(value)
        for name, item in value.items():
            items = item if isinstance(item, list) else [item]
            if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
                raise ValidationError(
                    "Header %(name)s: enter a string or a list of strings.",
                    code="invalid",
                    params={"name": name},
                )


class CostField(forms.DecimalField):
    """Rounded to the column's 15 decimal places (a proxy may price with more), then held to
    its 21 digits."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None or not value.is_finite():
            return value
        # 1e30 quantized to 15 places needs more digits than the decimal context holds
        # (InvalidOperation): refuse what cannot fit the column before rounding.
        whole_digits = self.max_digits - self.decimal_places
        error = ValidationError(
            "Ensure that there are no more than %(max)s digits before the decimal point.",
            code="max_whole_digits",
            params={"max": whole_digits},
        )
        if value and value.adjusted() >= whole_digits:
            raise error
        try:
            return value.quantize(Decimal(10) ** -self.decimal_places, rounding=ROUND_HALF_EVEN)
        except InvalidOperation as exc:
            raise error from exc


class AnyJsonField(forms.Field):
    def to_python(self, value):
        return value


def _model_field(name: str, **overrides) -> forms.Field:
    """The model's own form field, so lengths and ranges stay in step with the columns."""
    return MessageRequest._meta.get_field(name).formfield(**overrides)


def _integer(name: str, model=MessageRequest, *, min_value=0, max_value=None):
    """An integer held to its column's range in this database (a foreign key: the range of the
    key it points at), and to min_value/max_value when they are narrower. A model field's own
    form field has no upper bound (PositiveIntegerField), so 10**12 would reach the INSERT."""
    column = model._meta.get_field(name)
    column = getattr(column, "target_field", None) or column
    low, high = connection.ops.integer_field_range(column.get_internal_type())
    if low is not None:
        min_value = low if min_value is None else max(low, min_value)
    if high is not None:
        max_value = high if max_value is None else min(high, max_value)
    return StrictIntegerField(required=False, min_value=min_value, max_value=max_value)


def _text(name: str, model=MessageRequest, form_class=StrictCharField) -> StrictCharField:
    column = model._meta.get_field(name)
    return form_class(
        required=False, max_length=column.max_length, empty_value=None if column.null else ""
    )


# One usage row. The user is named by user_id, or follows from the key (key_id or key_prefix).
ROW_FIELDS: dict[str, forms.Field] = {
    "request_id": StrictCharField(max_length=64),
    "created_at": TimestampField(required=False),
    "user_id": _integer("user", min_value=1),
    "key_id": _integer("key", min_value=1),
    "key_prefix": StrictCharField(required=False, max_length=KEY_PREFIX_LEN),
    "provider_id": _integer("provider", min_value=1),
    "model": _text("model"),
    "original_model": _text("original_model"),
    "endpoint": _text("endpoint", form_class=EndpointField),
    "status_code": _integer("status_code", max_value=999),
    **{name: _integer(name) for name in TOKEN_FIELDS},
    "cost_usd": _model_field("cost_usd", form_class=CostField, min_value=0, required=False),
    "duration_ms": _integer("duration_ms"),
    "session_id": _text("session_id"),
    "request_sequence": _integer("request_sequence", min_value=1),
    "provider_chain": JsonListField(required=False, max_items=MAX_PROVIDER_CHAIN),
    "user_agent": _text("user_agent"),
    "client_ip": _model_field("client_ip", required=False),
    "error_message": StrictCharField(required=False),
    "blocked_by": _text("blocked_by"),
    "detail": JsonObjectField(required=False),
}

# The optional request details of a row; exactly one way of giving the body.
DETAIL_FIELDS: dict[str, forms.Field] = {
    # An HTTP method is a token (RFC 9110): ASCII, so upper() cannot lengthen it ("ß" -> "SS").
    "method": StrictCharField(
        required=False, strip=True, max_length=RequestDetail._meta.get_field("method").max_length,
        validators=[RegexValidator(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]*\Z", "Enter an HTTP method.")],
    ),
    "client_url": StrictCharField(required=False, max_length=8000),
    "upstream_url": StrictCharField(required=False, max_length=8000),
    "headers": HeadersField(required=False),
    "body": AnyJsonField(required=False),
    "body_text": StrictCharField(required=False, allow_nul=True, empty_value=None),
    "body_base64": StrictCharField(required=False, strip=True, empty_value=None),
    "response_status": _integer("response_status", RequestDetail, max_value=999),
    "meta": JsonObjectField(required=False),
    "special_settings": JsonObjectField(required=False),
}


# Fields the hub works out itself; a sender that names them is told so.
COMPUTED_FIELDS = {
    "retry_count": "Computed from provider_chain (monitoring/retries.py); leave it out.",
    "id": "Assigned by the hub; name the row by request_id.",
}


@dataclass
class IngestErrors(Exception):
    """Field errors, each as {"row": index, "field": dotted name, "message": text}."""

    errors: list = field(default_factory=list)
    total: int = 0
    fields: set = field(default_factory=set)  # (row, name) of every error, listed or not

    def add(self, row: int | None, name: str, message: str) -> None:
        self.total += 1
        self.fields.add((row, name))
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"row": row, "field": name, "message": message})

    def has(self, row: int | None, *names: str) -> bool:
        return any((row, name) in self.fields for name in names)

    def text(self) -> str:
        parts = [
            (f"rows[{e['row']}].{e['field']}" if e["row"] is not None else e["field"])
            + f": {e['message']}"
            for e in self.errors
        ]
        if self.total > len(self.errors):
            parts.append(f"and {self.total - len(self.errors)} more errors")
        return "; ".join(parts)


@dataclass
class IngestResult:
    received: int
    inserted: int
    details: int

    def as_dict(self) -> dict:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "duplicates": self.received - self.inserted,
            "details_stored": self.details,
        }


def _clean(fields: dict, data: dict, errors: IngestErrors, row: int, prefix: str = "") -> dict:
    cleaned = {}
    for name in data.keys() - fields.keys():
        errors.add(row, prefix + str(name), COMPUTED_FIELDS.get(name, "Unknown field."))
    for name, form_field in fields.items():
        if name not in data:
            if form_field.required:
                errors.add(row, prefix + name, "This field is required.")
            continue
        try:
            cleaned[name] = form_field.clean(data[name])
        except ValidationError as exc:
            errors.add(row, prefix + name, " ".join(exc.messages))
    return cleaned


def clean_detail(data: dict, errors: IngestErrors, row: int) -> dict | None:
    cleaned = _clean(DETAIL_FIELDS, data, errors, row, prefix="detail.")
    given = [name for name in ("body", "body_text", "body_base64") if data.get(name) is not None]
    if len(given) > 1:
        errors.add(
            row,
            "detail." + given[1],
            f"Give one of body, body_text, body_base64 ({', '.join(given)} given).",
        )
        return None
    try:
        return mask_detail(cleaned)
    except UnstorableBody as exc:  # a raw body PostgreSQL cannot store (NUL, NaN, depth)
        errors.add(row, "detail." + given[0], str(exc))
        return None
    except ValueError as exc:  # undecodable base64
        errors.add(row, "detail.body_base64", str(exc).capitalize() + ".")
        return None


def parse_payload(raw: bytes) -> list:
    """A JSON list of rows, or one row (an object). Whatever PostgreSQL could not store
    (monitoring/jsonsafe.py: NaN, Infinity, NUL, lone surrogates, deep nesting) is refused
    here, each at its path, before any field is looked at."""
    errors = IngestErrors()
    try:
        payload, suspect = jsonsafe.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # jsonsafe.TooDeep is a ValueError
        errors.add(None, "body", f"Not valid JSON: {exc}")
        raise errors from exc
    if isinstance(payload, dict):
        payload = [payload]
    elif not isinstance(payload, list):
        errors.add(None, "body", "Send a usage row (a JSON object) or a list of them.")
        raise errors
    for index, data in enumerate(payload):
        # A raw text body may hold NUL: it is stored as base64 (masking.store_body).
        for path, message in jsonsafe.problems(
            data, check_scalars=suspect, allow_nul=_NUL_ALLOWED
        ):
            errors.add(index, jsonsafe.render_path(path) or "row", message)
    if errors.total:
        raise errors
    return payload


_NUL_ALLOWED = frozenset({("detail", "body_text")})


def validate_rows(payload: list, *, max_rows: int) -> list[dict]:
    """Cleaned rows, with user_id/key_id/provider_id resolved and details masked; raises
    IngestErrors naming every bad field and its row index."""
    errors = IngestErrors()
    if len(payload) > max_rows:
        errors.add(None, "body", f"At most {max_rows} rows per batch ({len(payload)} sent).")
        raise errors
    rows, seen = [], {}
    for index, data in enumerate(payload):
        if not isinstance(data, dict):
            errors.add(index, "row", "Enter a JSON object.")
            continue
        row = _clean(ROW_FIELDS, data, errors, index)
        mask_usage_row(row)
        request_id = row.get("request_id")
        if request_id is not None:
            if request_id in seen:
                errors.add(index, "request_id", f"Repeats rows[{seen[request_id]}] of this batch.")
            seen.setdefault(request_id, index)
        if isinstance(data.get("detail"), dict) and data["detail"]:
            row["detail"] = clean_detail(data["detail"], errors, index)
        rows.append((index, row))
    _resolve_relations(rows, errors)
    if errors.total:
        raise errors
    return [row for _, row in rows]


def _resolve_relations(rows: list, errors: IngestErrors) -> None:
    """One query per table for the whole batch, not one per row."""
    key_ids = {r["key_id"] for _, r in rows if r.get("key_id")}
    prefixes = {r["key_prefix"] for _, r in rows if r.get("key_prefix")}
    user_ids = {r["user_id"] for _, r in rows if r.get("user_id")}
    provider_ids = {r["provider_id"] for _, r in rows if r.get("provider_id")}
    key_owner = dict(ApiKey.objects.filter(pk__in=key_ids).values_list("pk", "user_id"))
    by_prefix = dict(ApiKey.objects.filter(prefix__in=prefixes).values_list("prefix", "pk"))
    key_owner.update(
        ApiKey.objects.filter(pk__in=by_prefix.values()).values_list("pk", "user_id")
    )
    users = set(User.all_objects.filter(pk__in=user_ids).values_list("pk", flat=True))
    providers = set(Provider.objects.filter(pk__in=provider_ids).values_list("pk", flat=True))

    for index, row in rows:
        key_id, prefix = row.pop("key_id", None), row.pop("key_prefix", None)
        key_field = "key_prefix" if prefix else "key_id"
        if key_id and prefix:
            errors.add(index, "key_prefix", "Give key_id or key_prefix, not both.")
            continue
        if prefix:
            key_id = by_prefix.get(prefix)
            if key_id is None:
                errors.add(index, "key_prefix", f"No API key has the prefix {prefix!r}.")
                continue
        elif key_id and key_id not in key_owner:
            errors.add(index, "key_id", f"No API key has the id {key_id}.")
            continue
        row["key_id"] = key_id
        user_id = row.get("user_id")
        if user_id and user_id not in users:
            errors.add(index, "user_id", f"No user has the id {user_id}.")
        elif user_id and key_id and key_owner[key_id] != user_id:
            errors.add(index, key_field, f"The key belongs to another user than user_id {user_id}.")
        elif not user_id and key_id:
            row["user_id"] = key_owner[key_id]
        elif not user_id and not errors.has(index, "user_id", "key_id", "key_prefix"):
            # A user_id or key that was sent but refused has its own error already.
            errors.add(
                index,
                "user_id",
                "This field is required (or name a key with key_id or key_prefix).",
            )
        provider_id = row.get("provider_id")
        if provider_id and provider_id not in providers:
            errors.add(index, "provider_id", f"No provider has the id {provider_id}.")


def _bulk_insert(model, values: list[dict], *, conflict: str, returning: str = "") -> list:
    """INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT (conflict) DO NOTHING:
    one statement, one parameter per column whatever the batch size.

    The arrays go as bound parameters (server-side binding, binary) through a psycopg cursor on
    Django's own connection, so inside the caller's transaction. Django's default client-side
    binding would quote every element into the SQL text: 3x slower for 1,000 rows."""
    from psycopg import Cursor
    from psycopg.types.json import Jsonb

    columns = [f for f in model._meta.concrete_fields if f.attname in values[0]]
    arrays = []
    for model_field in columns:
        name = model_field.attname
        # Validated values are already what the columns take (str, int, Decimal, aware
        # datetime); only JSON needs wrapping.
        if isinstance(model_field, models.JSONField):
            arrays.append([None if v[name] is None else Jsonb(v[name]) for v in values])
        else:
            arrays.append([v[name] for v in values])
    quote = connection.ops.quote_name
    casts = ", ".join(f"%b::{f.db_type(connection)}[]" for f in columns)
    names = ", ".join(quote(f.column) for f in columns)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({names}) "
        f"SELECT * FROM unnest({casts}) ON CONFLICT ({quote(conflict)}) DO NOTHING"
        + (f" RETURNING {returning}" if returning else "")
    )
    connection.ensure_connection()
    with Cursor(connection.connection) as cursor:
        cursor.execute(sql, arrays, binary=True)
        return cursor.fetchall() if returning else []


def _row_values(row: dict) -> dict:
    values = {}
    for model_field in MessageRequest._meta.concrete_fields:
        name = model_field.attname
        if name == "id":
            continue
        if name == "retry_count":
            # The one definition, as MessageRequest.save() uses it.
            values[name] = retry_count_from_chain(row.get("provider_chain"))
        elif row.get(name) is None or (row[name] == "" and model_field.null):
            # Nullable columns store NULL for "" (client_ip's form field cleans null to "").
            values[name] = model_field.get_default()
        else:
            values[name] = row[name]
    return values


def insert_rows(rows: list[dict]) -> dict[str, int]:
    """Store the rows that are new; {request_id: id} of those actually inserted."""
    if not rows:
        return {}
    inserted = _bulk_insert(
        MessageRequest, [_row_values(row) for row in rows], conflict="request_id",
        returning="request_id, id",
    )
    return dict(inserted)


def insert_details(rows: list[dict], inserted: dict[str, int]) -> int:
    """Details of the batch's rows. A row stored earlier without details (a first attempt that
    sent none) gets them now; one that has them keeps its first copy; one whose details were
    pruned or deleted does not get them back."""
    wanted = {r["request_id"]: r for r in rows if r.get("detail")}
    if not wanted:
        return 0
    targets = {
        rid: (pk, wanted[rid]["created_at"]) for rid, pk in inserted.items() if rid in wanted
    }
    earlier = wanted.keys() - targets.keys()
    if earlier:
        targets.update(
            (rid, (pk, created))
            for rid, pk, created in MessageRequest.objects.filter(
                request_id__in=earlier, detail__isnull=True, details_removed=""
            ).values_list("request_id", "pk", "created_at")
        )
    if not targets:
        return 0
    values = [
        # Retention counts from the request's own time, so a backfill of old rows is not kept
        # longer than live traffic.
        {"request_id": pk, "created_at": created, **wanted[rid]["detail"]}
        for rid, (pk, created) in targets.items()
    ]
    stored = _bulk_insert(RequestDetail, values, conflict="request_id", returning="request_id")
    return len(stored)


def ingest_rows(payload: list, *, max_rows: int) -> IngestResult:
    rows = validate_rows(payload, max_rows=max_rows)
    now = timezone.now()
    for row in rows:
        row["created_at"] = row.get("created_at") or now
        detail = row.get("detail")
        if detail and detail["response_status"] is None:
            detail["response_status"] = row.get("status_code")
    with transaction.atomic():
        inserted = insert_rows(rows)
        details = insert_details(rows, inserted)
    return IngestResult(received=len(rows), inserted=len(inserted), details=details)

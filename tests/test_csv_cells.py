"""The cell rules, in Python (header cells) and in SQL (data cells), and that the two agree."""

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal

import pytest
from django.db import connection

from exports.csvfile import WHITESPACE, escape_formula, quote_field, text_line

ESCAPED = [
    ("=1+1", "'=1+1"),
    ("+1", "'+1"),
    ("-1", "'-1"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("==", "'=="),
    (" =1", "' =1"),  # leading space
    ("\u00a0=1", "'\u00a0=1"),  # no-break space
    ("\uff1d1", "'\uff1d1"),  # full-width =, NFKC makes it =
    ("\uff0b1", "'\uff0b1"),  # full-width +
    ("\uff201", "'\uff201"),  # full-width @
    ("\u3000-1", "'\u3000-1"),  # ideographic space
    ("=\u0338A1", "'=\u0338A1"),  # = then a combining slash: NFKC composes them into \u2260
    (" =\u0338", "' =\u0338"),
    ("\ttext", "'\ttext"),
    ("\rtext", "'\rtext"),
    ("\ntext", "'\ntext"),
    ("\x00text", "'\x00text"),
    ("\t", "'\t"),
    ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
    ("=CMD|' /C calc'!A0", "'=CMD|' /C calc'!A0"),
]
KEPT = ["", "plain", "a=b", "1-2", "sk-abc", "中文 🚀", "'=already quoted", "\u2212minus sign", "x\t=y"]


@pytest.mark.parametrize("raw, expected", ESCAPED)
def test_formula_leaders_are_prefixed_with_a_quote(raw, expected):
    assert escape_formula(raw) == expected


@pytest.mark.parametrize("raw", KEPT)
def test_harmless_text_is_kept(raw):
    assert escape_formula(raw) == raw


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a,b", '"a,b"'),
        ('say "hi"', '"say ""hi"""'),
        ("two\nlines", '"two\nlines"'),
        ("cr\rhere", '"cr\rhere"'),
        ("plain", "plain"),
    ],
)
def test_rfc4180_quoting(raw, expected):
    assert quote_field(raw) == expected


def test_header_line_escapes_then_quotes():
    assert text_line(["=a,b", "ok"]) == "\"'=a,b\",ok\n"


def sql_text(values):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT hub_csv_text(v) FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, i) ORDER BY i",
            [values],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_sql_and_python_escaping_agree():
    # NUL cannot be stored in PostgreSQL text, so it is checked in Python only (above).
    samples = [raw for raw, _ in ESCAPED if "\x00" not in raw] + KEPT
    samples += [ws + lead + "x" for ws in WHITESPACE for lead in "=+-@a"]
    samples += [ws * 3 + "\uff1d" for ws in WHITESPACE]
    assert sql_text(samples) == [escape_formula(s) for s in samples]


@pytest.mark.django_db
def test_sql_passes_null_through():
    assert sql_text([None]) == [None]


def reference_decimal(value: str) -> str:
    """15 significant digits, half away from zero, no exponent, no trailing zeros."""
    d = Decimal(value)
    if d == 0:
        return "0"
    rounded = Context(prec=15, rounding=ROUND_HALF_UP).plus(d)
    text = format(rounded, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "1.500000000000000",
        "0.015600000000000",
        "0.000000000000001",
        "0.000000012345678",
        "123456.123456789012345",
        "999999.999999999999999",
        "0.000123456789012",
        "10.000000000000000",
        "0",
        "42",
        "0.333333333333333",
        "1.23456789012345678",
    ],
)
def test_cost_is_a_plain_decimal_of_at_most_15_significant_digits(value):
    with connection.cursor() as cursor:
        cursor.execute("SELECT hub_csv_decimal(%s::numeric(21,15))", [value])
        got = cursor.fetchone()[0]
        cursor.execute("SELECT %s::numeric(21,15)::text", [value])
        stored = cursor.fetchone()[0]
    assert got == reference_decimal(stored)
    assert "e" not in got.lower()
    assert len(got.replace(".", "").lstrip("0")) <= 15


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tz, expected",
    [
        ("UTC", "2026-01-29T10:30:00.123Z"),
        ("Asia/Shanghai", "2026-01-29T18:30:00.123+08:00"),
        ("America/New_York", "2026-01-29T05:30:00.123-05:00"),
        ("Asia/Kolkata", "2026-01-29T16:00:00.123+05:30"),
    ],
)
def test_times_are_iso_8601_with_milliseconds(tz, expected):
    instant = datetime(2026, 1, 29, 10, 30, 0, 123999, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute("SELECT hub_csv_time(%s, %s)", [instant, tz])
        assert cursor.fetchone()[0] == expected

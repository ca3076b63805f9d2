"""Excel-safe CSV cells: formula-injection escaping and RFC 4180 quoting.

Data cells are formatted by PostgreSQL (see CSV_SQL_FUNCTIONS and exports.usage), so that a
million rows stream at COPY speed; header cells are formatted here. Both apply the same rule,
and tests/test_csv_cells.py checks that the two agree character for character.

The rule: a text cell whose first character is tab, CR, LF or NUL, or whose first character
after stripping leading white space is one of = + - @, as written or after NFKC normalisation,
is written as ' followed by the original text. Numbers and times are written bare. Both forms
are checked: NFKC turns a full-width = (U+FF1D) into =, but it also composes = and a combining
U+0338 into U+2260, which would hide the = that a spreadsheet sees.
"""

import unicodedata

BOM = "\ufeff"
FORMULA_LEADERS = "=+-@"
CONTROL_LEADERS = "\t\r\n\0"
# Exactly what str.lstrip() strips, so the SQL function below strips the same characters.
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def needs_formula_escape(text: str) -> bool:
    if not text:
        return False
    if text[0] in CONTROL_LEADERS:
        return True
    return any(
        form.lstrip(WHITESPACE)[:1] in tuple(FORMULA_LEADERS)
        for form in (text, unicodedata.normalize("NFKC", text))
    )


def escape_formula(text: str) -> str:
    return "'" + text if needs_formula_escape(text) else text


def quote_field(text: str) -> str:
    """RFC 4180: fields holding a comma, a quote, CR or LF are quoted, inner quotes doubled."""
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def text_line(cells: list[str]) -> str:
    """One CSV record of text cells (escaped and quoted), ending in LF like PostgreSQL's COPY."""
    return ",".join(quote_field(escape_formula(str(cell))) for cell in cells) + "\n"


def _regex_class(chars: str) -> str:
    return "".join(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}" for ch in chars)


# Written so PostgreSQL inlines them (one SELECT, no sub-query, volatility no stricter than the
# body's): a function call per cell would cost more than the COPY itself. NUL cannot occur in
# PostgreSQL text, so the SQL side only checks tab, CR and LF.
CSV_SQL_FUNCTIONS = rf"""
CREATE OR REPLACE FUNCTION hub_csv_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    -- Fast path, nearly every cell: an ASCII letter, digit, / or _ cannot start a formula,
    -- and NFKC cannot turn it into one.
    WHEN ascii(t) BETWEEN 97 AND 122 OR ascii(t) BETWEEN 65 AND 90
      OR ascii(t) BETWEEN 47 AND 57 OR ascii(t) = 95 THEN t
    WHEN t ~ '^[\u0009\u000a\u000d]' THEN '''' || t
    WHEN t ~ '^[{_regex_class(WHITESPACE)}]*[=+@-]'
      OR normalize(t, NFKC) ~ '^[{_regex_class(WHITESPACE)}]*[=+@-]' THEN '''' || t
    ELSE t
  END
$$;

CREATE OR REPLACE FUNCTION hub_csv_decimal(n numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  -- At most 15 significant digits (Excel shows more as text), no trailing zeros, no exponent.
  -- Below 1 a numeric(21,15) has at most 15 anyway; from 1 up, keep 15 minus the integer digits.
  SELECT trim_scale(
    CASE WHEN abs(n) >= 1 THEN round(n, 15 - length(trunc(abs(n))::text)) ELSE n END
  )::text
$$;

CREATE OR REPLACE FUNCTION hub_csv_time(ts timestamptz, tz text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  -- ISO 8601 with milliseconds: Z in UTC, else the zone's offset at that instant.
  SELECT CASE
    WHEN tz = 'UTC' THEN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    ELSE to_char(ts AT TIME ZONE tz, 'YYYY-MM-DD"T"HH24:MI:SS.MS')
      || CASE WHEN (ts AT TIME ZONE tz) < (ts AT TIME ZONE 'UTC') THEN '-' ELSE '+' END
      || to_char(greatest((ts AT TIME ZONE tz) - (ts AT TIME ZONE 'UTC'),
                          (ts AT TIME ZONE 'UTC') - (ts AT TIME ZONE tz)), 'HH24:MI')
  END
$$;
"""

DROP_CSV_SQL_FUNCTIONS = """
DROP FUNCTION IF EXISTS hub_csv_text(text);
DROP FUNCTION IF EXISTS hub_csv_decimal(numeric);
DROP FUNCTION IF EXISTS hub_csv_time(timestamptz, text);
"""

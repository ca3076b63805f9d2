"""JSON as PostgreSQL can store it.

Python's json module accepts what jsonb and text columns refuse: NaN/Infinity/-Infinity, numbers
beyond a float (1e400 becomes inf, which is dumped back as Infinity), NUL (\\u0000) in strings
and keys, lone surrogates (\\ud800: not Unicode text, so not encodable as UTF-8), and nesting deep
enough to exhaust the interpreter's stack. `loads()` parses with markers in place of the
non-finite numbers; `problems()` walks a parsed value (iteratively) and names the path of each
thing that cannot be stored, so a sender gets a 400 naming it instead of a 500 from the INSERT.
"""

import json
import math
import re
from collections.abc import Iterator

# Deeper than any request body seen in practice (tool schemas nest a dozen levels); shallow
# enough that the recursive masking in masking.py cannot exhaust the stack.
MAX_DEPTH = 100

_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


class TooDeep(ValueError):
    """The JSON text nests deeper than the parser's stack allows."""


class NonFinite:
    """Stands in for NaN, Infinity, -Infinity or a number beyond a float, found by problems()."""

    __slots__ = ("literal",)

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self):
        return f"NonFinite({self.literal!r})"


def loads(data: str | bytes) -> tuple:
    """(value, suspect): json.loads with non-finite numbers as NonFinite markers, and whether
    the value may hold anything problems() reports beyond nesting (a NonFinite, or a string
    that may hold NUL or a lone surrogate). TooDeep (a ValueError) for a text nested beyond
    the parser. Check the value with problems(value, check_scalars=suspect) before using it."""
    markers = []

    def constant(literal):
        markers.append(NonFinite(literal))
        return markers[-1]

    def parse_float(text):
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    try:
        value = json.loads(data, parse_constant=constant, parse_float=parse_float)
    except RecursionError as exc:
        raise TooDeep("JSON nested too deeply to parse.") from exc
    return value, bool(markers) or may_hold_unstorable_text(data)


def char_problem(text: str) -> str | None:
    """Why a string cannot be stored, or None."""
    match = _UNSTORABLE_CHARS.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return "Contains NUL (\\u0000), which PostgreSQL cannot store."
    return (
        f"Contains a lone surrogate (\\u{ord(match.group()):04x}), which is not Unicode text."
    )


def render_path(path: tuple) -> str:
    """("detail", "headers", "x-a", 0) -> detail.headers.x-a[0]; odd keys as ["..."] with JSON
    escapes, so the name itself never carries a NUL or a surrogate."""
    parts = []
    for item in path:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif _PLAIN_KEY.match(item):
            parts.append(("." if parts else "") + item)
        else:
            parts.append(f"[{json.dumps(item)}]")
    return "".join(parts)


def may_hold_unstorable_text(data: str | bytes) -> bool:
    """False when no string parsed from this JSON text can hold NUL or a lone surrogate: those
    only arrive as \\u escapes (the parser refuses raw control characters) or, in bytes, as
    UTF-8-encoded surrogates (json.loads decodes bytes with surrogatepass). Lets problems()
    skip the per-string scan for the usual batch. May say True needlessly, never False wrongly."""
    if isinstance(data, bytes):
        if b"\x00" in data[:4] or data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return True  # UTF-16/32: scan every string
        return _RISKY_BYTES.search(data) is not None
    return _RISKY_TEXT.search(data) is not None


_RISKY_BYTES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")
_RISKY_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])|[\ud800-\udfff]")


def problems(
    value, path: tuple = (), *, check_scalars: bool = True, allow_nul: frozenset = frozenset()
) -> Iterator:
    """(path, message) for every value that cannot be stored. Paths in `allow_nul` may hold
    NUL (a raw body the caller stores as base64). check_scalars=False (loads() found nothing
    suspect) checks only the nesting, which is most of the cost saved on an ordinary batch.
    Nesting beyond MAX_DEPTH is reported once per top-level field, at its first two path
    components. Iterative: any depth the parser produced is safe here."""
    if type(value) not in _CONTAINERS:
        if check_scalars and (message := _scalar_problem(value, path, allow_nul)) is not None:
            yield path, message
        return
    too_deep = set()
    limit = len(path) + MAX_DEPTH
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if len(where) >= limit:
            field = where[: len(path) + 2]
            if field not in too_deep:
                too_deep.add(field)
                yield field, f"JSON nested deeper than {MAX_DEPTH} levels."
            continue
        is_dict = type(item) is dict
        if not check_scalars:
            stack.extend(
                (child, where + (key,))
                for key, child in (item.items() if is_dict else enumerate(item))
                if type(child) in _CONTAINERS
            )
            continue
        children = []
        for key, child in item.items() if is_dict else enumerate(item):
            if is_dict and (message := char_problem(key)) is not None:
                yield where + (key,), "The key: " + message[0].lower() + message[1:]
            if type(child) in _CONTAINERS:
                children.append((child, where + (key,)))
            elif (message := _scalar_problem(child, where + (key,), allow_nul)) is not None:
                yield where + (key,), message
        stack.extend(reversed(children))


_CONTAINERS = (dict, list)


def _scalar_problem(item, where: tuple, allow_nul: frozenset) -> str | None:
    if isinstance(item, str):
        message = char_problem(item)
        if message and where in allow_nul and char_problem(item.replace("\x00", "")) is None:
            return None
        return message
    if isinstance(item, NonFinite):
        if item.literal.lstrip("-") in ("NaN", "Infinity"):
            return f"{item.literal} is not a JSON number (PostgreSQL cannot store it)."
        return f"The number {item.literal} is out of range."
    return None

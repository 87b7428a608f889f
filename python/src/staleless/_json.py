"""JSON as the Rust consumer's ``serde_json`` reads it: the syntax, the number types and the limits.

Python's :mod:`json` parses the same grammar, but it reads every integer as a Python ``int``,
accepts ``NaN`` and ``Infinity``, keeps only the last of duplicate keys, lets lone UTF-16
surrogates through ``\\u`` escapes and has no nesting limit of its own. ``serde_json`` instead
reads a number as an unsigned or a signed 64-bit integer or as an ``f64`` (``-0`` and integers
beyond 64 bits are ``f64``; an ``f64`` that overflows is an error), refuses lone surrogates in any
string it decodes, and refuses values nested 128 deep or more when it decodes them (values it
skips are only checked for syntax). This module parses with :mod:`json` and keeps what is needed
to apply those rules where ``serde_json`` applies them:

- objects are tuples of their pairs (:data:`Obj`: every pair, in order, duplicates included);
- integers within ``[-2**63, 2**64 - 1]`` are ``int`` (``serde_json``'s ``I64``/``U64``); every
  other number is a :class:`Float` carrying its text and whether it is finite;
- :func:`parse` says whether any number is out of the ``f64`` range, and :func:`content_error`
  finds what a full decode (``serde``'s ``Content``) refuses: lone surrogates, nesting, overflow.

Nothing here raises anything but :class:`JsonError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import TypeAlias

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "MAX_DEPTH",
    "U32_MAX",
    "U64_MAX",
    "Float",
    "JsonError",
    "Obj",
    "Parsed",
    "Value",
    "content_error",
    "has_surrogate",
    "parse",
]

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
#: The deepest nesting ``serde_json`` decodes (its recursion limit is 128, the outer object included).
MAX_DEPTH = 127

#: More digits than any 64-bit integer has: such an integer is an ``f64`` for ``serde_json``.
_MAX_INTEGER_DIGITS = 20

_SURROGATE = re.compile("[\ud800-\udfff]")
#: A ``\\uD800``-``\\uDFFF`` escape (or text that looks like one).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class JsonError(Exception):
    """The text is not JSON as ``serde_json`` reads it."""


class Float:
    """A JSON number that ``serde_json`` reads as an ``f64``: never an integer field's value."""

    __slots__ = ("finite", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.finite = not math.isinf(float(text))

    def __repr__(self) -> str:
        return f"Float({self.text!r})"


#: A JSON object: its pairs in order, duplicate keys included (``object_pairs_hook=tuple``).
Obj: TypeAlias = "tuple[tuple[str, Value], ...]"
Value: TypeAlias = "Obj | list[Value] | str | int | Float | bool | None"


@dataclass(frozen=True)
class Parsed:
    """A parsed text."""

    value: Value
    #: Whether some number in it overflows an ``f64`` (an error wherever it is decoded).
    out_of_range: bool
    #: Whether some string in it may hold a lone surrogate (a cheap, conservative test).
    may_hold_surrogates: bool
    #: Whether it may nest deeper than :data:`MAX_DEPTH` (a cheap, conservative test).
    may_nest_too_deep: bool


def _integer(text: str) -> int | Float:
    """An integer token as ``serde_json`` types it."""
    digits = len(text) - (text[0] == "-")
    if digits <= _MAX_INTEGER_DIGITS:
        number = int(text)
        if number > 0 or (number == 0 and text[0] != "-"):
            if number <= U64_MAX:
                return number
        elif number < 0 and number >= I64_MIN:
            return number
    # `-0` is an f64 for serde_json, and so is any integer beyond 64 bits.
    return Float(text)


def _refuse_constant(name: str) -> Value:
    raise JsonError(f"{name} is not JSON")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (no Rust ``String`` can)."""
    return _SURROGATE.search(text) is not None


def _may_hold_surrogates(text: str) -> bool:
    """Whether a string parsed from ``text`` may hold a lone surrogate: a raw one, or a
    ``\\uD800``-``\\uDFFF`` escape (conservative; cheap for the usual text)."""
    if "\\u" in text and _ESCAPED_SURROGATE.search(text) is not None:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse(text: str) -> Parsed:
    """Parses ``text`` (one JSON value, surrounded by whitespace at most).

    Raises:
        JsonError: for anything ``serde_json`` does not parse.
    """
    if not isinstance(text, str):
        raise JsonError("not a text")
    floats: list[Float] = []

    def number(token: str) -> Float:
        parsed = Float(token)
        floats.append(parsed)
        return parsed

    def integer(token: str) -> int | Float:
        if len(token) < 19 and token != "-0":  # 18 digits fit both 64-bit ranges
            return int(token)
        parsed = _integer(token)
        if isinstance(parsed, Float):
            floats.append(parsed)
        return parsed

    try:
        value: Value = json.loads(
            text,
            object_pairs_hook=tuple,
            parse_int=integer,
            parse_float=number,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        # Deeper than Python's own limit: parse without recursion (serde_json skips deep values
        # it does not decode, so such a text can still be, say, an unsupported version).
        floats.clear()
        value = _parse_iteratively(text, integer, number)
    except (ValueError, JsonError) as err:  # json.JSONDecodeError is a ValueError
        raise JsonError(str(err)) from None
    return Parsed(
        value=value,
        out_of_range=any(not parsed.finite for parsed in floats),
        may_hold_surrogates=_may_hold_surrogates(text),
        may_nest_too_deep=text.count("{") + text.count("[") > MAX_DEPTH,
    )


def _whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return pos if match is None else match.end()


def _parse_iteratively(
    text: str,
    integer: Callable[[str], int | Float],
    number: Callable[[str], Float],
) -> Value:
    """:func:`json.loads` without recursion, for texts nested deeper than Python allows."""
    try:
        scan = scanstring
        end = len(text)
        # Each frame: a list of pairs and the pending key (an object), or a list of items.
        stack: list[tuple[list[tuple[str, Value]], list[str]] | list[Value]] = []

        def key_at(pos: int) -> tuple[str, int]:
            if not text.startswith('"', pos):
                raise JsonError(f"expected a key at {pos}")
            key, pos = scan(text, pos + 1, True)
            pos = _whitespace(text, pos)
            if not text.startswith(":", pos):
                raise JsonError(f"expected ':' at {pos}")
            return key, _whitespace(text, pos + 1)

        pos = _whitespace(text, 0)
        while True:
            value: Value
            char = text[pos] if pos < end else ""
            if char == "{":
                pos = _whitespace(text, pos + 1)
                if text.startswith("}", pos):
                    value, pos = (), pos + 1
                else:
                    key, pos = key_at(pos)
                    stack.append(([], [key]))
                    continue
            elif char == "[":
                pos = _whitespace(text, pos + 1)
                if text.startswith("]", pos):
                    value, pos = [], pos + 1
                else:
                    stack.append([])
                    continue
            elif char == '"':
                value, pos = scan(text, pos + 1, True)
            elif text.startswith("null", pos):
                value, pos = None, pos + 4
            elif text.startswith("true", pos):
                value, pos = True, pos + 4
            elif text.startswith("false", pos):
                value, pos = False, pos + 5
            else:
                match = _NUMBER.match(text, pos)
                if match is None:
                    raise JsonError(f"expected a value at {pos}")
                token = match.group()
                value = number(token) if match.group(1) or match.group(2) else integer(token)
                pos = match.end()
            # A value is complete: hand it to the frames it closes.
            while True:
                pos = _whitespace(text, pos)
                if not stack:
                    if pos != end:
                        raise JsonError(f"trailing characters at {pos}")
                    return value
                frame = stack[-1]
                if isinstance(frame, tuple):
                    pairs, pending = frame
                    pairs.append((pending[0], value))
                    if text.startswith(",", pos):
                        pending[0], pos = key_at(_whitespace(text, pos + 1))
                        break
                    if text.startswith("}", pos):
                        stack.pop()
                        value, pos = tuple(pairs), pos + 1
                        continue
                    raise JsonError(f"expected ',' or '}}' at {pos}")
                frame.append(value)
                if text.startswith(",", pos):
                    pos = _whitespace(text, pos + 1)
                    break
                if text.startswith("]", pos):
                    stack.pop()
                    value, pos = frame, pos + 1
                    continue
                raise JsonError(f"expected ',' or ']' at {pos}")
    except (ValueError, RecursionError) as err:
        raise JsonError(str(err)) from None


def content_error(parsed: Parsed) -> str | None:
    """Why a full decode of ``parsed`` fails whatever its shape, as ``serde_json`` decoding every
    value does (a ``flatten``ed or internally tagged type buffers every value): a number out of
    range, a lone surrogate in any string or key, or nesting deeper than :data:`MAX_DEPTH`.
    ``None`` when there is nothing of the kind."""
    if parsed.out_of_range:
        return "number out of range"
    if not (parsed.may_hold_surrogates or parsed.may_nest_too_deep):
        return None
    check_strings = parsed.may_hold_surrogates
    # Iterative: the value may be nested deeper than Python's recursion limit.
    stack: list[tuple[Obj | list[Value], int]] = []
    if isinstance(parsed.value, (tuple, list)):
        stack.append((parsed.value, 1))
    elif check_strings and isinstance(parsed.value, str) and has_surrogate(parsed.value):
        return "lone surrogate in a string"
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "recursion limit exceeded"
        if isinstance(container, tuple):
            if check_strings and any(has_surrogate(key) for key, _ in container):
                return "lone surrogate in a key"
            items: Iterable[Value] = (item for _, item in container)
        else:
            items = container
        for item in items:
            if isinstance(item, (tuple, list)):
                stack.append((item, depth + 1))
            elif check_strings and isinstance(item, str) and has_surrogate(item):
                return "lone surrogate in a string"
    return None

"""Properties of the decoder (the Python twin of ``protocol/src/properties.rs``): any body a queue
can hand over decodes to exactly the message it spells or to the error its shape calls for, any
message round-trips, and the inbox never raises."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from staleless.caches import Caches
from staleless.health import ChannelHealth, ManualClock, SourceSpec
from staleless.inbox import Inbox
from staleless.protocol import (
    DecodeError,
    FlushAll,
    Invalidate,
    Invalidation,
    KeyVersion,
    Tick,
    decode,
    encode,
)
from staleless.trust import TrustRules

I64 = st.integers(-(2**63), 2**63 - 1)
U64 = st.integers(0, 2**64 - 1)
U32_MAX = 2**32 - 1

#: Every field name of the format, drawn often so that random objects collide with them.
FIELDS = [
    "v",
    "kind",
    "source",
    "keys",
    "reason",
    "written_at_ms",
    "writer",
    "slot",
    "slots",
    "covered",
    "interval_ms",
    "id",
    "seq",
    "at_ms",
]
#: Every word of the format, so that random JSON sometimes spells a valid value.
WORDS = ["invalidate", "flush_all", "tick", "users", "roles", "Users"]
VARIANTS = ["invalidate", "flush_all", "tick"]

# Rust strings: any Unicode scalar value (no lone surrogates).
text = st.text(st.characters(codec="utf-8"))
sources = st.one_of(st.sampled_from(["users", "roles"]), st.from_regex(r"\A[A-Za-z0-9_.\-]{1,64}\Z"))
key_versions = st.builds(KeyVersion, id=text, seq=st.one_of(st.from_regex(r"\A[0-9]{21,40}\Z"), text), at_ms=I64)


def invalidations(keys: st.SearchStrategy[list[KeyVersion]]) -> st.SearchStrategy[Invalidation]:
    return st.one_of(
        st.builds(Invalidate, source=sources, keys=keys),
        st.builds(FlushAll, source=st.none() | sources, reason=st.none() | text),
        st.builds(
            Tick,
            source=sources,
            written_at_ms=I64,
            writer=st.none() | text,
            slot=st.none() | text,
            slots=st.none() | st.lists(text, max_size=3),
            covered=st.none() | st.booleans(),
            interval_ms=st.none() | U64,
        ),
    )


messages = invalidations(st.lists(key_versions, max_size=32))

integers = st.one_of(
    st.integers(0, 3),
    st.integers(0, U32_MAX),
    I64,
    U64,
    st.sampled_from([-(2**63), -1, 2**63 - 1, U32_MAX, U32_MAX + 1, 2**64 - 1, 2**64, -(2**63) - 1]),
)
field_names = st.one_of(st.sampled_from(FIELDS), text)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.sampled_from(WORDS),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8),
        st.dictionaries(field_names, inner, max_size=8),
    ),
    max_leaves=64,
)


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def to_json(message: Invalidation) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(encode(message))
    return decoded


def fields_of(kind: str) -> list[str]:
    if kind == "invalidate":
        return ["source", "keys"]
    if kind == "flush_all":
        return ["source", "reason"]
    return ["source", "written_at_ms", "writer", "slot", "slots", "covered", "interval_ms"]


def same_json(written: object, read: object) -> bool:
    """JSON equality where ``true`` is not ``1`` (nor ``1.0``)."""
    if isinstance(written, bool) or isinstance(read, bool):
        return type(written) is type(read) and written == read
    if isinstance(written, int) and isinstance(read, int):
        return written == read
    return type(written) is type(read) and written == read


def within(written: object, read: object) -> bool:
    """Whether every field of ``written`` is in ``read`` with the same value (extra fields in
    ``read``, at any level, are allowed: readers ignore fields they do not know)."""
    if isinstance(written, dict) and isinstance(read, dict):
        return all(name in read and within(value, read[name]) for name, value in written.items())
    if isinstance(written, dict) and isinstance(read, list):
        # serde reads a struct from the sequence of its fields, too (a key as [id, seq, at_ms]).
        return len(read) == len(written) and all(map(within, written.values(), read))
    if isinstance(written, list) and isinstance(read, list):
        return len(written) == len(read) and all(map(within, written, read))
    return same_json(written, read)


def spells(message: Invalidation, given: dict[str, Any]) -> bool:
    """Whether ``message`` is what ``given`` spells: each field its kind reads is there with that
    value, an absent optional field absent or ``null`` there."""
    written = to_json(message)
    kind = written["kind"]
    for name in ["v", "kind", *fields_of(kind)]:
        if name in written and name in given:
            if name == "kind" and type(given[name]) is int:
                # serde also reads a variant by its index.
                if VARIANTS.index(kind) != given[name]:
                    return False
            elif not within(written[name], given[name]):
                return False
        elif name in written or (name in given and given[name] is not None):
            return False
    return True


def version_of(given: object) -> str | int:
    """What the ``v`` of a body says before its shape is looked at."""
    if not isinstance(given, dict):
        return "unreadable"
    version = given.get("v")
    if type(version) is not int or not 0 <= version <= U32_MAX:
        return "unreadable"
    return "current" if version == 1 else version


def attempt(body: str) -> Invalidation | DecodeError:
    """What decoding ``body`` gives: the message, or the error."""
    try:
        return decode(body)
    except DecodeError as err:
        return err


def check_decodes_as_spelled(given: object) -> None:
    body = dumps(given)
    version = version_of(given)
    outcome = attempt(body)
    if isinstance(outcome, DecodeError):
        expected = {"unreadable": "malformed", "current": "invalid_body"}.get(str(version), "unsupported_version")
        assert outcome.kind == expected, (body, outcome)
        if expected == "unsupported_version":
            assert outcome.found == version, (body, outcome)
        return
    assert version == "current", (body, outcome)
    assert isinstance(given, dict)
    assert spells(outcome, given), (body, outcome)


TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    '"v"',
    "1",
    "2",
    "-1",
    "1.0",
    "1e400",
    '"kind"',
    '"invalidate"',
    '"flush_all"',
    '"tick"',
    '"source"',
    '"users"',
    '"keys"',
    "null",
    '"\\ud800"',
    '"',
    "\\",
    "NaN",
    "-0",
]

bodies = st.one_of(
    st.text(),
    st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    st.binary(max_size=256).map(lambda raw: raw.decode("utf-8", errors="replace")),
    messages.map(encode),
)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(messages)
def test_any_message_round_trips(message: Invalidation) -> None:
    assert decode(encode(message)) == message


@SETTINGS
@given(bodies)
def test_any_text_decodes_as_spelled_or_is_a_typed_error(body: str) -> None:
    outcome = attempt(body)
    if isinstance(outcome, DecodeError):
        assert outcome.kind in ("malformed", "unsupported_version", "invalid_body")
        return
    assert isinstance(outcome, (Invalidate, FlushAll, Tick))
    assert spells(outcome, json.loads(body)), (body, outcome)


def with_version(given: object, version: int) -> object:
    if isinstance(given, dict):
        given = {**given, "v": version}
    return given


@SETTINGS
@given(st.one_of(json_values, st.builds(with_version, json_values, integers)))
def test_any_json_decodes_as_spelled_or_is_the_error_its_shape_calls_for(given: object) -> None:
    check_decodes_as_spelled(given)


@SETTINGS
@given(
    messages,
    st.one_of(
        st.tuples(st.just("set"), field_names, json_values),
        st.tuples(st.just("remove"), field_names, st.none()),
        st.tuples(st.just("set_in_key"), field_names, json_values),
        st.tuples(st.just("remove_from_key"), field_names, st.none()),
    ),
    st.integers(0, 1_000),
)
def test_a_valid_message_with_one_hostile_field_decodes_as_spelled_or_is_refused(
    message: Invalidation, hostility: tuple[str, str, object], at: int
) -> None:
    given = to_json(message)
    how, name, value = hostility
    if how == "set":
        given[name] = value
    elif how == "remove":
        given.pop(name, None)
    elif given.get("keys"):
        key = given["keys"][at % len(given["keys"])]
        if how == "set_in_key":
            key[name] = value
        else:
            key.pop(name, None)
    check_decodes_as_spelled(given)


number_literals = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,45})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?\Z"),
    integers.map(str),
)


@SETTINGS
@given(number_literals, st.sampled_from(["v", "written_at_ms", "interval_ms", "at_ms"]))
def test_numbers_of_any_size_decode_only_where_they_fit(literal: str, field: str) -> None:
    if field == "v":
        body, low, high = f'{{"v":{literal},"kind":"flush_all"}}', 0, U32_MAX
    elif field == "at_ms":
        body = f'{{"v":1,"kind":"invalidate","source":"users","keys":[{{"id":"u","seq":"1","at_ms":{literal}}}]}}'
        low, high = -(2**63), 2**63 - 1
    elif field == "written_at_ms":
        body, low, high = f'{{"v":1,"kind":"tick","source":"roles","written_at_ms":{literal}}}', -(2**63), 2**63 - 1
    else:
        body = f'{{"v":1,"kind":"tick","source":"roles","written_at_ms":1,"interval_ms":{literal}}}'
        low, high = 0, 2**64 - 1
    integer = None if literal == "-0" or any(char in literal for char in ".eE") else int(literal)
    fits = integer is not None and low <= integer <= high
    message = attempt(body)
    if isinstance(message, DecodeError):
        if message.kind == "unsupported_version":
            assert field == "v"
            assert message.found == integer
        else:
            assert (field == "v") == (message.kind == "malformed"), body
            assert not fits, body
        return
    assert fits, body
    if isinstance(message, FlushAll):
        assert integer == 1
    elif isinstance(message, Tick):
        assert (message.interval_ms if field == "interval_ms" else message.written_at_ms) == integer
    else:
        assert message.keys[0].at_ms == integer


@SETTINGS
@given(st.lists(st.integers(0, 0xFFFF), max_size=8), st.sampled_from(["reason", "x", "id", "seq"]))
def test_escaped_strings_decode_exactly_when_they_are_unicode(units: list[int], field: str) -> None:
    literal = "".join(f"\\u{unit:04x}" for unit in units)
    if field in ("reason", "x"):
        body = f'{{"v":1,"kind":"flush_all","{field}":"{literal}"}}'
    elif field == "id":
        body = f'{{"v":1,"kind":"invalidate","source":"users","keys":[{{"id":"{literal}","seq":"1","at_ms":1}}]}}'
    else:
        body = f'{{"v":1,"kind":"invalidate","source":"users","keys":[{{"id":"u","seq":"{literal}","at_ms":1}}]}}'
    try:
        expected: str | None = b"".join(unit.to_bytes(2, "big") for unit in units).decode("utf-16-be")
    except UnicodeDecodeError:
        expected = None
    message = attempt(body)
    if isinstance(message, DecodeError):
        assert message.kind == "invalid_body", (body, message)
        assert expected is None, (body, message)
        return
    assert expected is not None, body
    if isinstance(message, FlushAll):
        assert message.reason == (expected if field == "reason" else None)
    else:
        assert isinstance(message, Invalidate)
        assert (message.keys[0].id if field == "id" else message.keys[0].seq) == expected


@settings(max_examples=150, deadline=None)
@given(
    invalidations(st.lists(key_versions, max_size=4)),
    st.sampled_from(FIELDS),
    st.one_of(st.integers(1, 199), st.integers(200, 50_000)),
    st.booleans(),
)
def test_nesting_of_any_depth_is_refused_where_the_format_reads_and_never_overflows(
    message: Invalidation, field: str, depth: int, as_objects: bool
) -> None:
    opening, closing = ('{"a":', "}") if as_objects else ("[", "]")
    nested = opening * depth + "0" + closing * depth
    given = to_json(message)
    read = field == "kind" or field in fields_of(given["kind"])
    given.pop(field, None)
    rest = dumps(given)
    body = f'{{"{field}":{nested},{rest[1:]}'
    decoded = attempt(body)
    if isinstance(decoded, DecodeError):
        if decoded.kind == "malformed":
            assert field == "v"
        else:
            assert decoded.kind == "invalid_body", decoded
            assert field != "v", (field, depth)
            assert read or depth > 100, (field, depth)
        return
    assert not read, (field, depth)
    assert field != "v", (field, depth)
    assert depth < 200, (field, depth)
    assert decoded == message


def inbox() -> Inbox:
    health = ChannelHealth(
        TrustRules(15_000, 500, ["staleless"]),
        [SourceSpec("users", "profiles")],
        clock=ManualClock(1_800_000_000_000),
    )
    health.mark_subscribed("q")
    return Inbox(health, Caches(), tables={"staleless-users": "users"})


@SETTINGS
@given(st.one_of(bodies, json_values.map(dumps)))
def test_the_inbox_never_raises(body: str) -> None:
    received = inbox().receive(body)
    assert received.outcome in ("applied", "give_up", "malformed")
    if received.tick is not None:
        assert received.outcome == "applied"

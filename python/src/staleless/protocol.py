"""The invalidation message the stream relay publishes and every task consumes (``protocol/src/lib.rs``).

A message names *what changed* (keys and the stream position of the change), never the changed
data: subscribers evict and re-read, so a message can be duplicated, reordered or replayed
without harm. Wire format (JSON, one object per SNS message)::

    {"v":1,"kind":"invalidate","source":"users",
     "keys":[{"id":"u-1","seq":"4100000000000000000001","at_ms":1732500000123}]}
    {"v":1,"kind":"flush_all","reason":"operator request"}
    {"v":1,"kind":"flush_all","source":"users","reason":"unreadable stream record"}
    {"v":1,"kind":"tick","source":"users","written_at_ms":1732500000123,"writer":"staleless",
     "slot":"3","slots":["0","3"],"covered":true,"interval_ms":5000}

:func:`decode` reads a body exactly as the Rust ``decode`` does (``serde``/``serde_json``): what
one refuses the other refuses, for the same reason (:class:`DecodeError`'s ``kind``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar

from staleless import _json
from staleless._json import JsonError, Obj, Value

__all__ = [
    "DEFAULT_HEARTBEAT_WRITER",
    "FIRST_HEARTBEAT_SLOT",
    "PROTOCOL_VERSION",
    "SOURCE_MAX_LEN",
    "DecodeError",
    "DecodeErrorKind",
    "FlushAll",
    "GiveUp",
    "Invalidate",
    "Invalidation",
    "KeyVersion",
    "Tick",
    "compare_sequence_numbers",
    "decode",
    "decode_give_up",
    "encode",
    "is_valid_source",
    "table_of_stream_arn",
]

#: The protocol version this package writes and the only one it reads.
PROTOCOL_VERSION = 1
#: The longest source name.
SOURCE_MAX_LEN = 64
#: The heartbeat writer's name when none is configured (``protocol/src/keys.rs``).
DEFAULT_HEARTBEAT_WRITER = "staleless"
#: The slot of a writer that predates slots (``HEARTBEAT#<writer>``).
FIRST_HEARTBEAT_SLOT = "0"

_T = TypeVar("_T")

_SOURCE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def is_valid_source(name: object) -> bool:
    """Whether ``name`` is a source name: 1 to 64 of ASCII letters, digits, ``_``, ``-`` and ``.``."""
    return isinstance(name, str) and _SOURCE.fullmatch(name) is not None


def compare_sequence_numbers(left: str, right: str) -> int:
    """Numeric order of two stream sequence numbers given as digit strings: -1, 0 or 1."""
    left, right = left.lstrip("0"), right.lstrip("0")
    left_key, right_key = (len(left), left), (len(right), right)
    return (left_key > right_key) - (left_key < right_key)


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if _json.has_surrogate(value):
        raise ValueError(f"{what} holds a lone surrogate: not a Rust string")


def _check_optional_text(what: str, value: object) -> None:
    if value is not None:
        _check_text(what, value)


def _check_source(what: str, value: object) -> None:
    if not is_valid_source(value):
        raise ValueError(f"{what}: {value!r} is not a source name (1 to 64 of A-Z, a-z, 0-9, '_', '-', '.')")


def _check_integer(what: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside [{low}, {high}]")


@dataclass(frozen=True)
class KeyVersion:
    """One changed key and the version of the change that invalidated it."""

    #: The id whose cached entries are now stale.
    id: str
    #: Stream position of the change (a string of digits; compare with :func:`compare_sequence_numbers`).
    seq: str
    #: The record's approximate creation time, Unix ms (for the invalidation lag).
    at_ms: int

    def __post_init__(self) -> None:
        _check_text("id", self.id)
        _check_text("seq", self.seq)
        _check_integer("at_ms", self.at_ms, _json.I64_MIN, _json.I64_MAX)


@dataclass(frozen=True)
class Invalidate:
    """Evict these keys from the caches of ``source``."""

    source: str
    #: The changed keys (kept as a tuple).
    keys: Sequence[KeyVersion] = ()

    def __post_init__(self) -> None:
        _check_source("source", self.source)
        keys = tuple(self.keys)
        for key in keys:
            if not isinstance(key, KeyVersion):
                raise TypeError(f"keys must be KeyVersion, not {type(key).__name__}")
        object.__setattr__(self, "keys", keys)


@dataclass(frozen=True)
class FlushAll:
    """Clear the caches of ``source``, or every cache when it is ``None``."""

    source: str | None = None
    #: Free text for the logs.
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.source is not None:
            _check_source("source", self.source)
        _check_optional_text("reason", self.reason)


@dataclass(frozen=True)
class Tick:
    """A heartbeat of ``source`` crossed the whole path, proving it up to ``written_at_ms``."""

    source: str
    #: When the heartbeat writer wrote it, Unix ms (the writer's clock).
    written_at_ms: int
    #: The writer's name; a tick without one is refused.
    writer: str | None = None
    #: The heartbeat item (slot) it came from; absent means slot ``0``.
    slot: str | None = None
    #: Every slot the writer writes into the table (kept as a tuple); absent means ``[slot]``.
    slots: Sequence[str] | None = None
    #: Whether those slots cover every open shard of the stream; absent means yes.
    covered: bool | None = None
    #: The writer's interval between heartbeats, ms.
    interval_ms: int | None = None

    def __post_init__(self) -> None:
        _check_source("source", self.source)
        _check_integer("written_at_ms", self.written_at_ms, _json.I64_MIN, _json.I64_MAX)
        _check_optional_text("writer", self.writer)
        _check_optional_text("slot", self.slot)
        if self.slots is not None:
            if isinstance(self.slots, str):
                raise TypeError("slots must be a sequence of str, not a str")
            slots = tuple(self.slots)
            for slot in slots:
                _check_text("slots[]", slot)
            object.__setattr__(self, "slots", slots)
        if self.covered is not None and type(self.covered) is not bool:
            raise TypeError(f"covered must be a bool, not {type(self.covered).__name__}")
        if self.interval_ms is not None:
            _check_integer("interval_ms", self.interval_ms, 0, _json.U64_MAX)


#: What a subscriber must do.
Invalidation: TypeAlias = Invalidate | FlushAll | Tick

DecodeErrorKind = Literal["malformed", "unsupported_version", "invalid_body"]


class DecodeError(Exception):
    """Why a queue body is not an :data:`Invalidation`.

    ``kind`` is ``malformed`` (not JSON, or not an object with a ``v`` that is a 32-bit unsigned
    integer), ``unsupported_version`` (another version: ``found``), or ``invalid_body`` (version 1
    of the wrong shape).
    """

    def __init__(self, kind: DecodeErrorKind, detail: str, found: int | None = None) -> None:
        self.kind: DecodeErrorKind = kind
        self.detail = detail
        self.found = found
        super().__init__(self._message())

    def _message(self) -> str:
        if self.kind == "malformed":
            return f"malformed invalidation message: {self.detail}"
        if self.kind == "unsupported_version":
            return f"unsupported invalidation protocol version {self.found} (this reader knows {PROTOCOL_VERSION})"
        return f"invalid version {PROTOCOL_VERSION} invalidation message: {self.detail}"


class _Invalid(Exception):
    """A value of the wrong shape (becomes an ``invalid_body`` error, or no give-up)."""


def _fields(pairs: Sequence[tuple[str, Value]], known: frozenset[str], what: str) -> dict[str, Value]:
    """The known fields of a struct's pairs; a known field twice is an error, unknown ones are
    ignored (serde's derived ``visit_map``)."""
    found: dict[str, Value] = {}
    for key, value in pairs:
        if key in known:
            if key in found:
                raise _Invalid(f"duplicate field `{key}` in {what}")
            found[key] = value
    return found


def _string(value: Value, what: str) -> str:
    if type(value) is not str:
        raise _Invalid(f"{what}: expected a string")
    return value


def _optional_string(value: Value, what: str) -> str | None:
    return None if value is None else _string(value, what)


def _source(value: Value, what: str) -> str:
    name = _string(value, what)
    if not is_valid_source(name):
        raise _Invalid(f"{what}: {name!r} is not a source name (1 to 64 of A-Z, a-z, 0-9, '_', '-', '.')")
    return name


def _i64(value: Value, what: str) -> int:
    if type(value) is not int or not _json.I64_MIN <= value <= _json.I64_MAX:
        raise _Invalid(f"{what}: expected an i64")
    return value


def _u64(value: Value, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _json.U64_MAX:
        raise _Invalid(f"{what}: expected a u64")
    return value


def _required(found: dict[str, Value], name: str, what: str) -> Value:
    if name not in found:
        raise _Invalid(f"missing field `{name}` in {what}")
    return found[name]


_KEY_FIELDS = ("id", "seq", "at_ms")


def _decoded(cls: type[_T], **fields: object) -> _T:
    """An instance of a message dataclass from decoded (already checked) fields, without checking
    them again: a message of thousands of keys decodes in one pass."""
    instance = object.__new__(cls)
    for name, field_value in fields.items():
        object.__setattr__(instance, name, field_value)
    return instance


def _key_version(value: Value) -> KeyVersion:
    # The usual shape first: exactly the three fields, of the right types.
    if isinstance(value, tuple) and len(value) == len(_KEY_FIELDS):
        fields = dict(value)
        id_, seq, at_ms = fields.get("id"), fields.get("seq"), fields.get("at_ms")
        if type(id_) is str and type(seq) is str and type(at_ms) is int and _json.I64_MIN <= at_ms <= _json.I64_MAX:
            return _decoded(KeyVersion, id=id_, seq=seq, at_ms=at_ms)
    # serde reads a struct from a map or, field by field, from a sequence of exactly its fields.
    if isinstance(value, tuple):
        found = _fields(value, frozenset(_KEY_FIELDS), "a key")
        items = [_required(found, name, "a key") for name in _KEY_FIELDS]
    elif isinstance(value, list):
        if len(value) != len(_KEY_FIELDS):
            raise _Invalid(f"a key as a sequence has {len(_KEY_FIELDS)} elements, not {len(value)}")
        items = value
    else:
        raise _Invalid("a key: expected an object")
    return KeyVersion(
        id=_string(items[0], "id"),
        seq=_string(items[1], "seq"),
        at_ms=_i64(items[2], "at_ms"),
    )


_VARIANTS = ("invalidate", "flush_all", "tick")
_INVALIDATE_FIELDS = frozenset({"source", "keys"})
_FLUSH_FIELDS = frozenset({"source", "reason"})
_TICK_FIELDS = frozenset({"source", "written_at_ms", "writer", "slot", "slots", "covered", "interval_ms"})


def _variant(tag: Value) -> str:
    # A variant identifier is its name or, as serde allows, its index.
    if type(tag) is str:
        if tag in _VARIANTS:
            return tag
        raise _Invalid(f"unknown variant `{tag}`, expected one of `invalidate`, `flush_all`, `tick`")
    if type(tag) is int and 0 <= tag < len(_VARIANTS):
        return _VARIANTS[tag]
    raise _Invalid("kind: expected a variant name")


def _invalidation(top: Obj) -> Invalidation:
    """The body of a version-1 envelope (``v`` already read): ``serde``'s internally tagged enum."""
    tag: Value = None
    tagged = False
    content: list[tuple[str, Value]] = []
    for key, value in top:
        if key == "v":
            continue
        if key == "kind":
            if tagged:
                raise _Invalid("duplicate field `kind`")
            tag, tagged = value, True
        else:
            content.append((key, value))
    if not tagged:
        raise _Invalid("missing field `kind`")
    kind = _variant(tag)
    if kind == "invalidate":
        found = _fields(content, _INVALIDATE_FIELDS, "invalidate")
        keys = _required(found, "keys", "invalidate")
        source = _source(_required(found, "source", "invalidate"), "source")
        if not isinstance(keys, list):
            raise _Invalid("keys: expected a sequence")
        return _decoded(Invalidate, source=source, keys=tuple(_key_version(key) for key in keys))
    if kind == "flush_all":
        found = _fields(content, _FLUSH_FIELDS, "flush_all")
        source_value = found.get("source")
        return FlushAll(
            source=None if source_value is None else _source(source_value, "source"),
            reason=_optional_string(found.get("reason"), "reason"),
        )
    found = _fields(content, _TICK_FIELDS, "tick")
    slots_value = found.get("slots")
    slots: tuple[str, ...] | None
    if slots_value is None:
        slots = None
    elif isinstance(slots_value, list):
        slots = tuple(_string(slot, "slots[]") for slot in slots_value)
    else:
        raise _Invalid("slots: expected a sequence")
    covered = found.get("covered")
    if covered is not None and type(covered) is not bool:
        raise _Invalid("covered: expected a boolean")
    interval = found.get("interval_ms")
    return Tick(
        source=_source(_required(found, "source", "tick"), "source"),
        written_at_ms=_i64(_required(found, "written_at_ms", "tick"), "written_at_ms"),
        writer=_optional_string(found.get("writer"), "writer"),
        slot=_optional_string(found.get("slot"), "slot"),
        slots=slots,
        covered=covered,
        interval_ms=None if interval is None else _u64(interval, "interval_ms"),
    )


def decode(body: str) -> Invalidation:
    """Reads one queue body, as the Rust ``decode`` does.

    Raises:
        DecodeError: ``malformed`` for anything that is not a JSON object with one ``v`` that is a
            32-bit unsigned integer, ``unsupported_version`` for another version than
            :data:`PROTOCOL_VERSION`, ``invalid_body`` when a version-1 body has the wrong shape.
    """
    if not isinstance(body, str):
        raise DecodeError("malformed", "not a text")
    # A struct also reads from a JSON array (`[2]` as version 2): only an object has a `v`.
    if not body.lstrip(" \t\n\r").startswith("{"):
        raise DecodeError("malformed", "not a JSON object")
    try:
        parsed = _json.parse(body)
    except JsonError as err:
        raise DecodeError("malformed", str(err)) from None
    top = parsed.value
    if not isinstance(top, tuple):  # pragma: no cover - a text starting with `{` parses to an object
        raise DecodeError("malformed", "not a JSON object")
    # First the version alone (serde_json decodes only the top-level keys and `v`).
    version: Value = None
    versions = 0
    for key, value in top:
        if parsed.may_hold_surrogates and _json.has_surrogate(key):
            raise DecodeError("malformed", "lone surrogate in a key")
        if key == "v":
            versions += 1
            version = value
    if versions == 0:
        raise DecodeError("malformed", "missing field `v`")
    if versions > 1:
        raise DecodeError("malformed", "duplicate field `v`")
    if type(version) is not int or not 0 <= version <= _json.U32_MAX:
        raise DecodeError("malformed", "`v` is not a 32-bit unsigned integer")
    if version != PROTOCOL_VERSION:
        raise DecodeError("unsupported_version", f"version {version}", found=version)
    # Then the whole envelope, every value decoded.
    problem = _json.content_error(parsed)
    if problem is not None:
        raise DecodeError("invalid_body", problem)
    try:
        return _invalidation(top)
    except _Invalid as err:
        raise DecodeError("invalid_body", str(err)) from None


def encode(invalidation: Invalidation) -> str:
    """The JSON text of ``invalidation`` in the current protocol version, byte for byte as the
    Rust ``Invalidation::encode`` writes it."""
    message: dict[str, object] = {"v": PROTOCOL_VERSION}
    if isinstance(invalidation, Invalidate):
        message["kind"] = "invalidate"
        message["source"] = invalidation.source
        message["keys"] = [{"id": key.id, "seq": key.seq, "at_ms": key.at_ms} for key in invalidation.keys]
    elif isinstance(invalidation, FlushAll):
        message["kind"] = "flush_all"
        if invalidation.source is not None:
            message["source"] = invalidation.source
        if invalidation.reason is not None:
            message["reason"] = invalidation.reason
    elif isinstance(invalidation, Tick):
        message["kind"] = "tick"
        message["source"] = invalidation.source
        message["written_at_ms"] = invalidation.written_at_ms
        optional: dict[str, object] = {
            "writer": invalidation.writer,
            "slot": invalidation.slot,
            "slots": None if invalidation.slots is None else list(invalidation.slots),
            "covered": invalidation.covered,
            "interval_ms": invalidation.interval_ms,
        }
        message.update((name, value) for name, value in optional.items() if value is not None)
    else:
        raise TypeError(f"not an invalidation: {type(invalidation).__name__}")
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def table_of_stream_arn(arn: str) -> str | None:
    """``staleless-users`` from ``arn:aws:dynamodb:<region>:<account>:table/staleless-users/stream/<label>``."""
    _, found, rest = arn.partition(":table/")
    if not found:
        return None
    name = rest.split("/", 1)[0]
    return name or None


@dataclass(frozen=True)
class GiveUp:
    """Records of a stream the event source mapping gave up on (AWS's on-failure message): every
    task flushes its caches of that stream's table."""

    stream_arn: str
    shard_id: str | None = None
    start_sequence_number: str | None = None
    end_sequence_number: str | None = None
    batch_size: int | None = None

    def table(self) -> str | None:
        """The table of the stream."""
        return table_of_stream_arn(self.stream_arn)


_GIVE_UP_FIELDS = ("streamArn", "shardId", "startSequenceNumber", "endSequenceNumber", "batchSize")


def _clean_string(value: Value, what: str) -> str:
    text = _string(value, what)
    if _json.has_surrogate(text):
        raise _Invalid(f"{what}: lone surrogate")
    return text


def _optional_clean_string(value: Value, what: str) -> str | None:
    return None if value is None else _clean_string(value, what)


def _keys_clean(pairs: Sequence[tuple[str, Value]]) -> None:
    for key, _ in pairs:
        if _json.has_surrogate(key):
            raise _Invalid("lone surrogate in a key")


def _give_up(value: Value) -> GiveUp:
    items: list[Value]
    if isinstance(value, tuple):
        _keys_clean(value)
        found = _fields(value, frozenset(_GIVE_UP_FIELDS), "DDBStreamBatchInfo")
        items = [_required(found, "streamArn", "DDBStreamBatchInfo")]
        items.extend(found.get(name) for name in _GIVE_UP_FIELDS[1:])
    elif isinstance(value, list):
        # From a sequence, field by field; the optional ones may be left off the end.
        if not 1 <= len(value) <= len(_GIVE_UP_FIELDS):
            raise _Invalid("DDBStreamBatchInfo as a sequence: wrong length")
        items = value + [None] * (len(_GIVE_UP_FIELDS) - len(value))
    else:
        raise _Invalid("DDBStreamBatchInfo: expected an object")
    batch_size = items[4]
    return GiveUp(
        stream_arn=_clean_string(items[0], "streamArn"),
        shard_id=_optional_clean_string(items[1], "shardId"),
        start_sequence_number=_optional_clean_string(items[2], "startSequenceNumber"),
        end_sequence_number=_optional_clean_string(items[3], "endSequenceNumber"),
        batch_size=None if batch_size is None else _u64(batch_size, "batchSize"),
    )


def decode_give_up(body: str) -> GiveUp | None:
    """Reads a queue body as AWS's on-failure message of a DynamoDB stream event source mapping
    (its ``DDBStreamBatchInfo``); ``None`` for anything else, an invalidation message included."""
    try:
        top = _json.parse(body).value
        if isinstance(top, tuple):
            _keys_clean(top)
            found = _fields(top, frozenset({"DDBStreamBatchInfo"}), "the on-failure message")
            return _give_up(_required(found, "DDBStreamBatchInfo", "the on-failure message"))
        if isinstance(top, list) and len(top) == 1:
            return _give_up(top[0])
    except (JsonError, _Invalid, ValueError, TypeError):
        return None
    return None

"""The wire format: what ``decode`` reads, refuses and why, exactly as the Rust ``decode`` does
(``protocol/src/lib.rs`` and its tests), and the byte-exact ``encode``."""

from __future__ import annotations

import pytest

from staleless.protocol import (
    PROTOCOL_VERSION,
    DecodeError,
    FlushAll,
    GiveUp,
    Invalidate,
    KeyVersion,
    Tick,
    compare_sequence_numbers,
    decode,
    decode_give_up,
    encode,
    is_valid_source,
    table_of_stream_arn,
)


def kind_of(body: str) -> str:
    with pytest.raises(DecodeError) as raised:
        decode(body)
    return raised.value.kind


def key(id_: str, seq: str, at_ms: int = 1_732_500_000_123) -> KeyVersion:
    return KeyVersion(id=id_, seq=seq, at_ms=at_ms)


def test_the_wire_format_is_the_documented_one() -> None:
    text = encode(Invalidate(source="users", keys=[key("u-1", "4100000000000000000001")]))
    assert text == (
        '{"v":1,"kind":"invalidate","source":"users",'
        '"keys":[{"id":"u-1","seq":"4100000000000000000001","at_ms":1732500000123}]}'
    )
    assert decode('{"v":1,"kind":"flush_all","reason":"operator request"}') == FlushAll(reason="operator request")
    one_source = FlushAll(source="roles", reason="unreadable record")
    text = encode(one_source)
    assert text == '{"v":1,"kind":"flush_all","source":"roles","reason":"unreadable record"}'
    assert decode(text) == one_source
    assert PROTOCOL_VERSION == 1


def test_ticks_round_trip_and_have_the_documented_form() -> None:
    tick = Tick(source="roles", written_at_ms=1_732_500_000_123, writer="staleless", interval_ms=5_000)
    text = encode(tick)
    assert text == (
        '{"v":1,"kind":"tick","source":"roles","written_at_ms":1732500000123,"writer":"staleless","interval_ms":5000}'
    )
    assert decode(text) == tick
    assert decode('{"v":1,"kind":"tick","source":"users","written_at_ms":1}') == Tick(source="users", written_at_ms=1)
    per_shard = Tick(source="users", written_at_ms=1, writer="staleless", slot="3", slots=["0", "3"], covered=True)
    text = encode(per_shard)
    assert text == (
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"writer":"staleless",'
        '"slot":"3","slots":["0","3"],"covered":true}'
    )
    assert decode(text) == per_shard
    assert per_shard.slots == ("0", "3")
    assert kind_of('{"v":1,"kind":"tick","source":"users"}') == "invalid_body"


def test_encode_escapes_as_serde_json_does() -> None:
    reason = 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f slash / é 😀'
    text = encode(FlushAll(reason=reason))
    assert text == (
        '{"v":1,"kind":"flush_all","reason":"quote \\" backslash \\\\ newline \\n tab \\t bell \\u0007 '
        'del \x7f slash / é 😀"}'
    )
    assert decode(text) == FlushAll(reason=reason)


def test_an_unknown_version_is_a_typed_error() -> None:
    with pytest.raises(DecodeError) as raised:
        decode('{"v":2,"kind":"evict_everything_new"}')
    assert raised.value.kind == "unsupported_version"
    assert raised.value.found == 2
    assert "version 2" in str(raised.value)


def test_a_source_is_any_well_formed_name() -> None:
    decoded = decode('{"v":1,"kind":"invalidate","source":"org-units.v2","keys":[]}')
    assert decoded == Invalidate(source="org-units.v2", keys=())
    for bad in ["", "a b", "é", "x" * 65, "users\n"]:
        assert not is_valid_source(bad)
        with pytest.raises(ValueError, match="source"):
            Invalidate(source=bad)
    assert is_valid_source("x" * 64)
    assert not is_valid_source(7)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        "[2]",
        "[1]",
        "{}",
        '{"v":"1"}',
        '{"v":-1}',
        "\x00",
        "null",
        "{",
        '{"v":1.0,"kind":"flush_all"}',
        '{"v":1e0,"kind":"flush_all"}',
        '{"v":-0,"kind":"flush_all"}',
        '{"v":true,"kind":"flush_all"}',
        '{"v":null,"kind":"flush_all"}',
        '{"v":4294967296,"kind":"flush_all"}',
        '{"v":1e400,"kind":"flush_all"}',
        '{"v":1,"kind":"flush_all","v":1}',
        '{"v":1,"kind":"flush_all"} x',
        '{"v":1,"kind":"flush_all",}',
        '{"v":NaN,"kind":"flush_all"}',
        '{"v":1,"kind":"flush_all","x":Infinity}',
        '{"v":01,"kind":"flush_all"}',
        '{"\\ud800":1,"v":1,"kind":"flush_all"}',
        '{"v":1,"kind":"flush_all","x":"\x01"}',
        '{"v":1,"kind":"flush_all","x":"\\x"}',
        '\ufeff{"v":1,"kind":"flush_all"}',
        '{"v":1,"kind":"flush_all","x":\u0661}',
    ],
)
def test_malformed_bodies_are_typed_errors(body: str) -> None:
    assert kind_of(body) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        '{"v":1}',
        '{"v":1,"kind":"invalidate","source":"no spaces","keys":[]}',
        '{"v":1,"kind":"invalidate","source":"","keys":[]}',
        '{"v":1,"kind":"invalidate","source":7,"keys":[]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":[{"id":1}]}',
        '{"v":1,"kind":"reboot"}',
        '{"v":1,"kind":true}',
        '{"v":1,"kind":3}',
        '{"v":1,"kind":-1}',
        '{"v":1,"kind":null}',
        '{"v":1,"kind":"tick","kind":"tick","source":"users","written_at_ms":1}',
        '{"v":1,"kind":"invalidate","source":"users","source":"users","keys":[]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"a","id":"a","seq":"1","at_ms":1}]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":null}',
        '{"v":1,"kind":"invalidate","source":null,"keys":[]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":[["a","1"]]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":[["a","1",1,2]]}',
        '{"v":1,"kind":"invalidate","source":"users","keys":["a"]}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":-0}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1.5}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":9223372036854775808}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":-9223372036854775809}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"interval_ms":-5}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"interval_ms":18446744073709551616}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"covered":1}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"slots":"0"}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":1,"slots":[0]}',
        '{"v":1,"kind":"tick","source":"users","written_at_ms":"1"}',
        '{"v":1,"kind":"flush_all","source":7}',
        '{"v":1,"kind":"flush_all","reason":1}',
        # Every value is decoded, known or not: out of range, a lone surrogate, too deep.
        '{"v":1,"kind":"flush_all","x":1e400}',
        '{"v":1,"kind":"flush_all","x":{"y":-1e999}}',
        '{"v":1,"kind":"flush_all","x":"\\ud800"}',
        '{"v":1,"kind":"flush_all","x":{"\\udc00":1}}',
        '{"v":1,"kind":"flush_all","reason":"\\ud83d"}',
        '{"v":1,"kind":"flush_all","x":' + "[" * 127 + "]" * 127 + "}",
        '{"v":1,"kind":"flush_all","x":' + '{"a":' * 127 + "0" + "}" * 127 + "}",
        '{"v":1,"kind":"flush_all","x":' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_invalid_bodies_are_typed_errors(body: str) -> None:
    assert kind_of(body) == "invalid_body"


@pytest.mark.parametrize(
    "body",
    [
        '{"v":2,"kind":"flush_all","x":1e400}',
        '{"v":2,"x":"\\ud800"}',
        '{"v":0}',
        '{"v":4294967295}',
        '{"v":2,"x":' + "[" * 5000 + "]" * 5000 + "}",
        '{"v":3,"x":{"v":1,"v":2}}',
    ],
)
def test_another_version_is_read_from_v_alone(body: str) -> None:
    assert kind_of(body) == "unsupported_version"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Unknown fields are ignored, duplicated or not, whatever they hold within the limits.
        ('{"v":1,"kind":"flush_all","x":1,"x":[2]}', FlushAll()),
        ('{"v":1,"kind":"flush_all","x":' + "[" * 126 + "]" * 126 + "}", FlushAll()),
        ('{"v":1,"kind":"flush_all","x":1e308,"y":-0,"z":123456789012345678901234567890}', FlushAll()),
        ('{"v":1,"kind":"flush_all","x":"\\ud83d\\ude00"}', FlushAll()),
        ('{"v":1,"kind":"flush_all","source":null,"reason":null}', FlushAll()),
        ('{"v":1,"kind":"flush_all","keys":"not read by a flush"}', FlushAll()),
        ('{"kind":"flush_all","v":1}', FlushAll()),
        (' \n\t\r{"v":1,"kind":"flush_all"} \n', FlushAll()),
        ('{"v":1,"kind":"flush_all","reason":"\\u00e9\\n"}', FlushAll(reason="é\n")),
        ('{"\\u0076":1,"kind":"flush_all"}', FlushAll()),
        # serde reads a variant by its index, and a struct from a sequence of its fields.
        ('{"v":1,"kind":1}', FlushAll()),
        ('{"v":1,"kind":0,"source":"users","keys":[["a","7",-5]]}', Invalidate("users", [KeyVersion("a", "7", -5)])),
        ('{"v":1,"kind":2,"source":"users","written_at_ms":-9223372036854775808}', Tick("users", -(2**63))),
        (
            '{"v":1,"kind":"tick","source":"users","written_at_ms":9223372036854775807,"interval_ms":18446744073709551615}',
            Tick("users", 2**63 - 1, interval_ms=2**64 - 1),
        ),
        (
            '{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"a","seq":"1","at_ms":0,"shard":"x","shard":"y"}]}',
            Invalidate("users", [KeyVersion("a", "1", 0)]),
        ),
    ],
)
def test_what_a_reader_accepts(body: str, expected: object) -> None:
    assert decode(body) == expected


def test_decode_never_raises_anything_else() -> None:
    for body in [None, b'{"v":1}', 7]:
        with pytest.raises(DecodeError):
            decode(body)  # type: ignore[arg-type]


_ON_FAILURE = """{"requestContext":{"requestId":"r","functionArn":"arn:aws:lambda:us-east-1:1:function:relay",
    "condition":"RetryAttemptsExhausted","approximateInvokeCount":11},
    "responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},
    "version":"1.0","timestamp":"2026-12-04T10:00:00.000Z",
    "DDBStreamBatchInfo":{"shardId":"shardId-0001","startSequenceNumber":"41","endSequenceNumber":"42",
    "approximateArrivalOfFirstRecord":"2026-12-04T09:59:00Z","approximateArrivalOfLastRecord":"2026-12-04T09:59:01Z",
    "batchSize":2,"streamArn":"arn:aws:dynamodb:us-east-1:1:table/staleless-users/stream/2026-01-01T00:00:00.000"}}"""


def test_a_give_up_is_read_from_the_on_failure_message_and_nothing_else() -> None:
    give_up = decode_give_up(_ON_FAILURE)
    assert give_up is not None
    assert give_up.table() == "staleless-users"
    assert give_up.batch_size == 2
    assert give_up.shard_id == "shardId-0001"
    assert (give_up.start_sequence_number, give_up.end_sequence_number) == ("41", "42")
    for other in [
        '{"v":1,"kind":"flush_all"}',
        '{"DDBStreamBatchInfo":{}}',
        "not json",
        '{"DDBStreamBatchInfo":{"streamArn":7}}',
        '{"DDBStreamBatchInfo":{"streamArn":"a"},"DDBStreamBatchInfo":{"streamArn":"b"}}',
        '{"DDBStreamBatchInfo":{"streamArn":"a","batchSize":-1}}',
        '{"DDBStreamBatchInfo":{"streamArn":"a","batchSize":1.0}}',
        '{"DDBStreamBatchInfo":{"streamArn":"\\ud800"}}',
        '{"DDBStreamBatchInfo":null}',
        "[]",
        '[{"streamArn":"a"},{}]',
        '[["a",null,null,null,1,2]]',
        "",
    ]:
        assert decode_give_up(other) is None, other
    # serde reads the structs from sequences too, optional fields left off the end.
    assert decode_give_up('[["arn:aws:dynamodb:r:1:table/t/stream/x", "s"]]') == GiveUp(
        "arn:aws:dynamodb:r:1:table/t/stream/x", shard_id="s"
    )
    assert decode_give_up('{"DDBStreamBatchInfo":{"streamArn":"a","x":"\\ud800","y":1e999}}') == GiveUp("a")


def test_the_table_of_a_stream_arn() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/staleless-users/stream/2026-01-01T00:00:00.000"
    assert table_of_stream_arn(arn) == "staleless-users"
    assert table_of_stream_arn("arn:aws:dynamodb:us-east-1:1:table/") is None
    assert table_of_stream_arn("arn:aws:sqs:us-east-1:1:queue") is None
    assert table_of_stream_arn("x:table/t") == "t"


def test_sequence_numbers_order_numerically() -> None:
    assert compare_sequence_numbers("9", "10") == -1
    assert compare_sequence_numbers("000120", "119") == 1
    assert compare_sequence_numbers("0042", "42") == 0


def test_messages_refuse_values_rust_cannot_hold() -> None:
    with pytest.raises(ValueError, match="at_ms"):
        KeyVersion("a", "1", 2**63)
    with pytest.raises(TypeError):
        KeyVersion("a", "1", True)
    with pytest.raises(ValueError, match="surrogate"):
        FlushAll(reason="\ud800")
    with pytest.raises(ValueError, match="interval_ms"):
        Tick("users", 1, interval_ms=-1)
    with pytest.raises(TypeError):
        Tick("users", 1, slots="0")
    with pytest.raises(TypeError):
        Tick("users", 1, covered=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode("flush")  # type: ignore[arg-type]

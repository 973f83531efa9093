"""The envelope: every kind round-trips, frames coalesce and split by size, and anything that is
not a well-formed frame of this version is a ProtocolError with a clear message, never a crash."""

from __future__ import annotations

import random
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
import pytest

from isolation import DEFAULT_MAX_FRAME_BYTES, ProtocolError, unpack_untrusted
from isolation._protocol import (
    FRAME_HEADER_BYTES,
    VERSION,
    ErrorCode,
    Kind,
    build_frames,
    check_message,
    decode_frame,
    pack,
)

EXAMPLES: dict[Kind, tuple[Any, ...]] = {
    Kind.CALL: ("prices", "get_price", [{"base": "ETH", "quote": "USD"}], {"fresh": True}),
    Kind.RESULT: ({"price": 3012.5, "at": "2024-05-01T12:00:00"},),
    Kind.ERROR: ("ValueError", "no such pair", "Traceback ...", int(ErrorCode.RAISED)),
    Kind.CANCEL: (),
    Kind.STREAM_OPEN: ("events", "subscribe", [], {}, 64),
    Kind.STREAM_ITEM: ([1, b"\x00\xff", None, 2.5],),
    Kind.STREAM_END: (),
    Kind.STREAM_ERROR: ("mod.Boom", "boom", "Traceback ...", int(ErrorCode.SERIALIZATION)),
    Kind.CREDIT: (32,),
    Kind.CONTROL: ("hello", {"token": "t0k", "pid": 1234}),
}


def frame_of(*messages: list[Any]) -> bytes:
    return bytes(msgpack.packb(list(messages), use_bin_type=True))


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name)
def test_every_kind_round_trips(kind: Kind) -> None:
    """A message of each kind decodes to exactly the fields it was packed with."""
    fields = EXAMPLES[kind]
    (frame,) = build_frames([pack(kind, 7, *fields)], DEFAULT_MAX_FRAME_BYTES)
    assert decode_frame(frame) == [[VERSION, kind, 7, *fields]]


@pytest.mark.parametrize("count", [1, 15, 16, 70_000])
def test_messages_coalesce_into_one_frame_in_order(count: int) -> None:
    """Many messages share one frame (every msgpack array header size), order preserved."""
    messages = [pack(Kind.CREDIT, i, 1) for i in range(1, count + 1)]
    (frame,) = build_frames(messages, DEFAULT_MAX_FRAME_BYTES)
    decoded = decode_frame(frame)
    assert [message[2] for message in decoded] == list(range(1, count + 1))


def test_frames_split_at_the_size_limit() -> None:
    """Messages that do not fit one frame go to the next; no frame is over the limit."""
    limit = 1000
    messages = [pack(Kind.RESULT, i, b"x" * 90) for i in range(1, 101)]
    frames = build_frames(messages, limit)
    assert len(frames) > 1
    assert all(len(frame) <= limit for frame in frames)
    ids = [message[2] for frame in frames for message in decode_frame(frame, limit)]
    assert ids == list(range(1, 101))


def test_a_message_filling_the_whole_budget_still_fits() -> None:
    """The sender may use max_frame_bytes minus the frame header for one message."""
    limit = 4096
    size = limit
    while len(message := pack(Kind.RESULT, 1, b"x" * size)) > limit - FRAME_HEADER_BYTES:
        size -= 1
    payload = b"x" * size
    assert len(message) == limit - FRAME_HEADER_BYTES
    (frame,) = build_frames([message], limit)
    assert decode_frame(frame, limit)[0][3] == payload


def test_oversized_frame_is_rejected_before_decoding() -> None:
    frame = frame_of([VERSION, Kind.RESULT, 1, b"x" * 2000])
    with pytest.raises(ProtocolError, match=r"frame of \d+ bytes, over the 1000-byte limit"):
        decode_frame(frame, 1000)


@pytest.mark.parametrize(
    "frame",
    [b"\xc1", b"\x91\xc1", b"not msgpack at all \xff\xfe", b""],
    ids=["reserved-byte", "reserved-inside-array", "text", "empty"],
)
def test_garbage_bytes_are_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"not valid msgpack|expected a non-empty array"):
        decode_frame(frame)


def test_truncated_frame_is_a_protocol_error() -> None:
    (frame,) = build_frames([pack(Kind.CALL, 1, *EXAMPLES[Kind.CALL])], DEFAULT_MAX_FRAME_BYTES)
    for cut in range(1, len(frame)):
        with pytest.raises(ProtocolError, match="not valid msgpack"):
            decode_frame(frame[:cut])


def test_trailing_bytes_after_a_frame_are_a_protocol_error() -> None:
    (frame,) = build_frames([pack(Kind.CANCEL, 1)], DEFAULT_MAX_FRAME_BYTES)
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode_frame(frame + b"\x01")


def test_wrong_version_names_both_versions() -> None:
    frame = frame_of([VERSION + 1, Kind.CANCEL, 1])
    with pytest.raises(ProtocolError, match=rf"version {VERSION + 1}.*speaks version {VERSION}"):
        decode_frame(frame)


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (5, "int 5.*expected a non-empty array"),
        ([], "expected a non-empty array"),
        ({"v": 1}, "dict.*expected a non-empty array"),
        ([5], r"int 5 where a message \[v, kind, id, ...\] was expected"),
        ([[VERSION, Kind.CANCEL]], "where a message"),
        ([[True, Kind.CANCEL, 1]], "protocol version True"),
        ([[VERSION, 99, 1]], "unknown kind 99"),
        ([[VERSION, True, 1]], "unknown kind True"),
        ([[VERSION, "CALL", 1]], "unknown kind 'CALL'"),
        ([[VERSION, Kind.CANCEL, -1]], "CANCEL message with invalid id -1"),
        ([[VERSION, Kind.CANCEL, "1"]], "invalid id '1'"),
        ([[VERSION, Kind.CANCEL, 1, "extra"]], "CANCEL message with 1 fields, expected 0"),
        ([[VERSION, Kind.RESULT, 1]], "RESULT message with 0 fields, expected 1"),
        ([[VERSION, Kind.CALL, 1, 5, "m", [], {}]], "CALL message whose target field is int 5"),
        ([[VERSION, Kind.CALL, 1, "t", "m", {}, {}]], "whose args field is dict"),
        ([[VERSION, Kind.CALL, 1, "t", "m", [], []]], "whose kwargs field is list"),
        ([[VERSION, Kind.CREDIT, 1, 0]], "CREDIT message whose n field is int 0"),
        ([[VERSION, Kind.STREAM_OPEN, 1, "t", "m", [], {}, -5]], "whose credit field"),
        ([[VERSION, Kind.ERROR, 1, "T", "m", "tb", "0"]], "ERROR message whose code field"),
        ([[VERSION, Kind.CONTROL, 0, 7, None]], "CONTROL message whose name field is int 7"),
        ([[VERSION, Kind.CANCEL, 1], "x"], "str 'x' where a message"),
    ],
)
def test_wrong_shapes_are_a_protocol_error(payload: Any, complaint: str) -> None:
    """Valid msgpack of the wrong shape is refused as precisely as garbage is."""
    with pytest.raises(ProtocolError, match=complaint):
        decode_frame(bytes(msgpack.packb(payload, use_bin_type=True)))


def test_extension_types_are_refused() -> None:
    payload = [[VERSION, Kind.RESULT, 1, msgpack.ExtType(5, b"zz")]]
    with pytest.raises(ProtocolError, match="extension type 5 is not part of the protocol"):
        decode_frame(bytes(msgpack.packb(payload)))


def test_the_timestamp_extension_is_refused_too() -> None:
    """msgpack decodes its timestamp type (-1) by itself, before any hook: it is refused all
    the same, in a frame and by every other decoder of untrusted bytes."""
    payload = [[VERSION, Kind.RESULT, 1, msgpack.Timestamp(1_700_000_000, 5)]]
    with pytest.raises(ProtocolError, match=r"extension type -1 .* is not part of the protocol"):
        decode_frame(bytes(msgpack.packb(payload)))
    with pytest.raises(ValueError, match="max_ext_len"):
        unpack_untrusted(bytes(msgpack.packb({"v": msgpack.Timestamp(1, 0)})))


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    frame = b"\x91" * 200_000 + b"\xc0"
    with pytest.raises(ProtocolError):
        decode_frame(frame)


def test_random_bytes_and_mutated_frames_only_ever_raise_protocol_error() -> None:
    """Fuzz: whatever arrives, decoding returns messages or raises ProtocolError, nothing else."""
    rng = random.Random(20240501)
    valid = build_frames(
        [pack(kind, 3, *fields) for kind, fields in EXAMPLES.items()], DEFAULT_MAX_FRAME_BYTES
    )[0]
    samples = [rng.randbytes(rng.randrange(1, 64)) for _ in range(3000)]
    for _ in range(3000):
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    for sample in samples:
        try:
            messages = decode_frame(sample, 4096)
        except ProtocolError:
            continue
        assert all(isinstance(message, list) and message[0] == VERSION for message in messages)


def test_pack_refuses_what_msgpack_cannot_carry() -> None:
    """pack() raises the plain errors the Peer turns into SerializationError naming the call."""
    with pytest.raises(TypeError, match="cannot send object of type object"):
        pack(Kind.RESULT, 1, object())
    with pytest.raises(OverflowError):
        pack(Kind.RESULT, 1, 2**70)


def test_fast_acceptance_agrees_with_the_full_check() -> None:
    """decode_frame accepts a message exactly when check_message does, for messages whose
    fields are replaced by values of every msgpack type."""
    rng = random.Random(7)
    values: list[Any] = [0, 1, -1, 2**63, True, None, 1.5, "s", b"b", [], [1], {}, {"k": 1}]
    for kind, fields in EXAMPLES.items():
        base = [VERSION, int(kind), 3, *fields]
        for _ in range(400):
            message = list(base)
            for _ in range(rng.randrange(1, 3)):
                message[rng.randrange(len(message))] = rng.choice(values)
            if rng.random() < 0.2:
                message = message[: rng.randrange(len(message) + 1)]
            try:
                check_message(message)
                expected = True
            except ProtocolError:
                expected = False
            try:
                decode_frame(bytes(msgpack.packb([message], use_bin_type=True)))
                accepted = True
            except ProtocolError:
                accepted = False
            assert accepted == expected, message

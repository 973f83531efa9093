"""The envelope: how one message looks on the wire, and how a frame of messages is checked.

A message is a msgpack array ``[v, kind, id, *fields]``: ``v`` is the protocol version,
``kind`` a small integer (:class:`Kind`), ``id`` names the call or stream it belongs to (0 for
control messages). Arrays rather than maps keep the common call down to a few bytes over its
payload.

A ZeroMQ message carries a *frame*: a msgpack array of messages. The sender coalesces every
message produced in one event-loop pass into one frame, so 64 calls in flight cost one socket
write, not 64. Messages are packed one by one as they are produced (so an unencodable value
fails in the code that produced it) and the frame is built by writing an array header in front
of the concatenated messages, which is itself valid msgpack: the receiver decodes a frame with a
single ``unpackb``.

Kinds and their fields (after ``v, kind, id``)::

    CALL          target: str, method: str, args: list, kwargs: dict     caller -> server
    RESULT        value                                                 server -> caller
    ERROR         remote_type: str, message: str, traceback: str, code: int
    CANCEL        (none)                                                caller -> server
    STREAM_OPEN   target: str, method: str, args: list, kwargs: dict, credit: int
    STREAM_ITEM   value                                                 server -> consumer
    STREAM_END    (none)
    STREAM_ERROR  remote_type: str, message: str, traceback: str, code: int
    CREDIT        n: int (> 0)                                          consumer -> server
    CONTROL       name: str, body                                       either way, id 0

Ids are chosen by the side that starts a call or stream; the kind says whose id it is (CALL,
CANCEL, STREAM_OPEN and CREDIT carry the caller's ids, the others answer them), so both sides
count from 1 without clashing.

:func:`decode_frame` never trusts its input: oversized frames, bytes that are not msgpack,
truncated msgpack, a wrong version, an unknown kind or a field of the wrong type all raise
:class:`ProtocolError` naming what was wrong.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import pathlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

import msgpack  # type: ignore[import-untyped]  # ships no type information

from ._errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "VERSION",
    "ErrorCode",
    "Kind",
    "build_frames",
    "decode_frame",
    "pack",
    "pack_value",
    "wire_default",
]

VERSION: Final = 1
DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# A frame header is a msgpack array header: at most 5 bytes (0xdd + uint32 length).
FRAME_HEADER_BYTES: Final = 5
_MAX_ID: Final = 2**63 - 1


class Kind(enum.IntEnum):
    """The kind of a message, its second element."""

    CALL = 1
    RESULT = 2
    ERROR = 3
    CANCEL = 4
    STREAM_OPEN = 5
    STREAM_ITEM = 6
    STREAM_END = 7
    STREAM_ERROR = 8
    CREDIT = 9
    CONTROL = 10


class ErrorCode(enum.IntEnum):
    """What an ERROR or STREAM_ERROR message reports."""

    RAISED = 0  # the remote method raised; rebuilt as a RemoteError
    SERIALIZATION = 1  # a value failed to encode or to validate on the serving side


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_ID


def _is_str(value: object) -> bool:
    return type(value) is str


def _is_list(value: object) -> bool:
    return type(value) is list


def _is_dict(value: object) -> bool:
    return type(value) is dict


def _is_positive(value: object) -> bool:
    return type(value) is int and 0 < value <= _MAX_ID


def _is_credit(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_ID


def _anything(value: object) -> bool:
    return True


_Check = Callable[[object], bool]
_ERROR_FIELDS: tuple[tuple[str, _Check], ...] = (
    ("remote_type", _is_str),
    ("message", _is_str),
    ("traceback", _is_str),
    ("code", _is_int),
)
# Field names and checks per kind, after v, kind, id.
SCHEMA: Final[dict[int, tuple[tuple[str, _Check], ...]]] = {
    Kind.CALL: (("target", _is_str), ("method", _is_str), ("args", _is_list), ("kwargs", _is_dict)),
    Kind.RESULT: (("value", _anything),),
    Kind.ERROR: _ERROR_FIELDS,
    Kind.CANCEL: (),
    Kind.STREAM_OPEN: (
        ("target", _is_str),
        ("method", _is_str),
        ("args", _is_list),
        ("kwargs", _is_dict),
        ("credit", _is_credit),
    ),
    Kind.STREAM_ITEM: (("value", _anything),),
    Kind.STREAM_END: (),
    Kind.STREAM_ERROR: _ERROR_FIELDS,
    Kind.CREDIT: (("n", _is_positive),),
    Kind.CONTROL: (
        ("name", _is_str),
        ("body", _anything),
    ),
}
_LENGTHS: Final = {int(kind): 3 + len(fields) for kind, fields in SCHEMA.items()}


def wire_default(value: Any) -> Any:
    """msgpack ``default`` hook: the msgpack-able form of values pydantic leaves as objects."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID | decimal.Decimal | pathlib.PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, int):
        raise OverflowError(f"integer {value} does not fit in 64 bits")
    raise TypeError(f"cannot send object of type {type(value).__name__}")


_packb = msgpack.Packer(use_bin_type=True, autoreset=True, default=wire_default).pack


def pack(kind: int, msg_id: int, *fields: Any) -> bytes:
    """Encode one message. Raises TypeError, ValueError or OverflowError when a field cannot
    be packed (an object msgpack does not know, an integer over 64 bits)."""
    packed: bytes = _packb([VERSION, kind, msg_id, *fields])
    return packed


def pack_value(value: Any) -> bytes:
    """Encode a bare value the way :func:`pack` encodes fields (to find what refuses)."""
    packed: bytes = _packb(value)
    return packed


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def build_frames(messages: Iterable[bytes], max_frame_bytes: int) -> list[bytes]:
    """Group packed messages into as few frames as the size limit allows, keeping their order.

    Every message must already fit (``len(message) + FRAME_HEADER_BYTES <= max_frame_bytes``);
    the sender checks that when the message is produced, where the error can name the call.
    """
    budget = max_frame_bytes - FRAME_HEADER_BYTES
    frames: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for message in messages:
        if batch and size + len(message) > budget:
            frames.append(_array_header(len(batch)) + b"".join(batch))
            batch = []
            size = 0
        batch.append(message)
        size += len(message)
    if batch:
        frames.append(_array_header(len(batch)) + b"".join(batch))
    return frames


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def decode_frame(frame: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> list[list[Any]]:
    """Decode and check one frame; return its messages as ``[v, kind, id, *fields]`` lists.

    Raises ProtocolError when the frame is too large, is not msgpack, is truncated, or holds
    anything but well-formed messages of this protocol version.
    """
    if len(frame) > max_frame_bytes:
        raise ProtocolError(
            f"received a frame of {len(frame)} bytes, over the {max_frame_bytes}-byte limit; "
            "raise max_frame_bytes on both peers or send smaller values"
        )
    try:
        messages = msgpack.unpackb(
            frame,
            raw=False,
            use_list=True,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            timestamp=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(
            f"received a frame that is not valid msgpack ({len(frame)} bytes, "
            f"starting {frame[:16]!r}): {exc}; is something else writing to this socket?"
        ) from exc
    if type(messages) is not list or not messages:
        raise ProtocolError(
            f"received a frame holding {_describe(messages)}, expected a non-empty array of "
            "messages; is something else writing to this socket?"
        )
    fast = _FAST_CHECKS
    for message in messages:
        # The fast path accepts the common well-formed message in a few type checks; anything
        # it does not accept goes to check_message, which decides and names the problem.
        if not (
            type(message) is list
            and len(message) >= 3
            and message[0] == VERSION
            and type(message[0]) is int
            and type(message[2]) is int
            and 0 <= message[2] <= _MAX_ID
            and type(message[1]) is int
            and fast.get(message[1], _reject)(message)
        ):
            check_message(message)
    return messages


def _reject(message: list[Any]) -> bool:
    return False


def _ok_call(m: list[Any]) -> bool:
    return (
        len(m) == 7
        and type(m[3]) is str
        and type(m[4]) is str
        and type(m[5]) is list
        and type(m[6]) is dict
    )


def _ok_value(m: list[Any]) -> bool:
    return len(m) == 4


def _ok_error(m: list[Any]) -> bool:
    return (
        len(m) == 7
        and type(m[3]) is str
        and type(m[4]) is str
        and type(m[5]) is str
        and type(m[6]) is int
    )


def _ok_bare(m: list[Any]) -> bool:
    return len(m) == 3


def _ok_open(m: list[Any]) -> bool:
    return _ok_call(m[:7]) and len(m) == 8 and _is_credit(m[7])


def _ok_credit(m: list[Any]) -> bool:
    return len(m) == 4 and _is_positive(m[3])


def _ok_control(m: list[Any]) -> bool:
    return len(m) == 5 and type(m[3]) is str


_FAST_CHECKS: Final[dict[int, Callable[[list[Any]], bool]]] = {
    Kind.CALL: _ok_call,
    Kind.RESULT: _ok_value,
    Kind.ERROR: _ok_error,
    Kind.CANCEL: _ok_bare,
    Kind.STREAM_OPEN: _ok_open,
    Kind.STREAM_ITEM: _ok_value,
    Kind.STREAM_END: _ok_bare,
    Kind.STREAM_ERROR: _ok_error,
    Kind.CREDIT: _ok_credit,
    Kind.CONTROL: _ok_control,
}


def check_message(message: Any) -> None:
    """Raise ProtocolError unless ``message`` is a well-formed message of this version."""
    if type(message) is not list or len(message) < 3:
        raise ProtocolError(
            f"received {_describe(message)} where a message [v, kind, id, ...] was expected"
        )
    version, kind, msg_id = message[0], message[1], message[2]
    if version != VERSION or type(version) is not int:
        raise ProtocolError(
            f"received a message of protocol version {version!r}, this side speaks version "
            f"{VERSION}; run the same Minions version on both sides"
        )
    expected = _LENGTHS.get(kind) if type(kind) is int else None
    if expected is None:
        raise ProtocolError(f"received a message of unknown kind {kind!r}")
    if not _is_id(msg_id):
        raise ProtocolError(f"received a {Kind(kind).name} message with invalid id {msg_id!r}")
    if len(message) != expected:
        raise ProtocolError(
            f"received a {Kind(kind).name} message with {len(message) - 3} fields, "
            f"expected {expected - 3}"
        )
    for index, (name, check) in enumerate(SCHEMA[kind], start=3):
        if not check(message[index]):
            raise ProtocolError(
                f"received a {Kind(kind).name} message whose {name} field is "
                f"{_describe(message[index])}"
            )


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"

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
    "FrameDecoder",
    "Kind",
    "build_frames",
    "decode_frame",
    "pack",
    "pack_value",
    "unpack_untrusted",
    "unpacker_for",
    "wire_default",
]

VERSION: Final = 1
DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# A frame header is a msgpack array header: at most 5 bytes (0xdd + uint32 length).
FRAME_HEADER_BYTES: Final = 5
_MAX_ID: Final = 2**63 - 1
#: A frame larger than this is read by the decoder a chunk at a time.
_CHUNK_BYTES: Final = 64 * 1024


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


def unpacker_for(max_bytes: int, file_like: Any = None, read_size: int = 0) -> Any:
    """A msgpack ``Unpacker`` for untrusted input: no extension types at all, ``max_bytes``
    buffered at most; fed by :meth:`feed` or reading ``file_like``.

    msgpack decodes its timestamp extension (type -1) natively, before any ``ext_hook`` is
    asked; ``max_ext_len=0`` refuses every extension with data, that one included, and the hook
    refuses the empty ones.
    """
    return msgpack.Unpacker(
        file_like,
        read_size=read_size,
        raw=False,
        use_list=True,
        strict_map_key=False,
        ext_hook=_refuse_ext,
        max_ext_len=0,
        max_buffer_size=max(max_bytes, read_size, 1),
    )


def unpack_untrusted(data: bytes | memoryview) -> Any:
    """Decode one msgpack value from outside this process: no extension types (see
    :func:`unpacker`). Raises what msgpack raises (ValueError and its kin) for bad input."""
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=True,
        strict_map_key=False,
        ext_hook=_refuse_ext,
        max_ext_len=0,
    )


class _Chunks:
    """A frame read as a file, a chunk at a time (what msgpack's ``file_like`` asks for)."""

    __slots__ = ("_position", "_view")

    def __init__(self, frame: bytes | memoryview) -> None:
        self._view = memoryview(frame)
        self._position = 0

    def read(self, size: int) -> bytes:
        start = self._position
        self._position = min(start + size, len(self._view))
        return bytes(self._view[start : self._position])


class FrameDecoder:
    """Decodes frames one message at a time, checking each, so that a receiver can handle a
    large frame in slices and let the event loop run in between.

    :meth:`start` takes a frame and reads its header; :meth:`next` returns its messages in
    order while :attr:`pending` says more are left. The frame is read in chunks as messages are
    decoded, never copied whole. Every problem is a ProtocolError; after one the decoder must
    not be used again. A frame's messages are checked as they are read, so the first ones of a
    frame may have been handed out before a bad one further on is found.
    """

    __slots__ = ("_frame", "_max_frame", "_unpacker", "pending")

    _frame: bytes | memoryview

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max_frame = max_frame_bytes
        self._unpacker: Any = None
        self._frame = b""  # the current frame
        #: Messages of the current frame not read yet.
        self.pending = 0

    def start(self, frame: bytes | memoryview) -> None:
        """Begin a frame (the previous one must be finished): bytes, or a view of them (a
        ZeroMQ frame received without a copy)."""
        if len(frame) > self._max_frame:
            raise ProtocolError(
                f"received a frame of {len(frame)} bytes, over the {self._max_frame}-byte limit; "
                "raise max_frame_bytes on both peers or send smaller values"
            )
        self._frame = frame
        if len(frame) <= _CHUNK_BYTES:
            unpacker = self._unpacker = unpacker_for(self._max_frame)
            unpacker.feed(frame)
        else:
            # Read a chunk at a time as messages are decoded: never a copy of the whole frame.
            unpacker = self._unpacker = unpacker_for(
                self._max_frame, _Chunks(frame), read_size=_CHUNK_BYTES
            )
        try:
            count = unpacker.read_array_header()
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise _frame_error(frame) from exc
        if not count:
            raise _frame_error(frame)
        self.pending = count

    def next(self) -> list[Any]:
        """The next message of the frame, checked."""
        try:
            message = self._unpacker.unpack()
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise _not_msgpack(self._frame, exc) from exc
        self.pending -= 1
        if not self.pending and self._unpacker.tell() != len(self._frame):
            raise _not_msgpack(self._frame, "extra bytes after the last message")
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
            and _FAST_CHECKS.get(message[1], _reject)(message)
        ):
            try:
                check_message(message)
            except ProtocolError:
                # A frame that is not even msgpack says more about what is writing to the
                # socket than the first odd message in it does.
                _check_whole_frame(self._frame)
                raise
        return message  # type: ignore[no-any-return]


def decode_frame(frame: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> list[list[Any]]:
    """Decode and check one whole frame; return its messages as ``[v, kind, id, *fields]`` lists.

    Raises ProtocolError when the frame is too large, is not msgpack, is truncated, or holds
    anything but well-formed messages of this protocol version.
    """
    decoder = FrameDecoder(max_frame_bytes)
    decoder.start(frame)
    messages = []
    while decoder.pending:
        messages.append(decoder.next())
    return messages


def _not_msgpack(frame: bytes | memoryview, problem: object) -> ProtocolError:
    if "max_ext_len" in str(problem):
        problem = _extension_problem(frame)
    return ProtocolError(
        f"received a frame that is not valid msgpack ({len(frame)} bytes, "
        f"starting {bytes(frame[:16])!r}): {problem}; is something else writing to this socket?"
    )


def _check_whole_frame(frame: bytes | memoryview) -> None:
    try:
        unpack_untrusted(frame)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise _not_msgpack(frame, exc) from exc


def _extension_problem(frame: bytes | memoryview) -> str:
    """Name the extension type a frame carries (decoded again, permissively, only to say)."""
    try:
        msgpack.unpackb(frame, ext_hook=_refuse_ext, timestamp=0, strict_map_key=False)
    except ValueError as exc:
        if "extension type" in str(exc):
            return str(exc)
    except Exception:  # msgpack raises several unrelated types for bad input
        pass
    return "msgpack extension type -1 (timestamp) is not part of the protocol"


def _frame_error(frame: bytes | memoryview) -> ProtocolError:
    """Why a frame does not start with a non-empty array of messages (decoded once, to say)."""
    try:
        value = unpack_untrusted(frame)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        return _not_msgpack(frame, exc)
    return ProtocolError(
        f"received a frame holding {_describe(value)}, expected a non-empty array of "
        "messages; is something else writing to this socket?"
    )


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

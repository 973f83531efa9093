"""Checkpoints: what a durable workflow saves before each step, and how it is encoded.

A ``Checkpoint`` holds everything needed to resume a workflow in another process or after a
crash: the orchestration and workflow ids, the minion's identity, the event that started the
workflow, the context the steps have built so far, and the index and name of the step to run
next.

Encoding. The event and context are dataclasses, pydantic models, TypedDicts or msgspec
Structs (nested builtins, dataclasses, models, lists, dicts, Optional, datetime, Decimal, Enum,
...). Each is turned into plain data by the library that knows its type — a pydantic
``TypeAdapter``, or msgspec for a type that holds a ``msgspec.Struct`` (see
``minions.core.values``) — msgpack packs that, and on the way back the same library validates
the data into the declared types, so a resumed step sees real ``datetime``/``Decimal``/nested
objects, never dicts. Nothing is pickled: a checkpoint cannot run code when it is read. The
record is a msgpack array::

    ["mnck", 3, orchestration_id, workflow_id, minion, next_step_index,
     event_type, event_fingerprint, context_type, context_fingerprint, event, context, next_step,
     {"attempts": n, "error": "...", "failed": true}]

``next_step`` is the name of the step at ``next_step_index`` (``@minion_step(name=...)``, by
default the method's name), checked when the workflow resumes: a checkpoint whose step is now
another one (steps renamed or reordered) is not resumed at the wrong step.

The last field is the workflow's history, for the people operating it (``minions workflows``):
how many times its steps were started (1 for a new workflow, one more at each resume), the last
error it met, and whether it failed (kept for a retry under ``keep_failed``, see
``minions.workflows.store``). Each key is optional, and unknown keys are ignored, so a later
version may add some. Formats 1 (12 fields, without the step name) and 2 (13 fields, without
the history) are still read.

Encoding once per workflow. Of a workflow's checkpoints only the step and the context change,
so ``CheckpointCodec.for_workflow`` validates and packs the ids, the types and the event once,
when the workflow starts, and each checkpoint packs just the step index, the context and the
step name between those bytes (a msgpack array is its elements' encodings in a row, so the
result is byte for byte what ``encode`` gives). The event is read-only to the steps; were a step
to change its fields anyway, those changes are not saved.

Type fingerprints. A workflow saved by one version of a program may be resumed by the next.
If the event or context type changed shape meanwhile, old data would be decoded into the new
type wrongly or not at all, so each type's *structure* is fingerprinted: a hash of its field
names and field types, recursively (``type_fingerprint``). It does not depend on ``id()``,
``hash()``, the module a class lives in or its docstrings, so it is stable across processes and
runs, and it changes when a field is added, removed, renamed or retyped. A mismatch raises
``IncompatibleCheckpoint``: run the old code until its workflows finish (drain), then deploy.

Errors, grouped by what the caller does::

    CheckpointError (a MinionsError)
    ├── CheckpointEncodeError    the event or context cannot be encoded: fix the program's types
    ├── CorruptCheckpoint        the blob is not a checkpoint (truncated, garbage): skip and log it
    └── IncompatibleCheckpoint   saved with other event/context types: drain with the old code first
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack  # type: ignore[import-untyped]  # ships no type information
import pydantic
import pydantic_core

from ..core.errors import MinionsError
from ..core.values import (
    InvalidValue,
    instance_type,
    is_struct,
    plain_codec,
    pydantic_type,
    struct_fields,
    uses_msgspec,
)

__all__ = [
    "Checkpoint",
    "CheckpointCodec",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointHeader",
    "CorruptCheckpoint",
    "IncompatibleCheckpoint",
    "WorkflowEncoder",
    "checkpoint_codec",
    "read_header",
    "read_plain",
    "type_fingerprint",
]

EventT = TypeVar("EventT")
ContextT = TypeVar("ContextT")

_MAGIC = "mnck"
_FORMAT = 3
#: Formats this version reads, and their number of fields: 1 had no step name, 2 no history.
_READABLE = {1: 12, 2: 13, 3: 14}
#: The longest last error kept in a checkpoint, in characters.
MAX_ERROR_CHARS = 500
_FINGERPRINT_VERSION = "1"


class CheckpointError(MinionsError):
    """A checkpoint could not be encoded or decoded."""


class CheckpointEncodeError(CheckpointError):
    """The event or context cannot be encoded; retrying will not help."""


class CorruptCheckpoint(CheckpointError):
    """The stored bytes are not a readable checkpoint."""


class IncompatibleCheckpoint(CheckpointError):
    """The checkpoint was saved with event or context types of a different shape."""


@dataclass(frozen=True, slots=True)
class Checkpoint(Generic[EventT, ContextT]):
    """A workflow's saved state: resume it by running step ``next_step_index`` onwards."""

    orchestration_id: str
    workflow_id: str
    #: The minion's identity (its ``@minion_id`` or module path and class name).
    minion: str
    event: EventT
    context: ContextT
    next_step_index: int = 0
    #: The name of that step when it was saved (``None``: not recorded).
    next_step: str | None = None
    #: The workflow's history (see the module docstring); ``None``: not recorded.
    attempts: int | None = None
    last_error: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """The part of a checkpoint readable without knowing its types (``read_header``)."""

    orchestration_id: str
    workflow_id: str
    minion: str
    next_step_index: int
    event_type: str
    event_fingerprint: str
    context_type: str
    context_fingerprint: str
    next_step: str | None = None
    attempts: int | None = None
    last_error: str | None = None
    failed: bool = False
    #: The format the checkpoint was saved in.
    format: int = _FORMAT


def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(pydantic_type(tp))
    if not adapter.pydantic_complete:
        # Pydantic defers what it cannot resolve yet; resolve now so a bad type fails here,
        # when the minion is defined, not at its first checkpoint.
        adapter.rebuild(raise_errors=True)
    return adapter


def _map_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # Map keys arrive as lists when they were tuples; dict keys must be hashable.
    return {_hashable(key): value for key, value in pairs}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(part) for part in key) if isinstance(key, list) else key


def _type_name(tp: Any) -> str:
    return str(getattr(tp, "__qualname__", None) or tp)


def _raw_default(obj: Any) -> Any:
    # Values the adapter left as Python objects (datetime, Decimal, UUID, Enum, set, ...) go into
    # msgpack in their JSON form; validation on the way back rebuilds the declared type.
    return pydantic_core.to_jsonable_python(obj)


class _Slot:
    """How one declared type (the event's or the context's) becomes plain data and back."""

    __slots__ = ("check", "fingerprint", "load", "name", "plain", "serializer", "type")

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self.name = _type_name(tp)
        self.check = instance_type(tp)
        #: pydantic's serializer of the type, or ``None`` when msgspec converts it (``plain``).
        self.serializer: pydantic_core.SchemaSerializer | None = None
        self.plain: Callable[[Any], Any] | None = None
        #: Validates data back into the type; raises ValueError (pydantic's or ours) if invalid.
        self.load: Callable[[Any], Any]
        if uses_msgspec(tp):
            codec = plain_codec(tp)
            self.plain, self.load = codec.dump, codec.load
        else:
            adapter = _adapter(tp)
            self.serializer, self.load = adapter.serializer, adapter.validate_python
        self.fingerprint = type_fingerprint(tp)

    def dump(self, value: Any) -> Any:
        if self.serializer is not None:  # the common case, first
            # warnings="error": a value of the wrong type fails here, not when it is resumed.
            return self.serializer.to_python(value, by_alias=True, warnings="error")
        assert self.plain is not None
        return self.plain(value)


class CheckpointCodec(Generic[EventT, ContextT]):
    """Encodes and decodes the checkpoints of one (event type, context type) pair.

    Build it with ``checkpoint_codec(event_type, context_type)``, which caches codecs: creating
    the adapters and fingerprints is the expensive part, encoding is cheap.
    """

    def __init__(self, event_type: Any, context_type: Any) -> None:
        self.event_type = event_type
        self.context_type = context_type
        try:
            self._event = _Slot(event_type)
            self._context = _Slot(context_type)
        except (pydantic.PydanticUserError, NameError, TypeError) as exc:
            raise CheckpointEncodeError(
                f"cannot checkpoint events of type {_type_name(event_type)} with contexts of "
                f"type {_type_name(context_type)}: {_first_line(exc)} Define them (and the types "
                "they use) at module level as dataclasses, pydantic models, TypedDicts or "
                "msgspec Structs made of builtins, datetime, Decimal, Enum, lists, dicts and "
                "Optional"
            ) from exc
        self.event_type_name = self._event.name
        self.context_type_name = self._context.name
        self.event_fingerprint = self._event.fingerprint
        self.context_fingerprint = self._context.fingerprint
        self._names: dict[tuple[str, ...], tuple[bytes, ...]] = {}

    def __repr__(self) -> str:
        return f"<CheckpointCodec event={self.event_type_name} context={self.context_type_name}>"

    def encode(self, checkpoint: Checkpoint[EventT, ContextT]) -> bytes:
        """Encode a checkpoint to bytes for ``StateStore.save_context``."""
        encoder = self.for_workflow(
            checkpoint.orchestration_id, checkpoint.workflow_id, checkpoint.minion, checkpoint.event
        )
        encoder.set_history(checkpoint.attempts, checkpoint.last_error, failed=checkpoint.failed)
        return encoder.encode(
            checkpoint.context, checkpoint.next_step_index, next_step=checkpoint.next_step
        )

    def for_workflow(
        self,
        orchestration_id: str,
        workflow_id: str,
        minion: str,
        event: EventT,
        steps: Sequence[str] = (),
    ) -> WorkflowEncoder[ContextT]:
        """An encoder for the checkpoints of one workflow: its ids and event are checked and
        encoded now, once; each checkpoint then encodes only its step and context. ``steps``
        are the minion's step names, recorded with the index of the step to run next."""
        _check_keys(orchestration_id, workflow_id, minion)
        head = _ARRAY_HEADER + _pack(
            workflow_id, [_MAGIC, _FORMAT, orchestration_id, workflow_id, minion]
        )
        tail = _pack(
            workflow_id,
            [
                self.event_type_name,
                self.event_fingerprint,
                self.context_type_name,
                self.context_fingerprint,
                self._dump("event", workflow_id, event),
            ],
        )
        return WorkflowEncoder(self, workflow_id, head, tail, self._step_names(tuple(steps)))

    def _step_names(self, steps: tuple[str, ...]) -> tuple[bytes, ...]:
        """The step names, packed once per minion's steps (not once per workflow)."""
        packed = self._names.get(steps)
        if packed is None:
            packed = tuple(_pack("-", str(name)) for name in steps)
            if len(self._names) < 64:  # a codec serves the few minions of one type pair
                self._names[steps] = packed
        return packed

    def _dump(self, what: str, workflow_id: str, value: Any) -> Any:
        slot = self._event if what == "event" else self._context
        if slot.check is not None and not isinstance(value, slot.check):
            raise CheckpointEncodeError(
                f"cannot encode the checkpoint of workflow {workflow_id}: its {what} "
                f"is a {type(value).__name__}, but the minion declares {slot.name}; "
                f"set it to an instance of {slot.name}"
            )
        try:
            return slot.dump(value)
        except Exception as exc:  # pydantic and msgspec raise several unrelated types
            raise CheckpointEncodeError(
                f"cannot encode the {what} ({slot.name}) of workflow {workflow_id}: "
                f"{exc}. Keep {what}s to builtins, datetime, Decimal, Enum, dataclasses, "
                "pydantic models, TypedDicts, msgspec Structs, lists and dicts"
            ) from exc

    def decode(
        self, blob: bytes, *, workflow_id: str | None = None
    ) -> Checkpoint[EventT, ContextT]:
        """Decode bytes from the store back into a checkpoint of this codec's types.

        ``workflow_id`` is the key the blob was stored under: it names the workflow in errors
        and must match the id recorded inside the blob.
        """
        header, event_data, context_data = _unpack(blob, workflow_id)
        label = f"the checkpoint of workflow {header.workflow_id}"
        for what, stored_name, stored_fp, name, fp in (
            ("event", header.event_type, header.event_fingerprint, self.event_type_name,
             self.event_fingerprint),
            ("context", header.context_type, header.context_fingerprint, self.context_type_name,
             self.context_fingerprint),
        ):  # fmt: skip
            if stored_fp != fp:
                raise IncompatibleCheckpoint(
                    f"{label} was saved with {what} type {stored_name} of another shape "
                    f"(fingerprint {stored_fp}) than the current {name} ({fp}): the {what} type "
                    "changed since. Drain the workflows with the old code first (run it until "
                    "they finish), then start the new code"
                )
        event = self._validate("event", label, event_data)
        context = self._validate("context", label, context_data)
        return Checkpoint(
            orchestration_id=header.orchestration_id,
            workflow_id=header.workflow_id,
            minion=header.minion,
            event=event,
            context=context,
            next_step_index=header.next_step_index,
            next_step=header.next_step,
            attempts=header.attempts,
            last_error=header.last_error,
            failed=header.failed,
        )

    def _validate(self, what: str, label: str, data: Any) -> Any:
        slot = self._event if what == "event" else self._context
        try:
            return slot.load(data)
        except (pydantic.ValidationError, InvalidValue) as exc:
            first = (
                f"{exc.error_count()} errors; first: {_first_error(exc)}"
                if isinstance(exc, pydantic.ValidationError)
                else exc.problems[0]
            )
            raise IncompatibleCheckpoint(
                f"{label} holds a {what} that is not a valid {slot.name} any more "
                f"({first}). The type's constraints changed since it was saved: drain the "
                "workflows with the old code first, then start the new code"
            ) from exc


class WorkflowEncoder(Generic[ContextT]):
    """Encodes the checkpoints of one workflow (``CheckpointCodec.for_workflow``)."""

    __slots__ = ("_codec", "_head", "_history", "_last", "_last_history", "_names", "_tail",
                 "_workflow_id")  # fmt: skip

    def __init__(
        self,
        codec: CheckpointCodec[Any, ContextT],
        workflow_id: str,
        head: bytes,
        tail: bytes,
        names: tuple[bytes, ...] = (),
    ) -> None:
        self._codec = codec
        self._workflow_id = workflow_id
        self._head = head
        self._tail = tail
        self._names = names
        self._history = _NO_HISTORY
        #: The last checkpoint encoded, and the history bytes it ends with.
        self._last: bytes | None = None
        self._last_history = _NO_HISTORY

    def __repr__(self) -> str:
        return f"<WorkflowEncoder workflow={self._workflow_id}>"

    def encode(
        self, context: ContextT, next_step_index: int, *, next_step: str | None = None
    ) -> bytes:
        """The checkpoint of this workflow at ``next_step_index`` with ``context``.

        The step's name is the one given to ``for_workflow`` for that index, or ``next_step``.
        """
        workflow_id = self._workflow_id
        if (
            not isinstance(next_step_index, int)
            or isinstance(next_step_index, bool)
            or next_step_index < 0
        ):
            raise CheckpointEncodeError(
                f"cannot encode the checkpoint of workflow {workflow_id}: next_step_index "
                f"must be an int >= 0, got {next_step_index!r}"
            )
        step = _SMALL_INTS[next_step_index] if next_step_index < 128 else None
        if next_step is not None:
            name = _pack(workflow_id, str(next_step))
        elif next_step_index < len(self._names):
            name = self._names[next_step_index]
        else:
            name = _NO_NAME
        context_data = self._codec._dump("context", workflow_id, context)
        blob = (
            self._head
            + (step or _pack(workflow_id, next_step_index))
            + self._tail
            + _pack(workflow_id, context_data)
            + name
            + self._history
        )
        self._last, self._last_history = blob, self._history
        return blob

    def set_history(
        self, attempts: int | None, last_error: str | None = None, *, failed: bool = False
    ) -> None:
        """Record the workflow's history (module docstring) in the checkpoints encoded next."""
        history: dict[str, Any] = {}
        if attempts is not None:
            history["attempts"] = attempts
        if last_error is not None:
            history["error"] = last_error[:MAX_ERROR_CHARS]
        if failed:
            history["failed"] = True
        self._history = _pack(self._workflow_id, history) if history else _NO_HISTORY

    def last_with_history(self) -> bytes | None:
        """The last checkpoint encoded, with the history set since (``None``: none encoded)."""
        last = self._last
        if last is None:
            return None
        return last[: len(last) - len(self._last_history)] + self._history


# A msgpack array of the record's 14 fields; an array's encoding is its header followed by its
# elements' encodings, which is what lets an encoder pack the constant fields once.
_ARRAY_HEADER = b"\x9e"
# The name of a step that was not given: msgpack's empty string.
_NO_NAME = b"\xa0"
# No history recorded: msgpack's empty map.
_NO_HISTORY = b"\x80"
# msgpack encodes 0..127 as that single byte.
_SMALL_INTS = tuple(bytes((i,)) for i in range(128))


def _pack(workflow_id: str, value: Any) -> bytes:
    """msgpack ``value``; a list of up to 15 items is packed as its elements in a row, without
    the array header (one byte for such a short array)."""
    try:
        packed: bytes = msgpack.packb(value, default=_raw_default, use_bin_type=True)
        if isinstance(value, list):
            assert len(value) <= 15, "only short lists have a one-byte header"
            return packed[1:]
        return packed
    except (
        TypeError,
        ValueError,
        OverflowError,
        pydantic_core.PydanticSerializationError,
    ) as exc:
        raise CheckpointEncodeError(
            f"cannot encode the checkpoint of workflow {workflow_id}: {exc}. "
            "Events and contexts may hold builtins (ints within 64 bits), datetime, Decimal, "
            "Enum, dataclasses, pydantic models, lists and dicts"
        ) from exc


def _check_keys(orchestration_id: object, workflow_id: object, minion: object) -> None:
    for name, value in (
        ("orchestration_id", orchestration_id),
        ("workflow_id", workflow_id),
        ("minion", minion),
    ):
        if not isinstance(value, str):
            raise CheckpointEncodeError(
                f"cannot encode a checkpoint whose {name} is a {type(value).__name__}: "
                "ids and the minion identity are strings"
            )


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if line.endswith(".") else line + "."


def _first_error(exc: pydantic.ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "<value>"
    return f"{where}: {error['msg']}"


@functools.lru_cache(maxsize=256)
def checkpoint_codec(event_type: Any, context_type: Any) -> CheckpointCodec[Any, Any]:
    """The (cached) codec for one pair of declared event and context types."""
    return CheckpointCodec(event_type, context_type)


def read_header(blob: bytes, *, workflow_id: str | None = None) -> CheckpointHeader:
    """Read a checkpoint's ids, step and type fingerprints without decoding its payload."""
    header, _, _ = _unpack(blob, workflow_id)
    return header


def read_plain(blob: bytes, *, workflow_id: str | None = None) -> tuple[CheckpointHeader, Any, Any]:
    """A checkpoint's header, event and context, the last two as the plain data they were saved
    as (dicts, lists, strings, numbers...): readable without the program's types, and without
    the checks that decoding into them makes (``CheckpointCodec.decode``)."""
    return _unpack(blob, workflow_id)


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of a checkpoint")


def _unpack(blob: bytes, workflow_id: str | None) -> tuple[CheckpointHeader, Any, Any]:
    label = f"the checkpoint of workflow {workflow_id}" if workflow_id else "a stored checkpoint"
    fix = "Skip it, and delete it from the state store if it keeps appearing"
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CorruptCheckpoint(f"{label} is a {type(blob).__name__}, not bytes. {fix}")
    try:
        # max_ext_len=0: no msgpack extension type is part of a checkpoint (msgpack would
        # decode its timestamp type natively, before any ext_hook could refuse it).
        record = msgpack.unpackb(
            blob,
            raw=False,
            strict_map_key=False,
            object_pairs_hook=_map_pairs,
            max_ext_len=0,
            ext_hook=_refuse_extension,
        )
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise CorruptCheckpoint(
            f"{label} is not readable ({len(blob)} bytes, truncated or garbage: {exc}). {fix}"
        ) from exc
    if not (isinstance(record, list) and len(record) >= 2 and record[0] == _MAGIC):
        raise CorruptCheckpoint(f"{label} is not a Minions checkpoint ({len(blob)} bytes). {fix}")
    size = _READABLE.get(record[1]) if type(record[1]) is int else None
    if size is None:
        readable = " and ".join(str(f) for f in _READABLE)
        raise CorruptCheckpoint(
            f"{label} has checkpoint format {record[1]!r}; this Minions reads formats "
            f"{readable}. Resume it with the Minions version that saved it"
        )
    shape = (str, int, str, str, str, int, str, str, str, str)
    if len(record) != size or not all(
        isinstance(value, kind) and not isinstance(value, bool)
        for value, kind in zip(record[:10], shape, strict=True)
    ):
        raise CorruptCheckpoint(f"{label} has a damaged header ({len(blob)} bytes). {fix}")
    next_step = record[12] if size > 12 else None
    if next_step is not None and not isinstance(next_step, str):
        raise CorruptCheckpoint(f"{label} has a damaged step name ({len(blob)} bytes). {fix}")
    try:
        attempts, error, failed = _history(record[13] if size > 13 else {})
    except ValueError:
        raise CorruptCheckpoint(
            f"{label} has a damaged history ({len(blob)} bytes). {fix}"
        ) from None
    header = CheckpointHeader(
        orchestration_id=record[2],
        workflow_id=record[3],
        minion=record[4],
        next_step_index=record[5],
        event_type=record[6],
        event_fingerprint=record[7],
        context_type=record[8],
        context_fingerprint=record[9],
        next_step=next_step or None,
        attempts=attempts,
        last_error=error,
        failed=failed,
        format=record[1],
    )
    if workflow_id is not None and header.workflow_id != workflow_id:
        raise CorruptCheckpoint(
            f"{label} records another workflow id ({header.workflow_id!r}): the row was written "
            f"under the wrong key. {fix}"
        )
    return header, record[10], record[11]


def _history(history: object) -> tuple[int | None, str | None, bool]:
    """The attempts, last error and failed flag of a history map (unknown keys ignored);
    ``ValueError`` if it is not one."""
    if not isinstance(history, dict):
        raise ValueError("not a map")
    attempts = history.get("attempts")
    error = history.get("error")
    failed = history.get("failed", False)
    if (
        (attempts is not None and (type(attempts) is not int or attempts < 0))
        or (error is not None and not isinstance(error, str))
        or not isinstance(failed, bool)
    ):
        raise ValueError("a field of the wrong type")
    return attempts, error, failed


def type_fingerprint(tp: Any) -> str:
    """A stable hash of a type's structure: field names and field types, recursively."""
    description = _describe(tp, [], {})
    digest = hashlib.sha256(f"{_FINGERPRINT_VERSION}|{description}".encode()).hexdigest()
    return digest[:16]


def _describe(tp: Any, stack: list[Any], subs: dict[Any, Any]) -> str:
    """A canonical text for ``tp`` built only from names and structure, never ids or hashes."""
    tp = _unwrap(tp)
    if tp is Any or tp is object:
        return "any"
    if tp is None or tp is types.NoneType:
        return "none"
    if isinstance(tp, str | typing.ForwardRef):
        # An annotation that could not be resolved: its source text is still stable.
        return f"ref:{getattr(tp, '__forward_arg__', tp)}"
    if isinstance(tp, TypeVar):
        # A generic's parameter: describe what it was bound to, if anything.
        return _describe(subs[tp], stack, {}) if tp in subs else "any"
    for depth, seen in enumerate(stack):
        if seen == tp:
            return f"recursion:{len(stack) - depth}"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    stack = [*stack, tp]
    if origin is typing.Union or origin is types.UnionType:
        return "union[" + ",".join(_describe(arg, stack, subs) for arg in args) + "]"
    if origin is typing.Literal:
        return "literal[" + ",".join(_literal(arg) for arg in args) + "]"
    if origin is not None:
        if _is_structured(origin):
            params = getattr(origin, "__parameters__", ())
            bound = {p: subs.get(a, a) for p, a in zip(params, args, strict=False)}
            return _describe_fields(origin, bound, stack)
        parts = ["..." if arg is Ellipsis else _describe(arg, stack, subs) for arg in args]
        return f"{_leaf(origin)}[{','.join(parts)}]"
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            members = ",".join(f"{m.name}={_literal(m.value)}" for m in tp)
            return f"enum({members})"
        if _is_structured(tp):
            return _describe_fields(tp, {}, stack)
        return _leaf(tp)
    return _leaf(tp)


def _unwrap(tp: Any) -> Any:
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):  # typing.NewType
            tp = tp.__supertype__
        else:
            return tp


def _leaf(tp: Any) -> str:
    module = getattr(tp, "__module__", "")
    name = getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)
    return f"{module}.{name}" if module else str(name)


def _literal(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    return f"{type(value).__name__}:{value!r}"


def _is_structured(tp: Any) -> bool:
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp)
        or issubclass(tp, pydantic.BaseModel)
        or typing.is_typeddict(tp)
        or (issubclass(tp, tuple) and hasattr(tp, "_fields"))
        or is_struct(tp)
    )


def _describe_fields(tp: type, subs: dict[Any, Any], stack: list[Any]) -> str:
    parts = [f"{name}:{_describe(annotation, stack, subs)}" for name, annotation in _fields(tp)]
    # A Struct encoded as an array lays its fields out by position, not by name.
    config = getattr(tp, "__struct_config__", None) if is_struct(tp) else None
    layout = "array" if getattr(config, "array_like", False) else ""
    return layout + "{" + ",".join(parts) + "}"


def _fields(tp: type) -> list[tuple[str, Any]]:
    if is_struct(tp):
        return [(name, annotation) for name, annotation, _ in struct_fields(tp)]
    if issubclass(tp, pydantic.BaseModel):
        return [(info.alias or name, info.annotation) for name, info in tp.model_fields.items()]
    hints = _hints(tp)
    if dataclasses.is_dataclass(tp):
        return [(f.name, hints.get(f.name, f.type)) for f in dataclasses.fields(tp)]
    if typing.is_typeddict(tp):
        required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
        return [(name + ("" if name in required else "?"), hint) for name, hint in hints.items()]
    return [(name, hints.get(name, Any)) for name in typing.cast(Any, tp)._fields]


def _hints(tp: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        raw: dict[str, Any] = {}
        for klass in reversed(tp.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        return raw

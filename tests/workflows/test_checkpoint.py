"""The checkpoint codec: round trips into the declared types, corrupt blobs, changed types.

The event and context types below live at module level because the fingerprint stability test
re-imports this module in a fresh interpreter (another hash seed) and compares fingerprints.
"""

from __future__ import annotations

import datetime
import enum
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

import msgpack  # type: ignore[import-untyped]
import pydantic
import pytest

from minions.core.errors import MinionsError
from minions.workflows.checkpoint import (
    Checkpoint,
    CheckpointCodec,
    CheckpointEncodeError,
    CheckpointError,
    CheckpointHeader,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    checkpoint_codec,
    read_header,
    read_plain,
    type_fingerprint,
)


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


@dataclass
class Pair:
    base: str
    quote: str


@dataclass
class ChainEvent:
    pair: Pair
    side: Side
    at: datetime.datetime
    amount: Decimal
    block: int
    tags: list[str] = field(default_factory=list)
    memo: Optional[str] = None  # noqa: UP045 - the old spelling must work too
    raw: bytes = b""


@dataclass
class Fill:
    price: Decimal
    when: datetime.date


@dataclass
class TradeCtx:
    price: Decimal | None = None
    fills: list[Fill] = field(default_factory=list)
    by_block: dict[int, str] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)
    seen: set[str] = field(default_factory=set)
    order_id: uuid.UUID | None = None
    wait: datetime.timedelta = datetime.timedelta(0)
    state: Literal["new", "quoted", "sent"] = "new"


class Quote(pydantic.BaseModel):
    bid: Decimal
    ask: Decimal
    venue_name: str = pydantic.Field(alias="venue")


class ModelCtx(pydantic.BaseModel):
    quotes: list[Quote] = []
    best: Optional[Quote] = None  # noqa: UP045
    meta: dict[str, Any] = {}
    side: Side = Side.BUY


class ModelEvent(pydantic.BaseModel):
    symbol: str
    at: datetime.datetime


T = TypeVar("T")


@dataclass
class Box(Generic[T]):
    item: T
    items: list[T]


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


# Variants of ChainEvent, each one change away from it.
@dataclass
class ChainEventRetyped:  # amount: float instead of Decimal
    pair: Pair
    side: Side
    at: datetime.datetime
    amount: float
    block: int
    tags: list[str] = field(default_factory=list)
    memo: str | None = None
    raw: bytes = b""


@dataclass
class ChainEventRenamed:  # block -> height
    pair: Pair
    side: Side
    at: datetime.datetime
    amount: Decimal
    height: int
    tags: list[str] = field(default_factory=list)
    memo: str | None = None
    raw: bytes = b""


@dataclass
class ChainEventLonger:  # one more field, even with a default
    pair: Pair
    side: Side
    at: datetime.datetime
    amount: Decimal
    block: int
    tags: list[str] = field(default_factory=list)
    memo: str | None = None
    raw: bytes = b""
    venue: str = "dex"


@dataclass
class ChainEventTwin:
    """Same fields and types as ChainEvent under another name, with a docstring."""

    pair: Pair
    side: Side
    at: datetime.datetime
    amount: Decimal
    block: int
    tags: list[str] = field(default_factory=list)
    memo: str | None = None
    raw: bytes = b""


class SideWithHold(enum.Enum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


@dataclass
class StrictCtx:
    price: Annotated[Decimal, pydantic.Field(gt=100)] | None = None


class Opaque:
    """Not a dataclass or model: pydantic has no schema for it."""


@dataclass
class HoldsOpaque:
    thing: Opaque


@dataclass
class KeyedCtx:
    by_pair: dict[tuple[str, str], Decimal] = field(default_factory=dict)


@dataclass
class LooseCtx:
    price: Decimal | None = None


def an_event() -> ChainEvent:
    return ChainEvent(
        pair=Pair("ETH", "USDC"),
        side=Side.SELL,
        at=datetime.datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=datetime.UTC),
        amount=Decimal("1.500000000000000001"),
        block=19_000_000,
        tags=["arb", "mev"],
        memo=None,
        raw=b"\x00\xff\x10",
    )


def a_context() -> TradeCtx:
    return TradeCtx(
        price=Decimal("3012.55"),
        fills=[Fill(Decimal("3011.9"), datetime.date(2024, 5, 1))],
        by_block={19_000_000: "seen", -1: "genesis"},
        span=(3, 7),
        seen={"a", "b"},
        order_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        wait=datetime.timedelta(seconds=90, microseconds=5),
        state="quoted",
    )


def a_checkpoint(step: int = 1) -> Checkpoint[ChainEvent, TradeCtx]:
    return Checkpoint(
        orchestration_id="orch-1",
        workflow_id="wf-1",
        minion="bots.executor.Executor",
        event=an_event(),
        context=a_context(),
        next_step_index=step,
    )


# -- round trips --------------------------------------------------------------------------------


def test_dataclass_checkpoint_round_trips_into_the_declared_types() -> None:
    """Every nested value comes back as its declared type, equal to what was saved."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    original = a_checkpoint(step=2)
    restored = codec.decode(codec.encode(original), workflow_id="wf-1")
    assert restored == original
    assert isinstance(restored.event.pair, Pair)
    assert isinstance(restored.event.side, Side)
    assert isinstance(restored.event.amount, Decimal)
    assert restored.event.at.tzinfo is not None
    assert restored.event.at.utcoffset() == datetime.timedelta(0)
    assert isinstance(restored.context.fills[0], Fill)
    assert isinstance(restored.context.fills[0].when, datetime.date)
    assert isinstance(restored.context.span, tuple)
    assert isinstance(restored.context.seen, set)
    assert isinstance(restored.context.order_id, uuid.UUID)
    assert restored.context.by_block == {19_000_000: "seen", -1: "genesis"}


def test_pydantic_models_round_trip_including_aliases() -> None:
    """Pydantic models (nested, aliased fields, Any-typed dicts) round-trip too."""
    codec = checkpoint_codec(ModelEvent, ModelCtx)
    event = ModelEvent(symbol="ETH", at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    quote = Quote(bid=Decimal("1.1"), ask=Decimal("1.2"), venue="uni")
    context = ModelCtx(quotes=[quote], best=quote, meta={"n": 1, "x": [1, "two"]}, side=Side.SELL)
    original = Checkpoint("orch", "wf-9", "m.Minion", event, context, 0)
    restored = codec.decode(codec.encode(original))
    assert restored == original
    assert isinstance(restored.context.best, Quote)
    assert restored.context.best.venue_name == "uni"


def test_dataclass_event_with_model_context_and_defaults() -> None:
    """Types can be mixed, and a context built with no arguments (the default) round-trips."""
    codec = checkpoint_codec(ChainEvent, ModelCtx)
    original = Checkpoint("orch", "wf", "m", an_event(), ModelCtx(), 0)
    assert codec.decode(codec.encode(original)) == original


def test_tuple_keys_and_nested_lists_round_trip() -> None:
    """Tuple dict keys (msgpack arrays) come back hashable; Any-typed lists stay lists."""
    codec = checkpoint_codec(ChainEvent, KeyedCtx)
    context = KeyedCtx({("ETH", "USDC"): Decimal("1.5"), ("BTC", "USDC"): Decimal("2")})
    original = Checkpoint("o", "w", "m", an_event(), context, 0)
    assert codec.decode(codec.encode(original)) == original


def test_recursive_and_generic_types_round_trip() -> None:
    """Self-referencing dataclasses and parametrised generics are supported."""
    tree = Node("root", [Node("a", [Node("a1")]), Node("b")])
    codec = checkpoint_codec(Node, Box[int])
    original = Checkpoint("o", "w", "m", tree, Box(1, [2, 3]), 4)
    restored = codec.decode(codec.encode(original))
    assert restored == original
    assert isinstance(restored.event.children[0].children[0], Node)


def test_header_is_readable_without_the_types() -> None:
    """read_header gives ids, step and type fingerprints without decoding the payload."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    header = read_header(codec.encode(a_checkpoint(step=3)), workflow_id="wf-1")
    assert header == CheckpointHeader(
        orchestration_id="orch-1",
        workflow_id="wf-1",
        minion="bots.executor.Executor",
        next_step_index=3,
        event_type="ChainEvent",
        event_fingerprint=codec.event_fingerprint,
        context_type="TradeCtx",
        context_fingerprint=codec.context_fingerprint,
    )


def test_blob_is_msgpack_never_pickle() -> None:
    """The blob is a plain msgpack array anyone can read; no pickle opcodes, no class paths."""
    blob = checkpoint_codec(ChainEvent, TradeCtx).encode(a_checkpoint())
    record = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    assert record[0] == "mnck" and record[1] == 3
    assert record[10]["pair"] == {"base": "ETH", "quote": "USDC"}
    assert not blob.startswith(b"\x80")  # a pickle protocol header
    assert b"tests.workflows" not in blob


def test_codecs_are_cached_per_type_pair() -> None:
    """Building adapters and fingerprints is done once per (event, context) pair."""
    assert checkpoint_codec(ChainEvent, TradeCtx) is checkpoint_codec(ChainEvent, TradeCtx)
    assert checkpoint_codec(ChainEvent, TradeCtx) is not checkpoint_codec(ChainEvent, ModelCtx)
    assert repr(checkpoint_codec(ChainEvent, TradeCtx)) == (
        "<CheckpointCodec event=ChainEvent context=TradeCtx>"
    )


def test_a_workflow_encoder_gives_the_same_bytes_as_encode() -> None:
    """for_workflow encodes the ids and the event once; each checkpoint it encodes is byte for
    byte what encode() gives for the same record, at any step and with any context."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    event = an_event()
    encoder = codec.for_workflow("orch-1", "wf-1", "bots.executor.Executor", event)
    assert repr(encoder) == "<WorkflowEncoder workflow=wf-1>"
    for step, context in ((0, TradeCtx()), (1, a_context()), (127, a_context()), (128, TradeCtx())):
        blob = encoder.encode(context, step)
        assert blob == codec.encode(
            Checkpoint("orch-1", "wf-1", "bots.executor.Executor", event, context, step)
        )
        assert codec.decode(blob, workflow_id="wf-1").next_step_index == step
    models = checkpoint_codec(ModelEvent, ModelCtx)
    model_event = ModelEvent(symbol="ETH", at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    quote = Quote(bid=Decimal("1"), ask=Decimal("2"), venue="uni")
    context = ModelCtx(quotes=[quote], best=quote, meta={"n": [1, "x"]})
    blob = models.for_workflow("o", "w", "m", model_event).encode(context, 3)
    assert blob == models.encode(Checkpoint("o", "w", "m", model_event, context, 3))


def test_a_workflow_encoder_checks_the_event_once_and_each_context() -> None:
    """A bad event or id fails when the encoder is made; a bad context or step fails that
    checkpoint only, naming the workflow."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    with pytest.raises(CheckpointEncodeError, match=r"wf-7.*event is a dict"):
        codec.for_workflow("o", "wf-7", "m", {"pair": "ETH"})  # type: ignore[arg-type]
    with pytest.raises(CheckpointEncodeError, match="workflow_id is a int"):
        codec.for_workflow("o", 7, "m", an_event())  # type: ignore[arg-type]
    encoder = codec.for_workflow("o", "wf-8", "m", an_event())
    with pytest.raises(CheckpointEncodeError, match=r"wf-8.*context is a ModelCtx"):
        encoder.encode(ModelCtx(), 0)  # type: ignore[arg-type]
    for step in (-1, True, 1.0):
        with pytest.raises(CheckpointEncodeError, match=r"wf-8.*next_step_index"):
            encoder.encode(TradeCtx(), step)  # type: ignore[arg-type]
    assert codec.decode(encoder.encode(TradeCtx(), 1)).context == TradeCtx()


# -- encoding errors ----------------------------------------------------------------------------


def test_wrong_event_type_is_an_encode_error() -> None:
    """An event that is not an instance of the declared type is refused, naming both types."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    bad = Checkpoint("o", "wf-7", "m", {"pair": "ETH"}, TradeCtx(), 0)
    with pytest.raises(CheckpointEncodeError, match=r"wf-7.*event is a dict.*ChainEvent"):
        codec.encode(bad)  # type: ignore[arg-type]


def test_bad_keys_or_step_are_encode_errors() -> None:
    """Ids must be strings and the step a non-negative int, or the header would be damaged."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    for bad, expected in (
        (Checkpoint(1, "wf", "m", an_event(), TradeCtx()), "orchestration_id is a int"),
        (Checkpoint("o", "wf", None, an_event(), TradeCtx()), "minion is a NoneType"),
        (Checkpoint("o", "wf", "m", an_event(), TradeCtx(), -1), "next_step_index"),
        (Checkpoint("o", "wf", "m", an_event(), TradeCtx(), True), "next_step_index"),
    ):
        with pytest.raises(CheckpointEncodeError, match=expected):
            codec.encode(bad)  # type: ignore[arg-type]


def test_unencodable_values_are_encode_errors() -> None:
    """Objects msgpack cannot carry, or ints beyond 64 bits, give a clear CheckpointEncodeError
    naming the workflow and what values are allowed."""
    codec = checkpoint_codec(ModelEvent, ModelCtx)
    event = ModelEvent(symbol="X", at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    for value in (object(), 2**70):
        bad = Checkpoint("o", "wf-8", "m", event, ModelCtx(meta={"v": value}), 0)
        with pytest.raises(CheckpointEncodeError, match="wf-8") as info:
            codec.encode(bad)
        assert "dataclasses" in str(info.value)


def test_unsupported_types_are_refused_when_the_codec_is_built() -> None:
    """A context type pydantic cannot describe fails at codec creation, not at the first save."""

    class LocalOnly:
        pass

    @dataclass
    class Holder:
        thing: LocalOnly

    with pytest.raises(CheckpointEncodeError, match=r"Holder.*LocalOnly.*module level"):
        CheckpointCodec(ChainEvent, Holder)
    with pytest.raises(CheckpointEncodeError, match="Unable to generate pydantic-core schema"):
        CheckpointCodec(ChainEvent, HoldsOpaque)


# -- corrupt blobs ------------------------------------------------------------------------------


def test_every_truncation_is_a_corrupt_checkpoint_naming_the_workflow() -> None:
    """Cutting the blob anywhere gives CorruptCheckpoint with the workflow id, never a crash."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    blob = codec.encode(a_checkpoint())
    for length in range(len(blob)):
        with pytest.raises(CorruptCheckpoint, match="workflow wf-1"):
            codec.decode(blob[:length], workflow_id="wf-1")


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (b"", "not readable"),
        (os.urandom(0) + bytes(range(256)), "not readable|not a Minions checkpoint"),
        (b"\xc1\xc1\xc1", "not readable"),
        (msgpack.packb(42), "not a Minions checkpoint"),
        (msgpack.packb(["other", 1]), "not a Minions checkpoint"),
        (msgpack.packb({"mnck": 1}), "not a Minions checkpoint"),
        (msgpack.packb(["mnck", 99, "o"]), "format 99"),
        (msgpack.packb(["mnck", 1, "o", "wf-1"]), "damaged header"),
        (msgpack.packb(["mnck", 1, "o", "wf-1", "m", "2", "E", "f", "C", "f", {}, {}]), "header"),
        (msgpack.packb(["mnck", 1, "o", "wf-1", "m", True, "E", "f", "C", "f", {}, {}]), "header"),
    ],
)
def test_garbage_is_a_corrupt_checkpoint(blob: bytes, expected: str) -> None:
    """Bytes that are not msgpack, or msgpack of another shape, are CorruptCheckpoint."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    with pytest.raises(CorruptCheckpoint, match=expected):
        codec.decode(blob, workflow_id="wf-1")
    with pytest.raises(CorruptCheckpoint):
        read_header(blob)


def test_non_bytes_and_wrong_key_are_corrupt() -> None:
    """A value that is not bytes, or a blob filed under another workflow id, is refused."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    with pytest.raises(CorruptCheckpoint, match="is a str, not bytes"):
        codec.decode("text", workflow_id="wf-1")  # type: ignore[arg-type]
    with pytest.raises(CorruptCheckpoint, match="another workflow id \\('wf-1'\\)"):
        codec.decode(codec.encode(a_checkpoint()), workflow_id="wf-2")


def test_errors_share_one_tree() -> None:
    """Codec errors are CheckpointErrors and MinionsErrors, distinct from store errors."""
    for cls in (CheckpointEncodeError, CorruptCheckpoint, IncompatibleCheckpoint):
        assert issubclass(cls, CheckpointError)
        assert issubclass(cls, MinionsError)


# -- history and earlier formats ----------------------------------------------------------------


def test_a_checkpoint_records_the_workflows_history() -> None:
    """Attempts, the last error and the failed mark round-trip through the blob and its header;
    without them a checkpoint records none (attempts None, not failed)."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    plain = codec.decode(codec.encode(a_checkpoint()))
    assert (plain.attempts, plain.last_error, plain.failed) == (None, None, False)
    marked = Checkpoint(
        orchestration_id="orch-1",
        workflow_id="wf-1",
        minion="m",
        event=an_event(),
        context=a_context(),
        next_step_index=1,
        next_step="quote",
        attempts=3,
        last_error="ComponentCrashed: child killed by SIGSEGV",
        failed=True,
    )
    decoded = codec.decode(codec.encode(marked), workflow_id="wf-1")
    assert decoded == marked
    header = read_header(codec.encode(marked))
    assert (header.attempts, header.last_error, header.failed, header.format) == (
        3,
        "ComponentCrashed: child killed by SIGSEGV",
        True,
        3,
    )


def test_a_long_last_error_is_cut_to_a_bounded_length() -> None:
    """A huge error message cannot grow every checkpoint of the workflow without bound."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    encoder = codec.for_workflow("o", "wf-1", "m", an_event())
    encoder.set_history(2, "x" * 100_000)
    header = read_header(encoder.encode(a_context(), 0))
    assert header.last_error == "x" * 500


def test_the_last_checkpoint_is_encoded_again_with_a_new_history() -> None:
    """last_with_history gives the last checkpoint encoded — same step, same context — with the
    history set since, byte for byte what encoding it with that history gives."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    encoder = codec.for_workflow("o", "wf-1", "m", an_event(), ("one", "two"))
    assert encoder.last_with_history() is None
    encoder.set_history(1)
    encoder.encode(a_context(), 1)
    encoder.set_history(1, "ValueError: no", failed=True)
    again = encoder.last_with_history()
    assert again == encoder.encode(a_context(), 1)
    decoded = codec.decode(again)
    assert (decoded.next_step_index, decoded.next_step, decoded.failed) == (1, "two", True)
    assert decoded.context == a_context()


def _older(blob: bytes, fmt: int) -> bytes:
    """``blob`` rewritten as a checkpoint of an earlier format (12 or 13 fields)."""
    record = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    size = {1: 12, 2: 13}[fmt]
    return msgpack.packb(["mnck", fmt, *record[2:size]], use_bin_type=True)


@pytest.mark.parametrize("fmt", [1, 2])
def test_checkpoints_of_earlier_formats_are_still_read(fmt: int) -> None:
    """Format 1 (no step name) and format 2 (no history) checkpoints decode into the declared
    types; what they did not record reads as unknown."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    encoder = codec.for_workflow("orch-1", "wf-1", "m", an_event(), ("one", "two"))
    encoder.set_history(4, "boom")
    blob = _older(encoder.encode(a_context(), 1), fmt)
    decoded = codec.decode(blob, workflow_id="wf-1")
    assert (decoded.event, decoded.context, decoded.next_step_index) == (
        an_event(),
        a_context(),
        1,
    )
    assert decoded.next_step == (None if fmt == 1 else "two")
    assert (decoded.attempts, decoded.last_error, decoded.failed) == (None, None, False)
    assert read_header(blob).format == fmt


@pytest.mark.parametrize(
    "history",
    [[], {"attempts": -1}, {"attempts": True}, {"attempts": "2"}, {"error": 7}, {"failed": 1}],
)
def test_a_damaged_history_is_a_corrupt_checkpoint(history: Any) -> None:
    """A history that is not a map of the expected types is refused like any damaged field;
    keys it does not know are ignored (a later version may add some)."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    record = msgpack.unpackb(codec.encode(a_checkpoint()), raw=False, strict_map_key=False)
    record[13] = history
    with pytest.raises(CorruptCheckpoint, match="damaged history"):
        codec.decode(msgpack.packb(record, use_bin_type=True))
    record[13] = {"attempts": 2, "later": [1, 2]}
    assert codec.decode(msgpack.packb(record, use_bin_type=True)).attempts == 2


def test_a_checkpoint_reads_as_plain_data_without_its_types() -> None:
    """read_plain gives the event and context as the plain data they were saved as, for tools
    that do not have the program's classes."""
    codec = checkpoint_codec(ChainEvent, TradeCtx)
    header, event, context = read_plain(codec.encode(a_checkpoint()), workflow_id="wf-1")
    assert header.event_type == "ChainEvent" and header.context_type == "TradeCtx"
    assert event["pair"] == {"base": "ETH", "quote": "USDC"} and event["raw"] == b"\x00\xff\x10"
    assert context["state"] == "quoted" and context["by_block"][19_000_000] == "seen"


# -- incompatible types -------------------------------------------------------------------------


@pytest.mark.parametrize("changed", [ChainEventRetyped, ChainEventRenamed, ChainEventLonger])
def test_changed_event_type_is_incompatible(changed: type) -> None:
    """A checkpoint saved with an event type of another shape is IncompatibleCheckpoint naming
    the type and telling to drain the old workflows first."""
    blob = checkpoint_codec(ChainEvent, TradeCtx).encode(a_checkpoint())
    with pytest.raises(IncompatibleCheckpoint) as info:
        checkpoint_codec(changed, TradeCtx).decode(blob, workflow_id="wf-1")
    message = str(info.value)
    assert "wf-1" in message and "event type ChainEvent" in message
    assert changed.__qualname__ in message
    assert "Drain the workflows with the old code first" in message


def test_changed_context_type_is_incompatible() -> None:
    """The context type is checked the same way."""
    blob = checkpoint_codec(ChainEvent, TradeCtx).encode(a_checkpoint())
    with pytest.raises(IncompatibleCheckpoint, match="context type TradeCtx"):
        checkpoint_codec(ChainEvent, ModelCtx).decode(blob)


def test_tightened_constraint_is_incompatible() -> None:
    """Same shape but a value the new constraints reject: IncompatibleCheckpoint, with the
    validation error's location, instead of a half-valid object."""
    old = checkpoint_codec(ChainEvent, LooseCtx)
    blob = old.encode(Checkpoint("o", "wf-3", "m", an_event(), LooseCtx(Decimal("5")), 1))
    assert type_fingerprint(LooseCtx) == type_fingerprint(StrictCtx)
    with pytest.raises(IncompatibleCheckpoint, match=r"wf-3.*not a valid StrictCtx.*price"):
        checkpoint_codec(ChainEvent, StrictCtx).decode(blob)


# -- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_follows_structure_not_names_or_docs() -> None:
    """Same fields and types under another class name (and with a docstring): same
    fingerprint. Any change of a field's name or type, nested or not: another one."""
    base = type_fingerprint(ChainEvent)
    assert type_fingerprint(ChainEventTwin) == base
    assert type_fingerprint(ChainEventRetyped) != base
    assert type_fingerprint(ChainEventRenamed) != base
    assert type_fingerprint(ChainEventLonger) != base
    assert len(base) == 16 and int(base, 16) >= 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Side, SideWithHold),
        (list[int], tuple[int, ...]),
        (int | None, int),
        (dict[str, int], dict[str, str]),
        (Box[int], Box[str]),
        (Literal["a", "b"], Literal["a", "c"]),
        (list[Pair], list[Fill]),
        (Node, Pair),
    ],
)
def test_fingerprint_distinguishes(a: Any, b: Any) -> None:
    """Enum members, container kinds, optionality, parameters and literals all count."""
    assert type_fingerprint(a) != type_fingerprint(b)


def test_fingerprint_ignores_annotation_spelling() -> None:
    """Optional[X] and X | None, and Annotated metadata, describe the same stored shape."""
    assert type_fingerprint(Optional[int]) == type_fingerprint(int | None)  # noqa: UP045
    assert type_fingerprint(Annotated[int, "meta"]) == type_fingerprint(int)


FINGERPRINT_PROGRAM = """
import json, sys
from minions.workflows.checkpoint import type_fingerprint
from tests.workflows import test_checkpoint as m
names = ["ChainEvent", "TradeCtx", "ModelCtx", "Node", "Side"]
print(json.dumps({n: type_fingerprint(getattr(m, n)) for n in names}))
"""


def test_fingerprint_is_stable_across_processes() -> None:
    """A fresh interpreter with another hash seed computes the same fingerprints: they come
    from names and structure, not id() or hash()."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_PROGRAM],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    theirs = json.loads(out.stdout)
    ours = {name: type_fingerprint(globals()[name]) for name in theirs}
    assert theirs == ours

"""Values cross as their annotated types: encoded in the caller, sent as msgpack, validated and
rebuilt on arrival; what cannot cross is a SerializationError naming the method and parameter."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

from isolation import DEFAULT_MAX_FRAME_BYTES, SerializationError, remote_interface
from isolation._codec import MethodCodec
from isolation._protocol import Kind, build_frames, decode_frame, pack


@dataclasses.dataclass(frozen=True)
class Pair:
    base: str
    quote: str


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Order(pydantic.BaseModel):
    pair: Pair
    side: Side
    amount: decimal.Decimal
    placed_at: datetime.datetime
    ref: uuid.UUID
    tags: frozenset[str] = frozenset()


@dataclasses.dataclass
class Book:
    orders: list[Order]
    best: dict[str, tuple[float, float]]
    note: str | None = None


class Exchange:
    """A class whose methods use every supported kind of annotation."""

    async def scalars(self, i: int, f: float, s: str, b: bytes, flag: bool, nothing: None) -> int:
        return i

    async def price(self, pair: Pair, at: datetime.datetime | None = None) -> float:
        return 1.0

    async def place(self, order: Order) -> Order:
        return order

    async def book(self, books: list[Book], by_pair: dict[str, list[Pair]]) -> Book | None:
        return None

    async def optional(self, pair: Pair | None) -> Pair | None:
        return pair

    async def loose(self, anything: Any, untyped) -> Any:  # type: ignore[no-untyped-def]
        return anything

    async def keywords(self, a: int, *rest: int, scale: float = 1.0, **extra: str) -> float:
        return 0.0

    async def ticks(self, pair: Pair) -> AsyncIterator[Order]:
        yield  # type: ignore[misc]


def codec(name: str) -> MethodCodec:
    return remote_interface(Exchange)[name].codec


def over_the_wire(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """What the serving side receives: the same data after msgpack and frame checks."""
    (frame,) = build_frames([pack(Kind.CALL, 1, "x", "m", args, kwargs)], DEFAULT_MAX_FRAME_BYTES)
    message = decode_frame(frame)[0]
    return message[5], message[6]


def round_trip(name: str, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    method = codec(name)
    return method.decode_args(*over_the_wire(*method.encode_args(args, kwargs)))


def result_round_trip(name: str, value: Any) -> Any:
    method = codec(name)
    (frame,) = build_frames(
        [pack(Kind.RESULT, 1, method.encode_result(value))], DEFAULT_MAX_FRAME_BYTES
    )
    return method.decode_result(decode_frame(frame)[0][3])


ORDER = Order(
    pair=Pair("ETH", "USD"),
    side=Side.SELL,
    amount=decimal.Decimal("1.25"),
    placed_at=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    ref=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    tags=frozenset({"a", "b"}),
)


def test_builtins_round_trip_unchanged() -> None:
    args, kwargs = round_trip("scalars", 7, 2.5, "text", b"\x00\xff", True, None)
    assert args == [7, 2.5, "text", b"\x00\xff", True, None]
    assert [type(arg) for arg in args] == [int, float, str, bytes, bool, type(None)]
    assert kwargs == {}


def test_builtins_take_the_fast_path() -> None:
    """Values whose type is exactly the annotation pass through untouched in both directions."""
    method = codec("scalars")
    text = "x" * 100
    args, _ = method.encode_args((1, 1.0, text, b"", False, None), {})
    assert args[2] is text
    decoded, _ = method.decode_args(args, {})
    assert decoded[2] is text


def test_an_int_is_accepted_where_a_float_is_annotated() -> None:
    args, _ = round_trip("scalars", 1, 2, "s", b"b", False, None)
    assert args[1] == 2.0


def test_dataclass_arguments_are_rebuilt() -> None:
    when = datetime.datetime(2024, 5, 1, 8, 0)
    args, _ = round_trip("price", Pair("BTC", "EUR"), when)
    assert args == [Pair("BTC", "EUR"), when]


def test_pydantic_models_with_rich_fields_are_rebuilt() -> None:
    """Enums, decimals, aware datetimes, UUIDs and sets survive msgpack through their annotation."""
    args, _ = round_trip("place", ORDER)
    assert args == [ORDER]
    assert result_round_trip("place", ORDER) == ORDER


def test_nested_lists_dicts_and_tuples_are_rebuilt() -> None:
    book = Book(orders=[ORDER, ORDER], best={"ETH/USD": (3000.0, 3001.5)}, note=None)
    args, _ = round_trip("book", [book], {"majors": [Pair("BTC", "USD"), Pair("ETH", "USD")]})
    assert args == [[book], {"majors": [Pair("BTC", "USD"), Pair("ETH", "USD")]}]
    assert isinstance(args[0][0].best["ETH/USD"], tuple)
    assert result_round_trip("book", book) == book
    assert result_round_trip("book", None) is None


@pytest.mark.parametrize("value", [None, Pair("SOL", "USD")])
def test_optional_values_round_trip(value: Pair | None) -> None:
    assert round_trip("optional", value)[0] == [value]
    assert result_round_trip("optional", value) == value


def test_keyword_arguments_var_args_and_defaults() -> None:
    args, kwargs = round_trip("keywords", 1, 2, 3, scale=2, unit="usd")
    assert args == [1, 2, 3]
    assert kwargs == {"scale": 2.0, "unit": "usd"}
    assert round_trip("keywords", a=5) == ([5], {})


def test_a_call_that_does_not_fit_the_signature_is_a_type_error_in_the_caller() -> None:
    with pytest.raises(TypeError, match="missing a required argument: 'pair'"):
        codec("price").encode_args((), {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        codec("price").encode_args((Pair("a", "b"),), {"colour": "red"})


def test_any_and_unannotated_values_travel_as_plain_data() -> None:
    args, _ = round_trip("loose", Pair("A", "B"), [1, {"k": (2, 3)}])
    assert args == [{"base": "A", "quote": "B"}, [1, {"k": [2, 3]}]]


def test_unserialisable_argument_names_method_and_parameter() -> None:
    with (
        socket.socket() as sock,
        pytest.raises(
            SerializationError,
            match=r"Exchange\.price\(pair=\.\.\.\): cannot send object of type socket as Pair; "
            "send builtins, dataclasses or pydantic models",
        ),
    ):
        codec("price").encode_args((sock,), {})


def test_wrong_builtin_type_is_refused_in_the_caller() -> None:
    with pytest.raises(SerializationError, match=r"Exchange\.scalars\(i=\.\.\.\): .* as int"):
        codec("scalars").encode_args(("seven", 1.0, "s", b"b", True, None), {})


def test_validation_failure_on_arrival_names_method_and_parameter() -> None:
    method = codec("place")
    with pytest.raises(
        SerializationError,
        match=r"Exchange\.place\(order=\.\.\.\): received data that is not a valid Order: "
        r"side: Input should be 'buy' or 'sell'",
    ):
        method.decode_args([{**ORDER.model_dump(mode="json"), "side": "hold"}], {})


def test_validation_failure_of_a_keyword_argument_names_it() -> None:
    with pytest.raises(SerializationError, match=r"Exchange\.keywords\(scale=\.\.\.\)"):
        codec("keywords").decode_args([1], {"scale": "fast"})


def test_validation_failure_of_a_result_names_the_return_value() -> None:
    with pytest.raises(SerializationError, match=r"Exchange\.price return value: .*float"):
        codec("price").decode_result("expensive")


def test_stream_items_are_coded_by_the_iterator_item_type() -> None:
    method = remote_interface(Exchange)["ticks"]
    assert method.stream
    assert method.codec.decode_result(method.codec.encode_result(ORDER)) == ORDER


def test_unsupported_annotation_fails_when_the_interface_is_built() -> None:
    class Leaky:
        async def attach(self, sock: socket.socket) -> None: ...

    with pytest.raises(
        SerializationError, match=r"Leaky\.attach\(sock\): type socket cannot cross"
    ):
        remote_interface(Leaky)


def test_unresolvable_annotation_fails_when_the_interface_is_built() -> None:
    class Forward:
        async def get(self) -> NotDefinedAnywhere:  # type: ignore[name-defined]  # noqa: F821
            ...

    with pytest.raises(SerializationError, match=r"Forward\.get: cannot resolve its annotations"):
        remote_interface(Forward)


def test_interface_holds_only_public_async_methods() -> None:
    class Mixed:
        value = 3

        async def call(self) -> int:
            return 1

        async def stream(self) -> AsyncIterator[int]:
            yield 1

        async def _private(self) -> None: ...

        def sync(self) -> None: ...

        @staticmethod
        async def static() -> None: ...

        @property
        def prop(self) -> int:
            return 1

    methods = remote_interface(Mixed)
    assert {name: method.stream for name, method in methods.items()} == {
        "call": False,
        "stream": True,
    }
    assert set(remote_interface(Mixed, exclude={"call"})) == {"stream"}


def test_method_codec_for_a_plain_function() -> None:
    """MethodCodec works on any function taking self; unannotated means Any."""

    async def fn(self, x):  # type: ignore[no-untyped-def]
        return x

    method = MethodCodec("Thing.fn", fn, stream=False)
    assert method.encode_args((Pair("a", "b"),), {}) == ([{"base": "a", "quote": "b"}], {})

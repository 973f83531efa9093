"""Values across the boundary: arguments and results travel as their annotated types.

The caller turns each value into msgpack-able data (builtins, lists, dicts) guided by the
annotation of the parameter it is passed to; the receiver validates that data against the same
annotation and rebuilds the value (a dataclass, a pydantic model, a ``tuple[int, ...]``, an
``Optional[Price]``). pydantic's ``TypeAdapter`` does both directions; one adapter is built per
distinct annotation and cached, so the cost is paid once per method, not per call.

Plain builtins (``int``, ``str``, ``float``, ``bool``, ``bytes``, ``None``) are the hot path:
when the value's type is exactly the annotation it passes through untouched in both directions,
without entering pydantic.

Leftovers that msgpack cannot pack (``datetime``, ``UUID``, ``Decimal``, ``Enum``, ``set``,
``Path``) are written in the form pydantic accepts back (ISO text, strings, values, lists), so
they round-trip through their annotation. Nothing is ever pickled: a value of any other type is
a :class:`SerializationError` in the caller, naming the method and the parameter.

Values annotated ``Any`` (or not annotated) are sent as plain data: a dataclass or model
arrives as a dict. Annotate parameters to get typed values back.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from functools import cache
from typing import Any, Final

import pydantic
import pydantic_core

from ._errors import SerializationError
from ._protocol import pack_value

__all__ = ["MethodCodec", "ValueCodec"]

_SCALARS: Final = frozenset({int, float, str, bytes, bool, type(None)})
_ASYNC_ITERATORS: Final = frozenset({AsyncIterator, AsyncIterable, AsyncGenerator})
_HINT = "send builtins, dataclasses or pydantic models"

Transform = Callable[[Any], Any]


@cache
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def _adapter_for(annotation: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return _adapter(annotation)
    except TypeError:  # unhashable annotation (e.g. Annotated with a list): build uncached
        return pydantic.TypeAdapter(annotation)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


class ValueCodec:
    """Encodes and validates the values of one annotated slot (a parameter or a result).

    ``encode`` and ``decode`` raise ``ValueError`` with a short reason; :class:`MethodCodec`
    turns that into a SerializationError naming the method and the parameter.
    """

    __slots__ = ("annotation", "decode", "encode")

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation
        self.encode: Transform
        self.decode: Transform
        if annotation is Any or annotation is object or annotation is inspect.Parameter.empty:
            self.encode = _encode_any
            self.decode = _identity
            return
        if annotation is None:
            annotation = type(None)
        try:
            adapter = _adapter_for(annotation)
        except pydantic.PydanticSchemaGenerationError as exc:
            raise TypeError(
                f"type {_type_name(annotation)} cannot cross the isolation boundary; {_HINT}"
            ) from exc
        if annotation in _SCALARS:
            self.encode = _scalar_encoder(annotation, adapter)
            self.decode = _scalar_decoder(annotation, adapter)
        else:
            self.encode = _adapter_encoder(adapter, annotation)
            self.decode = _adapter_decoder(adapter)


def _identity(value: Any) -> Any:
    return value


def _encode_any(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    try:
        return _adapter(Any).dump_python(value, mode="python")
    except pydantic_core.PydanticSerializationError as exc:
        raise ValueError(f"cannot send object of type {type(value).__name__}") from exc


def _scalar_encoder(annotation: type, adapter: pydantic.TypeAdapter[Any]) -> Transform:
    slow = _adapter_encoder(adapter, annotation)

    def encode(value: Any) -> Any:
        if type(value) is annotation:
            return value
        return slow(value)

    return encode


def _scalar_decoder(annotation: type, adapter: pydantic.TypeAdapter[Any]) -> Transform:
    slow = _adapter_decoder(adapter)

    def decode(value: Any) -> Any:
        if type(value) is annotation:
            return value
        return slow(value)

    return decode


def _adapter_encoder(adapter: pydantic.TypeAdapter[Any], annotation: Any) -> Transform:
    dump = adapter.dump_python

    def encode(value: Any) -> Any:
        try:
            return dump(value, mode="python", warnings="error")
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise ValueError(
                f"cannot send object of type {type(value).__name__} as {_type_name(annotation)}"
            ) from exc

    return encode


def _adapter_decoder(adapter: pydantic.TypeAdapter[Any]) -> Transform:
    validate = adapter.validate_python

    def decode(value: Any) -> Any:
        try:
            return validate(value)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}"
                for err in exc.errors(include_url=False)[:3]
            )
            raise ValueError(f"received data that is not a valid {exc.title}: {problems}") from exc

    return decode


def _hints(fn: Callable[..., Any], label: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception as exc:  # NameError for unresolvable forward references, and others
        raise SerializationError(
            f"{label}: cannot resolve its annotations ({exc}); define the types it names at "
            "module level so both processes can import them"
        ) from exc


def _stream_item_type(annotation: Any) -> Any:
    """``AsyncIterator[T]`` (or AsyncGenerator/AsyncIterable) -> T; anything else -> Any."""
    if typing.get_origin(annotation) in _ASYNC_ITERATORS:
        args = typing.get_args(annotation)
        if args:
            return args[0]
    return Any


class MethodCodec:
    """Arguments and result of one remote method, encoded in the caller, checked on arrival.

    On the wire, arguments are ``args`` (a list, in parameter order) and ``kwargs`` (a dict);
    ``result`` codes the return value of a call or each item of a stream.
    """

    def __init__(self, label: str, fn: Callable[..., Any], *, stream: bool) -> None:
        self.label = label
        hints = _hints(fn, label)
        signature = inspect.signature(fn)
        self.signature = signature
        params = list(signature.parameters.values())[1:]  # drop self
        self._positional: list[tuple[str, ValueCodec]] = []
        self._named: dict[str, ValueCodec] = {}
        self._var_positional: tuple[str, ValueCodec] | None = None
        self._var_keyword: tuple[str, ValueCodec] | None = None
        required = 0
        simple = True
        for param in params:
            codec = self._slot(param.name, hints.get(param.name, Any))
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self._positional.append((param.name, codec))
                if param.default is param.empty:
                    required += 1
            elif param.kind is param.VAR_POSITIONAL:
                self._var_positional = (param.name, codec)
            elif param.kind is param.VAR_KEYWORD:
                self._var_keyword = (param.name, codec)
            elif param.default is param.empty:  # required keyword-only: take the slow path
                simple = False
            if param.kind is not param.POSITIONAL_ONLY and param.kind is not param.VAR_KEYWORD:
                self._named[param.name] = codec
        returned = hints.get("return", Any)
        self.result = self._slot("return", _stream_item_type(returned) if stream else returned)
        # Calls with only positional arguments, all required ones present, skip binding.
        self._fast_min = required if simple else -1
        self._fast_max = len(self._positional)
        self._encoders = [codec.encode for _, codec in self._positional]
        self._decoders = [codec.decode for _, codec in self._positional]

    def _slot(self, name: str, annotation: Any) -> ValueCodec:
        try:
            return ValueCodec(annotation)
        except TypeError as exc:
            raise SerializationError(f"{self.label}({name}): {exc}") from exc

    def _param_codec(self, index: int | None, name: str | None) -> tuple[str, ValueCodec] | None:
        if index is not None:
            if index < len(self._positional):
                return self._positional[index]
            return self._var_positional
        assert name is not None
        codec = self._named.get(name)
        if codec is not None:
            return name, codec
        return self._var_keyword

    def encode_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Encode a call's arguments; TypeError for a bad call, SerializationError for a value."""
        if not kwargs and self._fast_min <= len(args) <= self._fast_max:
            try:
                return [
                    encode(value) for encode, value in zip(self._encoders, args, strict=False)
                ], {}
            except ValueError:
                pass  # the path below encodes again and names the parameter
        else:
            bound = self.signature.bind(None, *args, **kwargs)  # TypeError names the problem
            args, kwargs = bound.args[1:], bound.kwargs
        out_args = [self._encode(index, None, value) for index, value in enumerate(args)]
        out_kwargs = {name: self._encode(None, name, value) for name, value in kwargs.items()}
        return out_args, out_kwargs

    def _encode(self, index: int | None, name: str | None, value: Any) -> Any:
        slot = self._param_codec(index, name)
        if slot is None:  # cannot happen after bind; keep the value as plain data
            return _encode_any(value)
        try:
            return slot[1].encode(value)
        except ValueError as exc:
            raise SerializationError(f"{self.label}({slot[0]}=...): {exc}; {_HINT}") from exc

    def decode_args(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Validate and rebuild arguments on arrival; SerializationError names the parameter."""
        if not kwargs and len(args) <= self._fast_max:
            try:
                return [
                    decode(value) for decode, value in zip(self._decoders, args, strict=False)
                ], {}
            except ValueError:
                pass  # the path below validates again and names the parameter
        out_args = [self._decode(index, None, value) for index, value in enumerate(args)]
        out_kwargs = {name: self._decode(None, name, value) for name, value in kwargs.items()}
        return out_args, out_kwargs

    def _decode(self, index: int | None, name: str | None, value: Any) -> Any:
        slot = self._param_codec(index, name)
        if slot is None:  # an unexpected argument: the call itself raises TypeError
            return value
        try:
            return slot[1].decode(value)
        except ValueError as exc:
            raise SerializationError(f"{self.label}({slot[0]}=...): {exc}") from exc

    def encode_result(self, value: Any) -> Any:
        try:
            return self.result.encode(value)
        except ValueError as exc:
            raise SerializationError(f"{self.label} return value: {exc}; {_HINT}") from exc

    def decode_result(self, value: Any) -> Any:
        try:
            return self.result.decode(value)
        except ValueError as exc:
            raise SerializationError(f"{self.label} return value: {exc}") from exc

    def find_unpackable(self, args: list[Any], kwargs: dict[str, Any]) -> str:
        """Name the first argument msgpack refuses (used only after packing failed)."""
        for index, value in enumerate(args):
            try:
                pack_value(value)
            except (TypeError, ValueError, OverflowError) as exc:
                slot = self._param_codec(index, None)
                return f"{self.label}({slot[0] if slot else index}=...): {exc}"
        for name, value in kwargs.items():
            try:
                pack_value(value)
            except (TypeError, ValueError, OverflowError) as exc:
                return f"{self.label}({name}=...): {exc}"
        return f"{self.label}: arguments cannot be packed"

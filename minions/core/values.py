"""The program's own value types — events, contexts, configs — as plain data, and back.

A program declares these as dataclasses, pydantic models, ``TypedDict``\\ s or ``msgspec.Struct``
classes (nested builtins, ``datetime``, ``Decimal``, ``Enum``, lists, dicts, ``Optional``...).
Wherever such a value is checkpointed, sent to a child or read from a config file, it becomes
plain data (builtins, lists, dicts) on one side and is validated back into the declared type on
the other, by one of two libraries:

* **msgspec**, for a type that is or contains a ``msgspec.Struct``: msgspec converts the whole
  value (it also understands the dataclasses, TypedDicts, enums and datetimes inside it).
  msgspec is the program's dependency, not Minions': it is never imported here. A Struct class
  exists only once the program imported msgspec, so the module is looked up where Python keeps
  imported modules, and a program without Structs never loads it.
* **pydantic**, for every other type. On Python 3.11 pydantic refuses ``typing.TypedDict``
  (it asks for ``typing_extensions.TypedDict``); :func:`pydantic_type` gives it an equivalent
  ``typing_extensions.TypedDict`` instead, so a program's ``typing.TypedDict`` works as is.

:func:`plain_codec` returns the (cached) :class:`PlainCodec` of a type; :func:`is_structured`,
:func:`field_names` and :func:`required_fields` answer what the definition checks ask about a
type, whichever kind it is.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import pydantic

__all__ = [
    "InvalidValue",
    "PlainCodec",
    "field_names",
    "instance_type",
    "is_struct",
    "is_structured",
    "plain_codec",
    "pydantic_type",
    "required_fields",
    "struct_fields",
    "uses_msgspec",
]


class InvalidValue(ValueError):
    """Data that does not validate into the declared type; ``problems`` says where and why."""

    def __init__(self, type_name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"not a valid {type_name}: {'; '.join(problems)}")


def _msgspec() -> Any:
    """The msgspec module if the program imported it, else ``None`` (see the module docstring)."""
    return sys.modules.get("msgspec")


def is_struct(tp: object) -> bool:
    """Whether ``tp`` is a ``msgspec.Struct`` class."""
    msgspec = _msgspec()
    return msgspec is not None and isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def uses_msgspec(tp: object) -> bool:
    """Whether ``tp`` is, or contains anywhere in its fields, a ``msgspec.Struct``."""
    return _msgspec() is not None and _contains_struct(tp, set())


def _contains_struct(tp: object, seen: set[int]) -> bool:
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if is_struct(tp):
        return True
    if any(_contains_struct(arg, seen) for arg in typing.get_args(tp)):
        return True
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
        return any(_contains_struct(hint, seen) for hint in _hints(tp).values())
    return False


def is_structured(tp: object) -> bool:
    """A dataclass, pydantic model, TypedDict or msgspec Struct class: a type with fields."""
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp)
        or issubclass(tp, pydantic.BaseModel)
        or typing.is_typeddict(tp)
        or is_struct(tp)
    )


def instance_type(tp: object) -> type | None:
    """The class a value of ``tp`` is an instance of, for an ``isinstance`` check: a
    TypedDict's values are plain dicts; ``None`` for a type that is not a class (a union...)."""
    if isinstance(tp, type) and typing.is_typeddict(tp):
        return dict
    return tp if isinstance(tp, type) else None


def struct_fields(tp: type) -> list[tuple[str, Any, bool]]:
    """A Struct's fields as (name in the data, type, required)."""
    msgspec = _msgspec()
    return [
        (
            f.encode_name,
            f.type,
            f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT,
        )
        for f in msgspec.structs.fields(tp)
    ]


def field_names(tp: type) -> set[str] | None:
    """The top-level names a structured type takes in its data (aliases included), or ``None``
    for a pydantic model that accepts extra fields."""
    if issubclass(tp, pydantic.BaseModel):
        if tp.model_config.get("extra") == "allow":
            return None
        fields = tp.model_fields
        return set(fields) | {f.alias for f in fields.values() if f.alias}
    if is_struct(tp):
        return {name for name, _, _ in struct_fields(tp)}
    if typing.is_typeddict(tp):
        return set(_hints(tp))
    if dataclasses.is_dataclass(tp):
        return {f.name for f in dataclasses.fields(tp)}
    return set()


def required_fields(tp: type) -> list[str]:
    """The fields of a structured type that have no default (needed to build it)."""
    if dataclasses.is_dataclass(tp):
        return [
            f.name
            for f in dataclasses.fields(tp)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
    if issubclass(tp, pydantic.BaseModel):
        return [name for name, info in tp.model_fields.items() if info.is_required()]
    if typing.is_typeddict(tp):
        return sorted(getattr(tp, "__required_keys__", frozenset()))
    if is_struct(tp):
        return [name for name, _, required in struct_fields(tp) if required]
    return []


def _hints(tp: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except Exception:  # unresolvable forward references: the raw annotations will do
        raw: dict[str, Any] = {}
        for klass in reversed(tp.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        return raw


# -- converting ----------------------------------------------------------------------------------


class PlainCodec:
    """Turns values of one declared type into plain data and validates data back into it.

    ``dump`` gives JSON-compatible data (``datetime`` as ISO text, ``bytes`` as text too), which
    msgpack and JSON both carry; ``load`` raises :class:`InvalidValue`. Build it with
    :func:`plain_codec`, which caches one per type.
    """

    __slots__ = ("_dump", "_load", "library", "type", "type_name")

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self.type_name = str(getattr(tp, "__qualname__", None) or tp)
        self._dump: Callable[[Any], Any]
        self._load: Callable[[Any], Any]
        if uses_msgspec(tp):
            self.library = "msgspec"
            self._dump, self._load = _msgspec_functions(tp)
        else:
            self.library = "pydantic"
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(pydantic_type(tp))
            self._dump = functools.partial(adapter.dump_python, mode="json")
            self._load = adapter.validate_python

    def __repr__(self) -> str:
        return f"<PlainCodec {self.type_name} via {self.library}>"

    def dump(self, value: Any) -> Any:
        """``value`` as plain, JSON-compatible data."""
        return self._dump(value)

    def load(self, data: Any) -> Any:
        """``data`` validated into the declared type; :class:`InvalidValue` if it is not."""
        try:
            return self._load(data)
        except pydantic.ValidationError as exc:
            raise InvalidValue(self.type_name, _pydantic_problems(exc)) from exc
        except Exception as exc:
            msgspec = _msgspec()
            if msgspec is not None and isinstance(exc, msgspec.ValidationError):
                raise InvalidValue(self.type_name, [str(exc)]) from exc
            raise


@functools.lru_cache(maxsize=512)
def _cached_codec(tp: Any) -> PlainCodec:
    return PlainCodec(tp)


def plain_codec(tp: Any) -> PlainCodec:
    """The :class:`PlainCodec` of ``tp`` (cached; an unhashable type gets a fresh one).

    Raises ``TypeError`` (pydantic's or msgspec's, chained) when the type cannot be converted.
    """
    try:
        return _cached_codec(tp)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return PlainCodec(tp)


def _msgspec_functions(tp: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    msgspec = _msgspec()
    # Building a decoder checks the type now: an unsupported field type (a pydantic model
    # inside a Struct, say) is a TypeError here rather than at the first value.
    msgspec.msgpack.Decoder(tp)

    def dump(value: Any) -> Any:
        return msgspec.to_builtins(value)

    def load(data: Any) -> Any:
        return msgspec.convert(data, tp)

    return dump, load


def _pydantic_problems(exc: pydantic.ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in err['loc']) or '(the value)'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    ]


# -- typing.TypedDict on Python 3.11 -------------------------------------------------------------

if sys.version_info < (3, 12):
    import typing_extensions

    def pydantic_type(tp: Any) -> Any:
        """``tp`` as pydantic accepts it: every ``typing.TypedDict`` in it replaced by an
        equivalent ``typing_extensions.TypedDict`` (same name, keys, types, requiredness)."""
        return _portable(tp, {})

    def _portable(tp: Any, memo: dict[Any, Any]) -> Any:
        if isinstance(tp, type) and typing.is_typeddict(tp):
            if type(tp).__module__ != "typing":
                return tp  # already pydantic's kind
            if tp in memo:
                return memo[tp]  # a TypedDict that refers to itself: pydantic reports it
            memo[tp] = tp
            required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
            fields: dict[str, Any] = {}
            for name, hint in _hints(tp).items():
                if typing.get_origin(hint) in (typing.Required, typing.NotRequired):
                    hint = typing.get_args(hint)[0]
                hint = _portable(hint, memo)
                wrap = (
                    typing_extensions.Required
                    if name in required
                    else typing_extensions.NotRequired
                )
                fields[name] = wrap[hint]
            make: Any = typing_extensions.TypedDict  # called with a name known only now
            portable: Any = make(tp.__name__, fields)
            portable.__module__ = tp.__module__
            portable.__qualname__ = tp.__qualname__
            memo[tp] = portable
            return portable
        args = typing.get_args(tp)
        if not args:
            return tp
        new = tuple(_portable(arg, memo) for arg in args)
        if all(a is b for a, b in zip(new, args, strict=True)):
            return tp
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            return typing.Annotated[(new[0], *tp.__metadata__)]
        if origin is typing.Union or isinstance(tp, types.UnionType):
            return typing.Union[new]  # noqa: UP007  # rebuilding a union from its parts
        if isinstance(tp, types.GenericAlias):
            return types.GenericAlias(origin, new)
        copy_with = getattr(tp, "copy_with", None)
        return copy_with(new) if callable(copy_with) else tp

else:

    def pydantic_type(tp: Any) -> Any:
        """``tp`` as pydantic accepts it (on Python 3.12 and later: unchanged)."""
        return tp

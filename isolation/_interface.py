"""The remote interface of a class: which of its methods cross the boundary, and how.

A class's remote interface is read from the class itself, never from an instance: every public
``async def`` is a *call*, every public async generator method is a *stream*. Private names,
sync methods, properties, static and class methods are not part of it, and neither is any name
in ``exclude`` (the runtime excludes lifecycle hooks such as ``startup``). Both ends derive the
same interface from the same class: the caller's proxy offers exactly these methods and the
serving side answers only these names, so no message can reach an arbitrary attribute.

Building an interface checks every annotation once (an unsupported type is a
SerializationError naming the method and the parameter, raised when the proxy is built or the
object served, not at the first call) and is cached per class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from ._channel import LIFECYCLE
from ._codec import MethodCodec

__all__ = ["RemoteMethod", "check_remote_interface", "explain_unreachable", "remote_interface"]


@dataclass(frozen=True, slots=True)
class RemoteMethod:
    """One method of a remote interface: its name, whether it streams, its value codec."""

    name: str
    stream: bool
    codec: MethodCodec


def remote_interface(cls: type, exclude: Collection[str] = ()) -> Mapping[str, RemoteMethod]:
    """The methods of ``cls`` reachable across the boundary, by name."""
    if not isinstance(cls, type):
        raise TypeError(f"expected a class for the remote interface, got {cls!r}")
    return _interface(cls, frozenset(exclude))


def check_remote_interface(cls: type) -> None:
    """Raise the :class:`~isolation.SerializationError` that building a proxy of ``cls`` (or
    serving it) would raise in a child, naming the method, the parameter and the type; return
    if every value of its remote interface can cross. Lifecycle hooks are not part of it."""
    remote_interface(cls, LIFECYCLE)


@cache
def _interface(cls: type, exclude: frozenset[str]) -> Mapping[str, RemoteMethod]:
    methods: dict[str, RemoteMethod] = {}
    for name in dir(cls):
        fn = _remote_function(cls, name, exclude)
        if fn is None:
            continue
        stream = inspect.isasyncgenfunction(fn)
        methods[name] = RemoteMethod(
            name, stream, MethodCodec(f"{cls.__qualname__}.{name}", fn, stream=stream)
        )
    return methods


def _remote_function(cls: type, name: str, exclude: frozenset[str]) -> Callable[..., Any] | None:
    if name.startswith("_") or name in exclude:
        return None
    attr = inspect.getattr_static(cls, name, None)
    if not inspect.isfunction(attr):
        return None
    if inspect.isasyncgenfunction(attr) or inspect.iscoroutinefunction(attr):
        return attr
    return None


def explain_unreachable(cls: type, name: str, exclude: Collection[str] = ()) -> str:
    """Say why ``name`` is not a remote method of ``cls``, and what is."""
    owner = cls.__qualname__
    reachable = ", ".join(sorted(remote_interface(cls, exclude))) or "none"
    attr = inspect.getattr_static(cls, name, None) if isinstance(name, str) else None
    if attr is None:
        why = f"{owner} has no attribute {name!r}"
    elif name.startswith("_"):
        why = f"{owner}.{name} is private"
    elif name in exclude:
        why = f"{owner}.{name} is not offered across the isolation boundary"
    elif inspect.isfunction(attr):
        why = f"{owner}.{name} is not async"
    else:
        why = f"{owner}.{name} is not a method"
    return (
        f"{why}; only public async methods cross the isolation boundary "
        f"(reachable on {owner}: {reachable})"
    )

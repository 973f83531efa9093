"""Proxies: local stand-ins for an object served on the other side of a channel.

A proxy class is generated from the dependency's class, once per class, and offers exactly its
remote interface: each public ``async def`` becomes an ``async def`` that sends a call and
awaits the answer, each public async generator method becomes an async generator that opens a
remote stream and yields its items. Signatures, names and docstrings are copied, so
``inspect`` and IDEs see the real method. Any other attribute raises an ``AttributeError``
that says why it is not reachable.

The proxy's async generators behave like local ones: leaving an ``async for`` early (``break``,
an exception, ``aclose()``) closes the generator, which cancels the remote one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from functools import cache
from typing import Any, Protocol

from ._interface import RemoteMethod, explain_unreachable, remote_interface
from ._stream import END, StreamReader

__all__ = ["Channel", "Proxy", "build_proxy"]


class Channel(Protocol):
    """What a proxy sends its calls and streams through (a :class:`~isolation.Peer`)."""

    async def _call(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    def _open_stream(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, StreamReader]: ...

    def _close_stream(self, stream_id: int) -> None: ...


class Proxy:
    """Base class of generated proxies; holds the channel and the remote object's name."""

    __slots__ = ("_isolation_peer", "_isolation_target")
    _isolation_class: type
    _isolation_exclude: frozenset[str]

    def __init__(self, peer: Channel, target: str) -> None:
        self._isolation_peer = peer
        self._isolation_target = target

    def __repr__(self) -> str:
        return (
            f"<{self._isolation_class.__qualname__} proxy for {self._isolation_target!r} "
            f"via {self._isolation_peer!r}>"
        )

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the generated class does not define.
        raise AttributeError(
            explain_unreachable(self._isolation_class, name, self._isolation_exclude)
        )


def build_proxy(peer: Channel, target: str, cls: type, exclude: Collection[str] = ()) -> Proxy:
    """A proxy for the object served as ``target`` on the other side of ``peer``."""
    return _proxy_class(cls, frozenset(exclude))(peer, target)


@cache
def _proxy_class(cls: type, exclude: frozenset[str]) -> type[Proxy]:
    methods: Mapping[str, RemoteMethod] = remote_interface(cls, exclude)
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__module__": cls.__module__,
        "__doc__": f"Proxy for a {cls.__qualname__} served in another process.",
        "_isolation_class": cls,
        "_isolation_exclude": exclude,
    }
    for name, method in methods.items():
        fn = _stream_method(method) if method.stream else _call_method(method)
        original = getattr(cls, name)
        fn.__name__ = name
        fn.__qualname__ = f"{cls.__qualname__}Proxy.{name}"
        fn.__doc__ = original.__doc__
        fn.__signature__ = method.codec.signature  # type: ignore[attr-defined]
        namespace[name] = fn
    return type(f"{cls.__qualname__}Proxy", (Proxy,), namespace)


def _call_method(method: RemoteMethod) -> Callable[..., Any]:
    async def call(self: Proxy, /, *args: Any, **kwargs: Any) -> Any:
        return await self._isolation_peer._call(self._isolation_target, method, args, kwargs)

    return call


def _stream_method(method: RemoteMethod) -> Callable[..., Any]:
    async def stream(self: Proxy, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        peer = self._isolation_peer
        stream_id, reader = peer._open_stream(self._isolation_target, method, args, kwargs)
        decode = method.codec.decode_result
        try:
            while True:
                value = await reader.next()
                if value is END:
                    return
                yield decode(value)
        finally:
            peer._close_stream(stream_id)

    return stream

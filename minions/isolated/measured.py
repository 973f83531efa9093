"""Measured stand-ins: time and count the calls that cross an isolation boundary, per method.

When a runtime has a :class:`~minions.core.observer.CallObserver` (its metrics are on), an
isolated component's channel carries calls both ways, and each side is measured where the
runtime can see it:

* calls *into* an isolated component (an in-process dependent calling an isolated resource) go
  through a :func:`measured_proxy`: a stand-in for the proxy that offers the same methods and
  times each call as the caller sees it, the round trip included;
* calls *out of* a child (an isolated minion calling the parent's resources) arrive at a
  :func:`measured_service`: a stand-in for the served resource that times the work done in this
  process for each call. The channel serves only instances of the resource's class, so the
  stand-in reports that class as its ``__class__`` (the way test doubles pass ``isinstance``).

Each method gets its meter once, when the stand-in is built, so a call costs two clock reads
and the meter's update. A method marked ``@Resource.untracked`` gets no meter: the stand-in
passes it through to the proxy or the resource untouched. Streams count their items and how
they ended. Without an observer the runtime hands out the proxy and the resource themselves:
nothing is wrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from isolation import remote_interface

from ..core.component import is_untracked
from ..core.observer import CallMeter, CallObserver

__all__ = ["measured_proxy", "measured_service"]

#: The hooks that never cross the boundary (the channel excludes the same names).
LIFECYCLE = frozenset({"startup", "run", "shutdown"})

_perf = time.perf_counter


def measured_proxy(proxy: object, cls: type, channel: str, observer: CallObserver) -> object:
    """A stand-in for ``proxy`` (of an isolated ``cls``) that measures each call."""
    return _MeasuredProxy(proxy, _methods(proxy, cls, channel, channel, observer))


def measured_service(
    service: object, cls: type, channel: str, target: str, observer: CallObserver
) -> object:
    """A stand-in for ``service`` (a ``cls`` served to ``channel``'s child) that measures."""
    return _MeasuredService(service, cls, _methods(service, cls, channel, target, observer))


class _MeasuredProxy:
    __slots__ = ("__dict__", "_measured_target")

    def __init__(self, target: object, methods: dict[str, Callable[..., Any]]) -> None:
        self._measured_target = target
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not measured methods: the proxy explains them.
        return getattr(self._measured_target, name)

    def __repr__(self) -> str:
        return f"<measured {self._measured_target!r}>"


class _MeasuredService(_MeasuredProxy):
    __slots__ = ("_measured_class",)

    def __init__(self, target: object, cls: type, methods: dict[str, Callable[..., Any]]) -> None:
        super().__init__(target, methods)
        self._measured_class = cls

    @property  # type: ignore[misc]  # deliberately overrides __class__ for isinstance()
    def __class__(self) -> type:
        return self._measured_class


def _methods(
    target: object, cls: type, channel: str, target_name: str, observer: CallObserver
) -> dict[str, Callable[..., Any]]:
    methods: dict[str, Callable[..., Any]] = {}
    for name, method in remote_interface(cls, LIFECYCLE).items():
        if is_untracked(inspect.getattr_static(cls, name)):
            continue  # reached through __getattr__, unmeasured
        meter = observer.meter(channel, target_name, name)
        original = getattr(target, name)
        wrapped = _stream(original, meter) if method.stream else _call(original, meter)
        methods[name] = functools.wraps(original)(wrapped)
    return methods


def _call(
    original: Callable[..., Coroutine[Any, Any, Any]], meter: CallMeter
) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = _perf()
        try:
            result = await original(*args, **kwargs)
        except asyncio.CancelledError:
            meter.call(_perf() - started, "cancelled")
            raise
        except BaseException:
            meter.call(_perf() - started, "error")
            raise
        meter.call(_perf() - started, "ok")
        return result

    return call


def _stream(
    original: Callable[..., AsyncIterator[Any]], meter: CallMeter
) -> Callable[..., AsyncIterator[Any]]:
    async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        outcome = "ok"
        try:
            # aclosing: a consumer that leaves early closes the original too, at once.
            async with contextlib.aclosing(original(*args, **kwargs)) as items:  # type: ignore[type-var]
                async for item in items:
                    meter.item()
                    yield item
        except GeneratorExit:
            raise  # closed by the consumer: an ordinary end
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            meter.stream(outcome)

    return stream

"""Router: one proxy in front of a set of replicas, each reached over its own Peer.

A replicated component's dependents hold one proxy whose channel is a :class:`Router`. The
replicas sit in numbered *slots* (``0..n-1``); each call and stream goes to one slot's Peer,
chosen when it is made:

* **least loaded** (the default): the live slot with the fewest calls and streams in flight,
  ties broken in turn;
* **by key** (``route_by="pair"``): the value of the method's ``pair`` parameter picks the slot
  by jump consistent hashing, so equal values always reach the same replica and growing from
  n to n+1 slots moves about 1/(n+1) of the keys (all of them to the new slot). A method
  without that parameter is routed least loaded.

Calls of one key leave in the order they were made. A key's call waits, behind the earlier
calls of that key, while its slot cannot take it (the replica is starting or restarting) and
while calls of that key made before a resize are still in flight on the slot the key left:
the new replica never runs a call of a key before the old one has finished the key's earlier
calls. A waiting call gives up after ``wait_timeout`` seconds with :class:`ComponentCrashed`.

A call that fails because its replica died (``ComponentCrashed``, raised by the replica's Peer)
is retried once, on another live replica or (by key) on the slot's next replica, when its
method is *idempotent*; otherwise the caller gets the error. Streams are never retried: items
may already have been delivered.

Slots are filled and emptied by whoever supervises the replicas (``attach`` when a replica is
READY, ``detach`` when it ends, ``retire`` when it is given up for good, ``resize`` to scale);
the router never starts or stops anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

from ._errors import ComponentCrashed
from ._interface import RemoteMethod, remote_interface
from ._proxy import Proxy, build_proxy
from ._rpc import Peer, PeerState
from ._stream import StreamReader

__all__ = ["Router", "RouterStatistics", "check_route_by", "jump_hash"]

_MASK: Final = (1 << 64) - 1
_UNSET: Final = object()


def check_route_by(cls: type, route_by: str, exclude: Collection[str] = ()) -> None:
    """Raise ``ValueError`` unless some remote method of ``cls`` takes ``route_by``."""
    methods = remote_interface(cls, exclude)
    if any(_key_position(method, route_by) is not None for method in methods.values()):
        return
    names = ", ".join(sorted(methods)) or "none"
    raise ValueError(
        f"route_by={route_by!r}: no method of {cls.__qualname__} takes a parameter named "
        f"{route_by!r} (its remote methods: {names}); name a parameter of the methods whose "
        "calls must stay in order per value"
    )


@dataclass(frozen=True)
class _KeyParam:
    """Where a method takes the routing key: its position, name and default."""

    position: int | None
    name: str
    default: Any


def _key_position(method: RemoteMethod, route_by: str) -> _KeyParam | None:
    params = list(method.codec.signature.parameters.values())[1:]  # drop self
    position = 0
    for param in params:
        positional = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
        if param.name == route_by and param.kind is not param.VAR_KEYWORD:
            if param.kind is param.VAR_POSITIONAL:
                return None
            default = _UNSET if param.default is inspect.Parameter.empty else param.default
            return _KeyParam(position if positional else None, param.name, default)
        if positional:
            position += 1
    return None


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash (Lamping and Veach): a bucket in ``range(buckets)`` for ``key``.

    Going from n to n+1 buckets moves exactly the keys that land in the new bucket.
    """
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & _MASK
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def _mix(value: int) -> int:
    """Spread a hash over 64 bits (splitmix64's finaliser): small ints hash to themselves."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


@dataclass(eq=False)
class _Slot:
    index: int
    peer: Peer | None = None
    calls: int = 0  # calls and streams in flight
    retired: bool = False  # given up for good: keys move to the other slots
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def live(self) -> bool:
        return self.peer is not None and self.peer.state is PeerState.OPEN


class _Waiter:
    """A call waiting for its turn; ``future`` is resolved to make it look again."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


@dataclass(eq=False)
class _Key:
    """The calls of one routing key: how many are in flight, where, and who waits."""

    calls: int = 0
    slot: int = -1
    queue: deque[_Waiter] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    """A snapshot of a Router: its slots and the calls in flight and waiting."""

    slots: int
    live: int
    calls_in_flight: tuple[int, ...]  # per slot, draining slots included
    waiting: int  # keyed calls waiting for their turn


class Router:
    """Routes the calls of one proxy over the replicas in its slots (see the module docstring).

    ``component`` names the replicated component in errors. ``route_by`` names the key
    parameter; ``idempotent`` holds the names of the methods retried once after a replica
    died. Create it inside the event loop that will use it.
    """

    def __init__(
        self,
        component: str,
        cls: type,
        *,
        exclude: Collection[str] = (),
        route_by: str | None = None,
        idempotent: Collection[str] = (),
        wait_timeout: float = 10.0,
    ) -> None:
        self.component = component
        self._cls = cls
        self._exclude = frozenset(exclude)
        self._route_by = route_by
        self._idempotent = frozenset(idempotent)
        self._wait_timeout = wait_timeout
        self._loop = asyncio.get_running_loop()
        self._slots: dict[int, _Slot] = {}
        self._count = 0  # slots 0.._count-1 take new calls; higher ones are draining
        self._turn = itertools.count()
        self._live = asyncio.Event()  # some slot can take a least-loaded call
        self._keys: dict[Any, _Key] = {}
        self._blocked: set[Any] = set()  # keys with calls waiting
        self._params: dict[str, _KeyParam | None] = {}
        if route_by is not None:
            methods = remote_interface(cls, self._exclude)
            self._params = {name: _key_position(m, route_by) for name, m in methods.items()}
        self._next_stream = itertools.count(1)
        self._streams: dict[int, _OpenStream] = {}
        self._closed: str | None = None

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<Router {self.component}: {stats.live}/{stats.slots} live, "
            f"{sum(stats.calls_in_flight)} in flight, {stats.waiting} waiting>"
        )

    # -- for the supervisor of the replicas -----------------------------------------------------

    def proxy(self) -> Proxy:
        """The one proxy dependents use: the component's methods, routed."""
        return build_proxy(self, "component", self._cls, self._exclude)

    @property
    def count(self) -> int:
        """How many slots take new calls."""
        return self._count

    def resize(self, count: int) -> None:
        """Route new calls over slots ``0..count-1``. Slots beyond are *draining*: they take no
        new call, their calls in flight go on, and keys that leave them wait for those."""
        if count < 1:
            raise ValueError(f"a router needs at least one slot, got {count}")
        for index in range(count):
            slot = self._slots.setdefault(index, _Slot(index))
            if not slot.calls:
                slot.idle.set()
        self._count = count
        self._update_live()
        self._wake_blocked()

    def attach(self, index: int, peer: Peer) -> None:
        """Slot ``index`` has a READY replica reached over ``peer``."""
        slot = self._slots.setdefault(index, _Slot(index))
        slot.peer = peer
        slot.retired = False
        self._update_live()
        self._wake_blocked()

    def detach(self, index: int) -> None:
        """Slot ``index``'s replica has ended (it may come back); a draining slot is removed
        once its calls have ended."""
        slot = self._slots.get(index)
        if slot is None:
            return
        slot.peer = None
        if index >= self._count and not slot.calls:
            del self._slots[index]
        self._update_live()

    def retire(self, index: int) -> None:
        """Slot ``index`` will have no replica again (given up): its keys move to the others."""
        slot = self._slots.get(index)
        if slot is not None:
            slot.retired = True
            slot.peer = None
        self._update_live()
        if self._all_retired():
            self._live.set()  # least-loaded waiters wake and fail at once
        self._wake_blocked(force=self._all_retired())

    def calls_in_flight(self, index: int) -> int:
        slot = self._slots.get(index)
        return slot.calls if slot is not None else 0

    async def drained(self, index: int, timeout: float) -> bool:  # noqa: ASYNC109 - a bound
        """Wait until slot ``index`` has no call or stream in flight; False after ``timeout``."""
        slot = self._slots.get(index)
        if slot is None or not slot.calls:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(slot.idle.wait(), timeout)
        return not slot.calls

    def close(self, reason: str) -> None:
        """Fail every waiting call and every new one with ``ComponentCrashed(reason)``."""
        self._closed = reason
        self._live.set()  # wake least-loaded waiters: they see the router closed
        self._wake_blocked(force=True)

    def statistics(self) -> RouterStatistics:
        slots = sorted(self._slots.values(), key=lambda s: s.index)
        return RouterStatistics(
            slots=self._count,
            live=sum(1 for s in slots if s.index < self._count and s.live()),
            calls_in_flight=tuple(s.calls for s in slots),
            waiting=sum(len(self._keys[k].queue) for k in self._blocked if k in self._keys),
        )

    # -- the Channel of the proxy -------------------------------------------------------------

    async def _call(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        retry = method.name in self._idempotent
        key = self._key_of(method, args, kwargs)
        while True:
            slot = await self._enter(key, method)
            peer = slot.peer
            assert peer is not None
            try:
                return await peer._call(target, method, args, kwargs)
            except ComponentCrashed:
                if not retry or self._closed is not None:
                    raise
                retry = False
            finally:
                self._leave(slot, key)

    def _open_stream(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, StreamReader]:
        key = self._key_of(method, args, kwargs)
        stream = _OpenStream(self, key, target, method, args, kwargs)
        slot = self._enter_now(key, method)
        if slot is not None:
            stream.open(slot)  # raises (and releases the slot) if the arguments cannot travel
        else:
            stream.waiter = self._enqueue(key, method)
        stream_id = next(self._next_stream)
        self._streams[stream_id] = stream  # until the proxy's generator closes it
        return stream_id, stream  # type: ignore[return-value]  # a reader by duck typing

    def _close_stream(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.close()

    # -- choosing a slot ------------------------------------------------------------------------

    def _key_of(self, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The routing key of a call, or ``_UNSET`` for a least-loaded one."""
        if self._route_by is None:
            return _UNSET
        param = self._params.get(method.name)
        if param is None:
            return _UNSET
        if param.name in kwargs:
            key = kwargs[param.name]
        elif param.position is not None and param.position < len(args):
            key = args[param.position]
        else:
            key = param.default
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"{self.component}.{method.name}: route_by={self._route_by!r} needs a hashable "
                f"value (a str, int, tuple, frozen dataclass...), got {type(key).__name__}"
            ) from None
        return key

    def _slot_for(self, key: Any) -> _Slot | None:
        """The slot a key maps to now; None when every slot is retired."""
        count = self._count
        candidate = self._slots.get(jump_hash(_mix(hash(key) & _MASK), count))
        if candidate is not None and not candidate.retired:
            return candidate
        healthy = [i for i in range(count) if not self._slots[i].retired]
        if not healthy:
            return None
        return self._slots[healthy[jump_hash(_mix(hash(key) & _MASK), len(healthy))]]

    def _least_loaded(self) -> _Slot | None:
        best: _Slot | None = None
        count = self._count
        start = next(self._turn) % count if count else 0
        for offset in range(count):
            slot = self._slots[(start + offset) % count]
            if slot.live() and (best is None or slot.calls < best.calls):
                best = slot
                if not slot.calls:
                    break
        return best

    def _ready_for(self, key: Any) -> _Slot | None:
        """The slot that may take ``key``'s next call now, if any (its queue aside)."""
        slot = self._slot_for(key)
        if slot is None or not slot.live():
            return None
        state = self._keys.get(key)
        if state is not None and state.calls and state.slot != slot.index:
            return None  # earlier calls of this key still run where the key was before
        return slot

    def _enter_now(self, key: Any, method: RemoteMethod) -> _Slot | None:
        """Take a slot at once if the call may leave now, counting it in flight."""
        self._check_open(method)
        if key is _UNSET:
            slot = self._least_loaded()
        else:
            state = self._keys.get(key)
            if state is not None and state.queue:
                return None  # behind earlier calls of the same key
            slot = self._ready_for(key)
        if slot is not None:
            self._start(slot, key)
        return slot

    async def _enter(self, key: Any, method: RemoteMethod) -> _Slot:
        slot = self._enter_now(key, method)
        if slot is not None:
            return slot
        return await self._await_turn(key, method, self._enqueue(key, method))

    def _enqueue(self, key: Any, method: RemoteMethod) -> _Waiter:
        waiter = _Waiter(self._loop.create_future())
        if key is not _UNSET:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Key()
            state.queue.append(waiter)
            self._blocked.add(key)
            self._wake(key)
        return waiter

    async def _await_turn(self, key: Any, method: RemoteMethod, waiter: _Waiter) -> _Slot:
        """Wait until the call may leave; raise ComponentCrashed after ``wait_timeout``."""
        try:
            async with asyncio.timeout(self._wait_timeout):
                if key is _UNSET:
                    return await self._await_least_loaded(method)
                return await self._await_keyed(key, method, waiter)
        except TimeoutError:
            raise ComponentCrashed(
                f"{self.component}.{method.name} failed: no replica of {self.component} could "
                f"take the call within {self._wait_timeout:g} s (its replicas are starting, "
                "restarting or given up); retry later",
                component=self.component,
                method=method.name,
            ) from None
        finally:
            if key is not _UNSET:
                self._forget_waiter(key, waiter)

    async def _await_least_loaded(self, method: RemoteMethod) -> _Slot:
        while True:
            self._check_open(method)
            slot = self._least_loaded()
            if slot is not None:
                self._start(slot, _UNSET)
                return slot
            self._live.clear()
            await self._live.wait()

    async def _await_keyed(self, key: Any, method: RemoteMethod, waiter: _Waiter) -> _Slot:
        state = self._keys[key]
        while True:
            await waiter.future
            self._check_open(method)
            if state.queue and state.queue[0] is waiter:
                slot = self._ready_for(key)
                if slot is not None:
                    state.queue.popleft()
                    self._start(slot, key)
                    self._wake(key)  # the next call of the key may follow at once
                    return slot
            # Not yet: wait in the same place, woken again when a replica is attached, when
            # the key's earlier calls end, or on a resize.
            waiter.future = self._loop.create_future()

    def _forget_waiter(self, key: Any, waiter: _Waiter) -> None:
        state = self._keys.get(key)
        if state is None:
            return
        with contextlib.suppress(ValueError):
            state.queue.remove(waiter)
        if not state.queue:
            self._blocked.discard(key)
            if not state.calls:
                del self._keys[key]
        else:
            self._wake(key)

    def _wake(self, key: Any) -> None:
        """Let the first waiting call of ``key`` look again, if it may leave now."""
        state = self._keys.get(key)
        if state is None or not state.queue:
            return
        head = state.queue[0].future
        if not head.done() and (self._closed is not None or self._ready_for(key) is not None):
            head.set_result(None)

    def _wake_blocked(self, *, force: bool = False) -> None:
        for key in list(self._blocked):
            state = self._keys.get(key)
            if state is None or not state.queue:
                continue
            head = state.queue[0].future
            if not head.done() and (force or self._ready_for(key) is not None):
                head.set_result(None)

    def _check_open(self, method: RemoteMethod) -> None:
        if self._closed is not None:
            raise ComponentCrashed(
                f"{self.component}.{method.name} failed: {self._closed}",
                component=self.component,
                method=method.name,
            )
        if self._all_retired():
            raise ComponentCrashed(
                f"{self.component}.{method.name} failed: every replica of {self.component} was "
                "given up",
                component=self.component,
                method=method.name,
            )

    def _all_retired(self) -> bool:
        return bool(self._count) and all(self._slots[i].retired for i in range(self._count))

    def _update_live(self) -> None:
        if any(self._slots[i].live() for i in range(self._count) if i in self._slots):
            self._live.set()
        elif self._closed is None:
            self._live.clear()

    # -- counting calls in flight ---------------------------------------------------------------

    def _start(self, slot: _Slot, key: Any) -> None:
        slot.calls += 1
        slot.idle.clear()
        if key is not _UNSET:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _Key()
            state.calls += 1
            state.slot = slot.index

    def _leave(self, slot: _Slot, key: Any) -> None:
        slot.calls -= 1
        if not slot.calls:
            slot.idle.set()
            if slot.index >= self._count and slot.peer is None:
                self._slots.pop(slot.index, None)
        if key is not _UNSET:
            state = self._keys.get(key)
            if state is not None:
                state.calls -= 1
                if not state.calls:
                    if state.queue:
                        self._wake(key)
                    else:
                        del self._keys[key]


class _OpenStream:
    """A routed stream: the reader the proxy sees, opened on a replica at once or when its
    turn comes (its place in line was taken when it was opened)."""

    def __init__(
        self,
        router: Router,
        key: Any,
        target: str,
        method: RemoteMethod,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._router = router
        self._key = key
        self._target = target
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self.waiter: _Waiter | None = None
        self._slot: _Slot | None = None
        self._peer: Peer | None = None
        self._stream_id = 0
        self._reader: StreamReader | None = None
        self._closed = False

    def open(self, slot: _Slot) -> None:
        self._slot = slot
        self._peer = slot.peer
        assert self._peer is not None
        try:
            self._stream_id, self._reader = self._peer._open_stream(
                self._target, self._method, self._args, self._kwargs
            )
        except BaseException:
            self._release()
            raise

    async def next(self) -> Any:
        if self._reader is None:
            router, waiter = self._router, self.waiter
            assert waiter is not None and not self._closed
            self.waiter = None
            self.open(await router._await_turn(self._key, self._method, waiter))
        assert self._reader is not None
        return await self._reader.next()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._peer is not None:
            self._peer._close_stream(self._stream_id)
        self._release()
        if self.waiter is not None:
            self._router._forget_waiter(self._key, self.waiter)
            self.waiter = None

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self._router._leave(slot, self._key)

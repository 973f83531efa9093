"""Peer: one end of a bidirectional call-and-stream channel over a connected ZeroMQ socket.

Both ends are symmetric. Each can :meth:`~Peer.serve` objects under a name and build
:meth:`~Peer.proxy` objects for what the other end serves; calls and streams flow both ways at
once, with any number in flight. Lifecycle messages of the process layer (hello, ready,
heartbeat, stop, log, exited, ...) share the socket as *control* messages:
:meth:`~Peer.send_control` out, the ``on_control`` callback in.

States::

    OPEN ──fail_pending()/bad frame──> BROKEN ──aclose()──> CLOSED
      └───────────────────aclose()───────────────────────────┘

BROKEN: the other end died or misbehaved; new calls and streams fail at once with
ComponentCrashed, control messages can still be sent and received. CLOSED: nothing more is
sent or received; every call, stream and served task has ended.

How a message moves, and why it is fast:

* Sending never awaits the socket. A message is packed in the caller (so an unencodable value
  raises there, naming the parameter), appended to an outbox, and the outbox is flushed once per
  event-loop pass (``call_soon`` on the first message of a pass), coalescing everything produced
  in that pass into one ZeroMQ message. Sends are non-blocking; frames refused by a full or
  not-yet-connected socket wait, in order, until the socket signals it can take them.
* Receiving is a reader callback on the socket's file descriptor, registered while
  :meth:`~Peer.run` runs. It drains the socket, resolves callers' futures directly (no queue,
  no intermediate task) and starts served methods as *eager* tasks: a method that answers
  without suspending has its reply queued before the callback returns, and the replies of a
  whole batch leave in one frame.
* The descriptor ZeroMQ exposes is edge-triggered: after every send the socket is asked whether
  messages arrived meanwhile, so none is left unread until the next edge.

The socket must be a connected ``PAIR`` or ``DEALER`` (single-part messages, one peer). The
Peer owns it for its lifetime: do not use it directly, call :meth:`~Peer.aclose` (or cancel
:meth:`~Peer.run`) before closing it; the Peer never closes it itself.
"""

from __future__ import annotations

import asyncio
import enum
import traceback
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

import zmq

from ._eager import start_task
from ._errors import ComponentCrashed, RemoteError, SerializationError, remote_error
from ._interface import RemoteMethod, explain_unreachable, remote_interface
from ._protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_BYTES,
    ErrorCode,
    Kind,
    build_frames,
    decode_frame,
    pack,
)
from ._proxy import build_proxy
from ._stream import DEFAULT_STREAM_CREDIT, StreamCredit, StreamReader

__all__ = ["Peer", "PeerState", "PeerStatistics"]

# Unbound socket methods: they skip zmq.asyncio's future machinery (the Peer never waits on
# the socket) and work the same on plain and asyncio sockets.
_send = zmq.Socket.send
_recv = zmq.Socket.recv
_get = zmq.Socket.get
_NOBLOCK: Final = zmq.NOBLOCK
_EVENTS: Final = zmq.EVENTS
_POLLIN: Final = zmq.POLLIN
_POLLOUT: Final = zmq.POLLOUT

_MAX_FRAMES_PER_WAKEUP: Final = 64  # then let other callbacks run before reading on
_CLOSE_GRACE_SECONDS: Final = 5.0  # for served tasks to finish after being cancelled

_CALL: Final = int(Kind.CALL)
_RESULT: Final = int(Kind.RESULT)
_ERROR: Final = int(Kind.ERROR)
_CANCEL: Final = int(Kind.CANCEL)
_STREAM_OPEN: Final = int(Kind.STREAM_OPEN)
_STREAM_ITEM: Final = int(Kind.STREAM_ITEM)
_STREAM_END: Final = int(Kind.STREAM_END)
_STREAM_ERROR: Final = int(Kind.STREAM_ERROR)
_CREDIT: Final = int(Kind.CREDIT)
_CONTROL: Final = int(Kind.CONTROL)
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)


class PeerState(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """A snapshot of a Peer: what is in flight in each direction."""

    state: PeerState
    calls_pending: int  # calls this side made, awaiting an answer
    streams_open: int  # streams this side consumes
    serving: int  # calls and streams of the other side running here
    frames_queued: int  # frames waiting for the socket to accept them


@dataclass(frozen=True, slots=True)
class _Served:
    cls: type
    methods: Mapping[str, RemoteMethod]
    bound: Mapping[str, Callable[..., Any]]
    exclude: frozenset[str]


class Peer:
    """One end of a channel: serves local objects, proxies remote ones, carries control messages.

    ``component`` names the channel in messages (usually the isolated component it reaches).
    ``max_frame_bytes`` bounds one ZeroMQ message in both directions (set the same on both
    ends). ``stream_credit`` is the window of items a stream's producer may run ahead of its
    consumer. ``on_control(kind, body)`` receives control messages; if it raises, the channel
    is broken and :meth:`run` raises that error (raise ProtocolError for a message that must
    not happen). Create the Peer inside the event loop that will run it.
    """

    def __init__(
        self,
        socket: zmq.Socket[Any],
        *,
        component: str,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_control: Callable[[str, Any], None] | None = None,
        stream_credit: int = DEFAULT_STREAM_CREDIT,
    ) -> None:
        if max_frame_bytes <= FRAME_HEADER_BYTES + 16:
            raise ValueError(f"max_frame_bytes must be more than 21 bytes, got {max_frame_bytes}")
        if stream_credit < 1:
            raise ValueError(f"stream_credit must be at least 1, got {stream_credit}")
        self.component = component
        self._socket = socket
        self._fd = int(_get(socket, zmq.FD))
        self._loop = asyncio.get_running_loop()
        self._max_frame = max_frame_bytes
        self._max_message = max_frame_bytes - FRAME_HEADER_BYTES
        self._on_control = on_control
        self._credit = stream_credit
        self._state = PeerState.OPEN
        self._failure: BaseException | None = None  # why it is BROKEN
        self._fatal: BaseException | None = None  # why receiving stopped for good
        self._outbox: list[bytes] = []
        self._unsent: deque[bytes] = deque()
        self._flush_scheduled = False
        self._reader_on = False
        self._running = False
        self._run_waiter: asyncio.Future[None] | None = None
        self._next_id = 1
        # Outgoing: calls and streams this side started, by id.
        self._calls: dict[int, tuple[asyncio.Future[Any], RemoteMethod]] = {}
        self._streams: dict[int, StreamReader] = {}
        # Incoming: calls and streams of the other side running here, by the other side's id.
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._credits: dict[int, StreamCredit] = {}
        self._served: dict[str, _Served] = {}
        self._handlers: dict[int, Callable[[list[Any]], None]] = {
            _CALL: self._on_call,
            _RESULT: self._on_result,
            _ERROR: self._on_error,
            _CANCEL: self._on_cancel,
            _STREAM_OPEN: self._on_stream_open,
            _STREAM_ITEM: self._on_stream_item,
            _STREAM_END: self._on_stream_end,
            _STREAM_ERROR: self._on_stream_error,
            _CREDIT: self._on_credit,
            _CONTROL: self._on_control_message,
        }

    def __repr__(self) -> str:
        return (
            f"<Peer {self.component} {self._state.value}: {len(self._calls)} calls pending, "
            f"{len(self._streams)} streams, serving {len(self._serving)}>"
        )

    @property
    def state(self) -> PeerState:
        return self._state

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(
            self._state, len(self._calls), len(self._streams), len(self._serving), len(self._unsent)
        )

    # -- public API -------------------------------------------------------------------------

    def serve(self, name: str, obj: object, cls: type, *, exclude: Collection[str] = ()) -> None:
        """Answer calls and streams for ``name`` with ``obj``'s public async methods of ``cls``.

        Only the remote interface of ``cls`` is reachable (minus ``exclude``); anything else is
        answered with an error naming what is. Serving a name again replaces the object.
        """
        if not isinstance(obj, cls):
            raise TypeError(f"cannot serve {obj!r} as {cls.__qualname__}: it is not an instance")
        methods = remote_interface(cls, exclude)
        bound = {method: getattr(obj, method) for method in methods}
        self._served[name] = _Served(cls, methods, bound, frozenset(exclude))

    def proxy(self, name: str, cls: type, *, exclude: Collection[str] = ()) -> Any:
        """A proxy for the object the other end serves as ``name``, offering ``cls``'s methods."""
        return build_proxy(self, name, cls, exclude)

    async def run(self) -> None:
        """Receive until the Peer is closed; raises ProtocolError if the other end sends garbage.

        Cancelling ``run()`` stops receiving (nothing else); it may be called again.
        """
        if self._running:
            raise RuntimeError(f"{self!r}: run() is already running")
        if self._state is PeerState.CLOSED:
            return
        if self._fatal is not None:
            raise self._fatal
        waiter = self._run_waiter = self._loop.create_future()
        self._running = True
        self._sync_reader()
        # Messages that arrived before now raised no edge we could see: look once.
        self._loop.call_soon(self._on_readable)
        try:
            await waiter
        finally:
            self._running = False
            self._run_waiter = None
            self._sync_reader()

    def send_control(self, kind: str, body: Any = None) -> None:
        """Send a control message to the other end's ``on_control``; ``body`` is plain data."""
        if self._state is PeerState.CLOSED:
            raise ComponentCrashed(
                f"cannot send {kind!r} to {self.component}: the channel is closed"
            )
        try:
            message = pack(Kind.CONTROL, 0, kind, body)
        except _PACK_ERRORS as exc:
            raise SerializationError(
                f"control message {kind!r}: cannot send its body ({exc}); send builtins"
            ) from exc
        self._check_size(message, f"control message {kind!r}")
        self._enqueue(message)

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every pending call and stream of this side because of ``exc``.

        Each waiting caller gets a ComponentCrashed naming its own call, chained from ``exc``.
        The Peer becomes BROKEN: later calls and streams fail at once the same way, while
        control messages still flow (the process layer may still be talking to the child).
        """
        if self._state is PeerState.OPEN:
            self._state = PeerState.BROKEN
            self._failure = exc
        calls, self._calls = self._calls, {}
        for future, method in calls.values():
            if not future.done():
                future.set_exception(self._crashed(method.codec.label, exc))
        streams, self._streams = self._streams, {}
        for reader in streams.values():
            reader.finish(self._crashed(reader.label, exc))

    async def aclose(self) -> None:
        """Close the channel: queued messages are sent, pending calls fail with ComponentCrashed,
        served calls and streams are cancelled and awaited. The socket is left to its owner."""
        if self._state is PeerState.CLOSED:
            return
        self._flush()
        closed = ComponentCrashed(f"the channel to {self.component} was closed")
        self.fail_pending(self._failure or closed)
        self._state = PeerState.CLOSED
        self._outbox.clear()
        self._unsent.clear()
        waiter = self._run_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._sync_reader()
        tasks = list(self._serving.values())
        self._serving.clear()
        self._credits.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE_SECONDS)

    # -- calls and streams (used by proxies) ------------------------------------------------

    async def _call(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        codec = method.codec
        if self._state is not PeerState.OPEN:
            raise self._unavailable(codec.label)
        wire_args, wire_kwargs = codec.encode_args(args, kwargs)
        call_id = self._next_id
        self._next_id = call_id + 1
        try:
            message = pack(_CALL, call_id, target, method.name, wire_args, wire_kwargs)
        except _PACK_ERRORS as exc:
            raise SerializationError(codec.find_unpackable(wire_args, wire_kwargs)) from exc
        self._check_size(message, codec.label)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls[call_id] = (future, method)
        self._enqueue(message)
        try:
            value = await future
        except asyncio.CancelledError:
            if self._calls.pop(call_id, None) is not None:
                self._enqueue(pack(_CANCEL, call_id))  # dropped if the channel is closed
            raise
        return codec.decode_result(value)

    def _open_stream(
        self, target: str, method: RemoteMethod, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, StreamReader]:
        codec = method.codec
        if self._state is not PeerState.OPEN:
            raise self._unavailable(codec.label)
        wire_args, wire_kwargs = codec.encode_args(args, kwargs)
        stream_id = self._next_id
        self._next_id = stream_id + 1
        try:
            message = pack(
                _STREAM_OPEN, stream_id, target, method.name, wire_args, wire_kwargs, self._credit
            )
        except _PACK_ERRORS as exc:
            raise SerializationError(codec.find_unpackable(wire_args, wire_kwargs)) from exc
        self._check_size(message, codec.label)

        def grant(n: int) -> None:
            if stream_id in self._streams:
                self._enqueue(pack(_CREDIT, stream_id, n))

        reader = StreamReader(codec.label, self._credit, grant, self._loop)
        self._streams[stream_id] = reader
        self._enqueue(message)
        return stream_id, reader

    def _close_stream(self, stream_id: int) -> None:
        """The consumer stopped iterating: cancel the remote generator if it still runs."""
        if self._streams.pop(stream_id, None) is not None and self._state is not PeerState.CLOSED:
            self._enqueue(pack(_CANCEL, stream_id))

    def _unavailable(self, label: str) -> ComponentCrashed:
        if self._state is PeerState.CLOSED:
            cause: BaseException = ComponentCrashed(f"the channel to {self.component} is closed")
        else:
            assert self._failure is not None
            cause = self._failure
        return self._crashed(label, cause)

    @staticmethod
    def _crashed(label: str, cause: BaseException) -> ComponentCrashed:
        owner, _, method = label.rpartition(".")
        error = ComponentCrashed(f"{label} failed: {cause}", component=owner, method=method)
        error.__cause__ = cause
        return error

    def _check_size(self, message: bytes, what: str) -> None:
        if len(message) > self._max_message:
            raise SerializationError(
                f"{what}: the message is {len(message)} bytes, over the {self._max_frame}-byte "
                "frame limit; send less at once or raise max_frame_bytes on both peers"
            )

    # -- sending ----------------------------------------------------------------------------

    def _enqueue(self, message: bytes) -> None:
        if self._state is PeerState.CLOSED:
            return
        self._outbox.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._state is PeerState.CLOSED:
            return
        socket = self._socket
        if socket.closed:
            self._socket_gone()
            return
        if self._outbox:
            self._unsent.extend(build_frames(self._outbox, self._max_frame))
            self._outbox = []
        unsent = self._unsent
        try:
            while unsent:
                try:
                    _send(socket, unsent[0], _NOBLOCK)
                except zmq.Again:
                    break  # full or not connected yet: the descriptor signals when it can take more
                unsent.popleft()
            more = self._running and int(_get(socket, _EVENTS)) & _POLLIN
        except zmq.ZMQError as exc:
            self._break(ComponentCrashed(f"the socket to {self.component} failed: {exc}"))
            return
        self._sync_reader()
        if more:
            self._loop.call_soon(self._on_readable)

    # -- receiving --------------------------------------------------------------------------

    def _sync_reader(self) -> None:
        want = self._state is not PeerState.CLOSED and (
            (self._running and self._fatal is None) or bool(self._unsent)
        )
        if want and not self._socket.closed and not self._reader_on:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reader_on = True
        elif not want and self._reader_on:
            self._loop.remove_reader(self._fd)
            self._reader_on = False

    def _on_readable(self) -> None:
        socket = self._socket
        if self._state is PeerState.CLOSED:
            return
        if socket.closed:
            self._socket_gone()
            return
        try:
            events = int(_get(socket, _EVENTS))
            frames = 0
            while events & _POLLIN and self._running and self._fatal is None:
                self._dispatch(_recv(socket, _NOBLOCK))
                frames += 1
                if frames == _MAX_FRAMES_PER_WAKEUP:
                    self._loop.call_soon(self._on_readable)
                    break
                events = int(_get(socket, _EVENTS))
        except zmq.ZMQError as exc:
            self._break(ComponentCrashed(f"the socket to {self.component} failed: {exc}"))
            return
        except Exception as exc:  # a bad frame, or on_control rejecting a message
            self._break(exc)
            return
        if self._outbox or (self._unsent and events & _POLLOUT):
            self._flush()

    def _dispatch(self, frame: bytes) -> None:
        handlers = self._handlers
        for message in decode_frame(frame, self._max_frame):
            handlers[message[1]](message)

    def _break(self, exc: BaseException) -> None:
        """The channel cannot go on: fail what waits here and make run() raise ``exc``."""
        if self._state is PeerState.CLOSED or self._fatal is not None:
            return
        self.fail_pending(exc)
        self._failure = self._fatal = exc
        self._state = PeerState.BROKEN
        for task in self._serving.values():
            task.cancel()
        waiter = self._run_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._sync_reader()

    def _socket_gone(self) -> None:
        self._break(ComponentCrashed(f"the socket to {self.component} was closed"))

    # -- answers to this side's calls and streams -------------------------------------------

    def _on_result(self, message: list[Any]) -> None:
        entry = self._calls.pop(message[2], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(message[3])

    def _on_error(self, message: list[Any]) -> None:
        entry = self._calls.pop(message[2], None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(self._remote_failure(entry[1].codec.label, message))

    @staticmethod
    def _remote_failure(label: str, message: list[Any]) -> Exception:
        remote_type, text, trace, code = message[3], message[4], message[5], message[6]
        if code == ErrorCode.SERIALIZATION:
            return SerializationError(text)
        owner, _, method = label.rpartition(".")
        return remote_error(
            remote_type=remote_type,
            remote_message=text,
            remote_traceback=trace,
            component=owner,
            method=method,
        )

    def _on_stream_item(self, message: list[Any]) -> None:
        reader = self._streams.get(message[2])
        if reader is not None:
            reader.feed(message[3])

    def _on_stream_end(self, message: list[Any]) -> None:
        reader = self._streams.pop(message[2], None)
        if reader is not None:
            reader.finish()

    def _on_stream_error(self, message: list[Any]) -> None:
        reader = self._streams.pop(message[2], None)
        if reader is not None:
            reader.finish(self._remote_failure(reader.label, message))

    def _on_control_message(self, message: list[Any]) -> None:
        if self._on_control is not None:
            self._on_control(message[3], message[4])

    # -- serving the other side's calls and streams -----------------------------------------

    def _lookup(self, message: list[Any], stream: bool) -> tuple[_Served, RemoteMethod] | None:
        reply_kind = _STREAM_ERROR if stream else _ERROR
        target, name = message[3], message[4]
        served = self._served.get(target)
        if served is None:
            offered = ", ".join(sorted(self._served)) or "nothing"
            self._reply_error(
                reply_kind,
                message[2],
                LookupError(f"nothing is served as {target!r} here (serving: {offered})"),
            )
            return None
        method = served.methods.get(name)
        if method is None or method.stream is not stream:
            if method is not None:
                kind = "an async generator (a stream)" if method.stream else "not a stream"
                why = f"{served.cls.__qualname__}.{name} is {kind}"
            else:
                why = explain_unreachable(served.cls, name, served.exclude)
            self._reply_error(reply_kind, message[2], AttributeError(why))
            return None
        return served, method

    def _decoded(
        self, message: list[Any], method: RemoteMethod, reply_kind: int
    ) -> tuple[list[Any], dict[str, Any]] | None:
        try:
            return method.codec.decode_args(message[5], message[6])
        except SerializationError as exc:
            self._reply_error(reply_kind, message[2], exc, ErrorCode.SERIALIZATION)
            return None

    def _on_call(self, message: list[Any]) -> None:
        found = self._lookup(message, stream=False)
        if found is None:
            return
        served, method = found
        decoded = self._decoded(message, method, _ERROR)
        if decoded is None:
            return
        call_id = message[2]
        try:
            coro = served.bound[method.name](*decoded[0], **decoded[1])
        except Exception as exc:  # e.g. TypeError: arguments that do not fit the signature
            self._reply_error(_ERROR, call_id, exc)
            return
        self._start(call_id, self._answer(call_id, method, coro))

    def _start(self, call_id: int, coro: Coroutine[Any, Any, None]) -> None:
        task = start_task(self._loop, coro)
        if not task.done():
            self._serving[call_id] = task
            task.add_done_callback(lambda _: self._serving.pop(call_id, None))

    async def _answer(
        self, call_id: int, method: RemoteMethod, coro: Coroutine[Any, Any, Any]
    ) -> None:
        try:
            result = await coro
        except asyncio.CancelledError as exc:
            self._reply_cancelled(_ERROR, call_id, exc)
            raise
        except BaseException as exc:
            self._reply_error(_ERROR, call_id, exc)
            if not isinstance(exc, Exception):
                raise
            return
        label = method.codec.label
        try:
            message = pack(_RESULT, call_id, method.codec.encode_result(result))
            self._check_size(message, f"{label} return value")
        except _PACK_ERRORS as exc:
            failure = SerializationError(f"{label} return value: {exc}")
            self._reply_error(_ERROR, call_id, failure, ErrorCode.SERIALIZATION)
        except SerializationError as exc:
            self._reply_error(_ERROR, call_id, exc, ErrorCode.SERIALIZATION)
        else:
            self._enqueue(message)

    def _on_cancel(self, message: list[Any]) -> None:
        task = self._serving.pop(message[2], None)
        self._credits.pop(message[2], None)
        if task is not None:
            task.cancel()

    def _on_stream_open(self, message: list[Any]) -> None:
        found = self._lookup(message, stream=True)
        if found is None:
            return
        served, method = found
        decoded = self._decoded(message, method, _STREAM_ERROR)
        if decoded is None:
            return
        stream_id = message[2]
        try:
            generator = served.bound[method.name](*decoded[0], **decoded[1])
        except Exception as exc:
            self._reply_error(_STREAM_ERROR, stream_id, exc)
            return
        credit = self._credits[stream_id] = StreamCredit(message[7], self._loop)
        self._start(stream_id, self._pump(stream_id, method, generator, credit))

    def _on_credit(self, message: list[Any]) -> None:
        credit = self._credits.get(message[2])
        if credit is not None:
            credit.grant(message[3])

    async def _pump(
        self, stream_id: int, method: RemoteMethod, generator: Any, credit: StreamCredit
    ) -> None:
        encode = method.codec.encode_result
        try:
            while True:
                await credit.acquire()
                try:
                    item = await generator.__anext__()
                except StopAsyncIteration:
                    self._enqueue(pack(_STREAM_END, stream_id))
                    return
                try:
                    message = pack(_STREAM_ITEM, stream_id, encode(item))
                except _PACK_ERRORS as exc:
                    raise SerializationError(f"{method.codec.label} item: {exc}") from exc
                self._check_size(message, f"{method.codec.label} item")
                self._enqueue(message)
        except asyncio.CancelledError as exc:
            self._reply_cancelled(_STREAM_ERROR, stream_id, exc)
            raise
        except SerializationError as exc:
            self._reply_error(_STREAM_ERROR, stream_id, exc, ErrorCode.SERIALIZATION)
        except BaseException as exc:
            self._reply_error(_STREAM_ERROR, stream_id, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._credits.pop(stream_id, None)
            await generator.aclose()

    def _reply_cancelled(self, kind: int, msg_id: int, exc: asyncio.CancelledError) -> None:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return  # cancelled from here (the caller asked, or the channel closes): no answer
        self._reply_error(kind, msg_id, exc)  # the method itself raised CancelledError

    def _reply_error(
        self, kind: int, msg_id: int, exc: BaseException, code: ErrorCode = ErrorCode.RAISED
    ) -> None:
        if isinstance(exc, RemoteError):  # an error from a further hop keeps its original type
            remote_type, text = exc.remote_type, exc.remote_message
        else:
            cls = type(exc)
            module = cls.__module__
            remote_type = (
                cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
            )
            text = str(exc)
        trace = "".join(traceback.format_exception(exc))
        try:
            message = pack(kind, msg_id, remote_type, text, trace, int(code))
        except _PACK_ERRORS:  # pragma: no cover - strings always pack
            return
        if len(message) > self._max_message:
            message = pack(kind, msg_id, remote_type, text[:1000], trace[-4000:], int(code))
        self._enqueue(message)

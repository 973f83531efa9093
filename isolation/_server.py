"""Serving: answering the other end's calls and streams with local objects.

The Peer hands every CALL, CANCEL, STREAM_OPEN and CREDIT message to its :class:`Server`. A
call is looked up by the name it was served under and the method's name in the remote
interface of the served class (never by ``getattr`` on the object), its arguments are validated
against the method's annotations, and the method runs in a task of its own, started eagerly:
one that answers without suspending has queued its reply before the message after it is read.

A stream's generator is advanced by a *pump* task only while the consumer's credit lasts (see
``_stream``). CANCEL cancels the task of a call or a stream; a generator is always closed
(``aclose``), so its ``finally`` blocks run.

Every failure becomes an ERROR or STREAM_ERROR for the caller: what the method raised (type
name, message, traceback), a SerializationError for arguments or results that fail their
annotations, an AttributeError for a name that is not a remote method, a LookupError for a
name nothing is served under. A CALL or STREAM_OPEN reusing the id of one still running is a
ProtocolError (the channel is broken): ids are how tasks are found again. A task cancelled
from this side (by CANCEL or because the channel closes) answers nothing: nobody is waiting
for it any more.

The other side's calls and streams running here at once may be bounded (``max_calls``,
``max_streams``): one beyond the bound is answered at once with a RuntimeError saying so, and
costs nothing more, so a flood of calls or of streams opened without credit cannot make this
side hold a task for each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._eager import start_task
from ._errors import ErrorReport, ProtocolError, SerializationError
from ._interface import RemoteMethod, explain_unreachable, remote_interface
from ._protocol import ErrorCode, Kind, pack
from ._stream import StreamCredit

__all__ = ["Server"]

_RESULT: Final = int(Kind.RESULT)
_ERROR: Final = int(Kind.ERROR)
_STREAM_ITEM: Final = int(Kind.STREAM_ITEM)
_STREAM_END: Final = int(Kind.STREAM_END)
_STREAM_ERROR: Final = int(Kind.STREAM_ERROR)
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)
_CLOSE_GRACE_SECONDS: Final = 5.0  # for served tasks to finish after being cancelled


@dataclass(frozen=True, slots=True)
class _Served:
    cls: type
    methods: Mapping[str, RemoteMethod]
    bound: Mapping[str, Callable[..., Any]]
    exclude: frozenset[str]


class Server:
    """The serving half of a Peer: served objects and the tasks running their methods."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes], None],
        max_message: int,
        max_frame: int,
        *,
        max_calls: int | None = None,
        max_streams: int | None = None,
        peer: str = "the other side",
    ) -> None:
        self._loop = loop
        self._max_calls = max_calls
        self._max_streams = max_streams
        self._peer = peer
        self._send = send
        self._max_message = max_message
        self._max_frame = max_frame
        self._objects: dict[str, _Served] = {}
        # Calls and streams of the other side running here, by the other side's id.
        self._running: dict[int, asyncio.Task[None]] = {}
        self._credits: dict[int, StreamCredit] = {}

    @property
    def active(self) -> int:
        """Calls and streams of the other side running now."""
        return len(self._running)

    def serve(self, name: str, obj: object, cls: type, exclude: Collection[str]) -> None:
        if not isinstance(obj, cls):
            raise TypeError(f"cannot serve {obj!r} as {cls.__qualname__}: it is not an instance")
        methods = remote_interface(cls, exclude)
        bound = {method: getattr(obj, method) for method in methods}
        self._objects[name] = _Served(cls, methods, bound, frozenset(exclude))

    def cancel_all(self) -> None:
        """Cancel every running call and stream (they answer nothing)."""
        for task in self._running.values():
            task.cancel()

    async def aclose(self) -> None:
        """Cancel every running call and stream and wait (boundedly) for them to finish."""
        tasks = list(self._running.values())
        self.cancel_all()
        self._running.clear()
        self._credits.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE_SECONDS)

    def _check_size(self, message: bytes, what: str) -> None:
        if len(message) > self._max_message:
            raise SerializationError(
                f"{what}: the message is {len(message)} bytes, over the {self._max_frame}-byte "
                "frame limit; send less at once or raise max_frame_bytes on both peers"
            )

    def _lookup(self, message: list[Any], stream: bool) -> tuple[_Served, RemoteMethod] | None:
        reply_kind = _STREAM_ERROR if stream else _ERROR
        target, name = message[3], message[4]
        served = self._objects.get(target)
        if served is None:
            offered = ", ".join(sorted(self._objects)) or "nothing"
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

    def _over_limit(self, message: list[Any], stream: bool) -> bool:
        """Refuse a call or stream beyond the bound (answering it); True if refused."""
        streams = len(self._credits)
        if stream:
            limit, running, what = self._max_streams, streams, "streams open"
        else:
            limit, running, what = self._max_calls, len(self._running) - streams, "calls in flight"
        if limit is None or running < limit:
            return False
        refusal = RuntimeError(
            f"{self._peer} has {running} {what} here, the most it may have at once; "
            f"{message[3]}.{message[4]} was refused: wait for some to finish"
        )
        self._reply_error(_STREAM_ERROR if stream else _ERROR, message[2], refusal)
        return True

    def _check_new(self, message: list[Any]) -> None:
        if message[2] in self._running or message[2] in self._credits:
            raise ProtocolError(
                f"received a {Kind(message[1]).name} with id {message[2]}, which a call or "
                "stream still running here already has"
            )

    def on_call(self, message: list[Any]) -> None:
        self._check_new(message)
        if self._max_calls is not None and self._over_limit(message, stream=False):
            return
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
            self._running[call_id] = task
            task.add_done_callback(lambda _: self._running.pop(call_id, None))

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
            self._send(message)

    def on_cancel(self, message: list[Any]) -> None:
        task = self._running.pop(message[2], None)
        self._credits.pop(message[2], None)
        if task is not None:
            task.cancel()

    def on_stream_open(self, message: list[Any]) -> None:
        self._check_new(message)
        if self._max_streams is not None and self._over_limit(message, stream=True):
            return
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

    def on_credit(self, message: list[Any]) -> None:
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
                    self._send(pack(_STREAM_END, stream_id))
                    return
                try:
                    message = pack(_STREAM_ITEM, stream_id, encode(item))
                except _PACK_ERRORS as exc:
                    raise SerializationError(f"{method.codec.label} item: {exc}") from exc
                self._check_size(message, f"{method.codec.label} item")
                self._send(message)
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
        report = ErrorReport.of(exc)
        self._send(pack(kind, msg_id, report.type, report.message, report.traceback, int(code)))

"""Streams with credit-based flow control: both ends of a remote async generator.

The consumer opens a stream with an initial *credit* (the window, 64 items by default): the
producer may send that many items and then must wait. Each time the consumer has taken half a
window out of its buffer it grants that many items back. So at any moment::

    items produced  <=  items consumed + window

and a slow consumer bounds memory in both processes: the producer's generator is simply not
advanced while it has no credit, and the consumer's buffer never holds more than a window. A
producer that sends beyond its credit breaks the protocol and is reported as such.

:class:`StreamReader` is the consumer's end (fed by the receive path, read by the proxy's async
generator); :class:`StreamCredit` is the producer's end (the pump waits on it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ._errors import ProtocolError

__all__ = ["DEFAULT_STREAM_CREDIT", "END", "StreamCredit", "StreamReader"]

DEFAULT_STREAM_CREDIT: Final = 64
END: Final = object()  # returned by StreamReader.next() once the stream has ended


class StreamReader:
    """The consumer's end of one stream: a bounded buffer of items not yet taken."""

    __slots__ = (
        "_buffer",
        "_consumed",
        "_error",
        "_finished",
        "_grant",
        "_loop",
        "_outstanding",
        "_regrant_at",
        "_waiter",
        "label",
    )

    def __init__(
        self,
        label: str,
        window: int,
        grant: Callable[[int], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.label = label
        self._loop = loop
        self._grant = grant
        self._buffer: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._error: BaseException | None = None
        self._outstanding = window  # items the producer may still send
        self._consumed = 0  # taken since the last grant
        self._regrant_at = max(1, window // 2)

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open"
        return f"<StreamReader {self.label} {state}, {len(self._buffer)} buffered>"

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, value: Any) -> None:
        """An item arrived (receive path)."""
        if self._outstanding <= 0:
            raise ProtocolError(
                f"the producer of stream {self.label} sent an item beyond the credit it was granted"
            )
        self._outstanding -= 1
        self._buffer.append(value)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """The stream ended (``error`` None) or failed; buffered items are still delivered."""
        if not self._finished:
            self._finished = True
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Any:
        """The next raw item, or END; raises the error the stream failed with."""
        buffer = self._buffer
        while not buffer:
            if self._finished:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return END
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        value = buffer.popleft()
        if not self._finished:
            self._consumed += 1
            if self._consumed >= self._regrant_at:
                granted, self._consumed = self._consumed, 0
                self._outstanding += granted
                self._grant(granted)
        return value


class StreamCredit:
    """The producer's end of one stream: how many items it may still send."""

    __slots__ = ("_loop", "_waiter", "credit")

    def __init__(self, credit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.credit = credit
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def grant(self, n: int) -> None:
        self.credit += n
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def acquire(self) -> None:
        """Take one item of credit, waiting for the consumer to grant more when there is none."""
        while self.credit <= 0:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.credit -= 1

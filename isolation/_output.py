"""A child's stdout and stderr, forwarded to the parent line by line.

Each child writes descriptors 1 and 2 into pipes whose read ends the parent watches with
``loop.add_reader``. Whatever reaches them — a stray ``print``, a C library's warning, the
traceback of a dying interpreter — arrives as lines tagged with the component's name, and can
never corrupt the message channel, which is a separate socket. A line with no newline is cut at
``MAX_LINE_BYTES`` so that a child writing binary junk cannot make the parent buffer without
bound; a last partial line is delivered when the pipe closes.

A child writing without pause costs the parent bounded work: each wake-up reads at most
``_READS_PER_WAKEUP`` chunks (the rest waits for the next pass of the event loop), and lines
beyond ``LINES_PER_SECOND`` (after a burst of ``LINES_BURST``) are counted instead of delivered,
then reported as one line. The last lines are kept in ``tail`` either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable

from ._logs import LogLimiter

__all__ = ["LINES_PER_SECOND", "MAX_LINE_BYTES", "OutputPump", "default_output_sink"]

MAX_LINE_BYTES = 64 * 1024
#: Lines kept for ``tail``: enough for a traceback's end.
TAIL_LINES = 30
_READ_BYTES = 64 * 1024
_READS_PER_WAKEUP = 16
_READS_AT_CLOSE = 64  # what a writer that outlives the child may still get in
#: Lines per second delivered on average, and at once, per stream of a child.
LINES_PER_SECOND = 1000
LINES_BURST = 5000

OutputSink = Callable[[str, str, str], None]


def default_output_sink(component: str, stream: str, line: str) -> None:
    """Write a child's line to the parent's stderr, prefixed with the component's name."""
    print(f"[{component} {stream}] {line}", file=sys.stderr)


class OutputPump:
    """Reads one pipe of a child and hands each line to ``sink(component, stream, line)``."""

    def __init__(self, fd: int, component: str, stream: str, sink: OutputSink) -> None:
        self._fd = fd
        self._component = component
        self._stream = stream
        self._sink = sink
        self._buffer = bytearray()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)  # the last lines, for error messages
        self._limiter = LogLimiter(LINES_PER_SECOND, LINES_BURST)
        self._dropped_reported = -1.0
        self._loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    async def drained(self, grace: float) -> None:
        """Wait (at most ``grace`` seconds) for the writer side to close, then stop reading."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), grace)
        self.close()

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        self._drain_available(_READS_AT_CLOSE)
        self._flush_partial()
        os.close(self._fd)
        self._fd = -1
        self._closed.set()

    def _on_readable(self) -> None:
        if not self._drain_available():
            self._flush_partial()
            self._loop.remove_reader(self._fd)
            self._closed.set()

    def _drain_available(self, reads: int = _READS_PER_WAKEUP) -> bool:
        """Read what is there now (at most ``reads`` chunks); False at end of file."""
        for _ in range(reads):
            try:
                chunk = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self._buffer += chunk
            self._emit_lines()
        return True

    def _emit_lines(self) -> None:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) >= MAX_LINE_BYTES:
                    self._deliver(bytes(self._buffer[:MAX_LINE_BYTES]))
                    del self._buffer[:MAX_LINE_BYTES]
                    continue
                return
            self._deliver(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]

    def _flush_partial(self) -> None:
        if self._buffer:
            self._deliver(bytes(self._buffer))
            self._buffer.clear()

    def _deliver(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").removesuffix("\r")
        self.tail.append(line)
        now = self._loop.time()
        if not self._limiter.admit(now):
            return
        if self._limiter.dropped and now - self._dropped_reported >= 1.0:
            self._dropped_reported = now
            dropped = self._limiter.take_dropped()
            self._send(f"[{dropped} lines not forwarded: over {LINES_PER_SECOND} lines per second]")
        self._send(line)

    def _send(self, line: str) -> None:
        try:
            self._sink(self._component, self._stream, line)
        except Exception as exc:
            self._loop.call_exception_handler(
                {"message": f"output callback failed for {self._component}", "exception": exc}
            )

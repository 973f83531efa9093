"""Child log events, carried to the parent as data.

In the child, ``forward_logs`` points both logging systems at the channel: a handler on the
stdlib root logger, and a final structlog processor. Each event becomes a flat dict of msgpack
types (``event``, ``level``, ``logger``, ``timestamp`` and the event's own keys; values msgpack
cannot carry are sent as their ``repr``) and leaves as a ``log`` control message. The parent's
runtime renders and files it under the component's name; nothing is written in the child.
Only events at or above the parent's level are sent (``level``, which the parent puts in the
child's job): a debug event the parent would drop costs no message.

Log calls may come from any thread of the child, but the channel belongs to the event loop's
thread, so other threads hand their events over with ``call_soon_threadsafe``.

In the parent, an event is hostile input like any other byte from a child: ``bounded_event``
cuts it to a bounded number of fields of bounded size; its level is read from a fixed set
(``LEVELS``, ``level_of``) and the logger name is only ever data, never used to pick a method
or a logger. A :class:`LogLimiter` caps how many events per second a child may have logged (a
burst is allowed); the ones beyond are counted and reported, not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

__all__ = [
    "LEVELS",
    "LogLimiter",
    "bounded_event",
    "default_log_sink",
    "forward_logs",
    "level_of",
    "to_plain",
]

Send = Callable[[dict[str, Any]], None]

#: The levels a child's event may have; anything else is logged as "info".
LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_NAMES = {
    **{level: level for level in LEVELS},
    "warn": "warning",
    "exception": "error",
    "fatal": "critical",
}
_STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: Bounds of one event from a child: fields, characters of a key, of a text value (the
#: ``exception`` field may be longer: a traceback), items of a list or map, nesting.
MAX_FIELDS = 64
MAX_KEY_CHARS = 100
MAX_TEXT_CHARS = 4000
MAX_EXCEPTION_CHARS = 32000
MAX_ITEMS = 100
_MAX_DEPTH = 4
_FIRST = frozenset({"event", "level", "logger", "exception", "timestamp"})

_PLAIN_SCALARS = (str, int, float, bool, type(None), bytes)
#: structlog's method names, by level ("exception" logs at error; "msg" and "log" at info).
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def to_plain(value: Any, depth: int = 0) -> Any:
    """``value`` as msgpack-ready data: containers kept (a few levels deep), the rest repr'd."""
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if depth < 4 and isinstance(value, list | tuple):
        return [to_plain(item, depth + 1) for item in value]
    if depth < 4 and isinstance(value, dict):
        return {str(key): to_plain(item, depth + 1) for key, item in value.items()}
    return repr(value)


class _ForwardingHandler(logging.Handler):
    def __init__(self, send: Send) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {
                "event": record.getMessage(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": record.created,
            }
            if record.exc_info:
                event["exception"] = "".join(traceback.format_exception(*record.exc_info))
            self._send(event)
        except Exception:
            self.handleError(record)


def forward_logs(send: Send, loop: asyncio.AbstractEventLoop, *, level: int) -> None:
    """Send every stdlib logging and structlog event of this process at ``level`` or above
    through ``send``."""
    loop_thread = threading.get_ident()

    def send_from_any_thread(event: dict[str, Any]) -> None:
        plain = {str(key): to_plain(value) for key, value in event.items()}
        if threading.get_ident() == loop_thread:
            send(plain)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the child is ending
                loop.call_soon_threadsafe(send, plain)

    root = logging.getLogger()
    for handler in list(root.handlers):
        # Inherited handlers write to the parent's files and streams, whose descriptors this
        # process no longer has.
        root.removeHandler(handler)
    handler = _ForwardingHandler(send_from_any_thread)
    handler.setLevel(level)  # also for loggers whose own level is lower than the root's
    root.addHandler(handler)
    root.setLevel(level)

    def forward(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if _LEVELS.get(method_name, logging.CRITICAL) < level:
            raise structlog.DropEvent
        event = dict(event_dict)
        event.setdefault("level", method_name)
        event.setdefault("timestamp", time.time())
        if "exc_info" in event:
            exc_info = event.pop("exc_info")
            if exc_info:
                event["exception"] = _format_exc_info(exc_info)
        send_from_any_thread(event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.StackInfoRenderer(),
            forward,
        ]
    )


def _format_exc_info(exc_info: Any) -> str:
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if isinstance(exc_info, tuple):
        return "".join(traceback.format_exception(*exc_info))
    return traceback.format_exc()


def level_of(value: object) -> str:
    """The level named by ``value``, one of ``LEVELS``; "info" for anything else."""
    if isinstance(value, str) and len(value) <= 16:
        return _LEVEL_NAMES.get(value.lower(), "info")
    return "info"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _bounded(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _cut(value, MAX_TEXT_CHARS)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return _cut(repr(value[: MAX_TEXT_CHARS + 1]), MAX_TEXT_CHARS)
    if depth < _MAX_DEPTH and isinstance(value, list):
        items = [_bounded(item, depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... [{len(value) - MAX_ITEMS} more items]")
        return items
    if depth < _MAX_DEPTH and isinstance(value, dict):
        fields = list(value.items())
        bounded = {
            _cut(str(key), MAX_KEY_CHARS): _bounded(item, depth + 1)
            for key, item in fields[:MAX_ITEMS]
        }
        if len(fields) > MAX_ITEMS:
            bounded["..."] = f"{len(fields) - MAX_ITEMS} more items"
        return bounded
    return f"<{type(value).__name__} nested too deeply>"


def bounded_event(body: dict[Any, Any]) -> dict[str, Any]:
    """A child's log event cut to size: at most ``MAX_FIELDS`` fields of bounded size, ``event``
    a string. Its ``level`` is as bounded as any field, not checked: whoever logs the event reads
    it from a fixed set (``level_of``, or the runtime's own) and treats anything else as such."""
    event: dict[str, Any] = {}
    # What says what the event is comes first, however many fields follow.
    fields = sorted(body.items(), key=lambda item: item[0] not in _FIRST)
    for key, value in fields[:MAX_FIELDS]:
        name = _cut(str(key), MAX_KEY_CHARS)
        if name == "exception" and isinstance(value, str):
            event[name] = _cut(value, MAX_EXCEPTION_CHARS)
        else:
            event[name] = _bounded(value)
    if len(fields) > MAX_FIELDS:
        event["dropped_fields"] = len(fields) - MAX_FIELDS
    event["event"] = _cut(str(event.get("event", "")), MAX_TEXT_CHARS)
    return event


class LogLimiter:
    """At most ``rate`` events per second on average, ``burst`` at once (a token bucket).

    ``admit(now)`` says whether one more event may be logged; refused ones are counted in
    ``dropped`` until ``take_dropped()`` reports them.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None
        self.dropped = 0

    def admit(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


def default_log_sink(component: str, event: dict[str, Any]) -> None:
    """Re-emit a child's event through the parent's stdlib logging, under the component's name."""
    level = _STDLIB_LEVELS[level_of(event.get("level"))]
    message = str(event.get("event", ""))
    extra = {key: value for key, value in event.items() if key not in ("event", "level")}
    logger = logging.getLogger(f"isolation.{component}")
    logger.log(level, "%s %s", message, extra)

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

__all__ = ["default_log_sink", "forward_logs", "to_plain"]

Send = Callable[[dict[str, Any]], None]

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


def default_log_sink(component: str, event: dict[str, Any]) -> None:
    """Re-emit a child's event through the parent's stdlib logging, under the component's name."""
    level = logging.getLevelName(str(event.get("level", "info")).upper())
    message = str(event.get("event", ""))
    extra = {key: value for key, value in event.items() if key not in ("event", "level")}
    logger = logging.getLogger(f"isolation.{component}")
    logger.log(level if isinstance(level, int) else logging.INFO, "%s %s", message, extra)

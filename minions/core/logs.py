"""Structured logging for a Minions program (structlog over the standard library).

:func:`configure_logging` is called by :func:`minions.run`; programs that embed a
:class:`~minions.Runtime` keep their own logging set-up. Once configured:

* on a terminal, readable lines on stderr; otherwise (a pipe, a service manager) JSON lines;
* always JSON lines in ``<project>/.minions/logs/minions.log``, rotated by size: when it would
  pass ``max_bytes`` it becomes ``minions.log.1`` (the older ones shift to ``.2`` ...), and the
  ``backups`` newest rotated files are kept; owner-only (the directory 0700, each file 0600;
  see :mod:`minions.core.private`);
* every event logged while a component runs carries ``component=<name>``, including events that
  user code logs through ``structlog.get_logger()`` or the standard ``logging`` module;
* lifecycle events are named ``component.starting|started|crashed|restarting|stopped|given_up``.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from .private import PRIVATE_DIR_NAME, private_dir, private_file

LOG_FILE_NAME = "minions.log"
#: The log levels Minions knows, lowest first (the names of the standard library's levels).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: The log file rotates when it would grow past this many bytes...
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
#: ...and this many rotated files are kept (``minions.log.1`` the newest).
DEFAULT_LOG_BACKUPS = 10
_HANDLER_MARK = "_minions_handler"


def level_number(level: str | int) -> int:
    """The standard library's number for ``level`` (a name of :data:`LOG_LEVELS`, any case, or a
    number); a clear :class:`ValueError` for anything else."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = level.lower() if isinstance(level, str) else None
    if name not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
    number: int = logging.getLevelNamesMapping()[name.upper()]
    return number


def log_dir(project_dir: Path) -> Path:
    return project_dir / PRIVATE_DIR_NAME / "logs"


def configure_logging(
    *,
    project_dir: Path | None,
    level: str | int = "info",
    stream: TextIO | None = None,
    json_console: bool | None = None,
    max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    backups: int = DEFAULT_LOG_BACKUPS,
) -> Path | None:
    """Route structlog and stdlib logging to the console and the project's log file.

    The file rotates when it would pass ``max_bytes`` (``0``: never), keeping ``backups``
    rotated files. Returns the log file's path (``None`` when ``project_dir`` is ``None``).
    Calling it again replaces the handlers it installed before.
    """
    number = level_number(level)
    stream = stream if stream is not None else sys.stderr
    if json_console is None:
        json_console = not _isatty(stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    json_renderer: Any = structlog.processors.JSONRenderer(default=str)
    console_renderer: Any = (
        json_renderer
        if json_console
        else structlog.dev.ConsoleRenderer(colors=_isatty(stream), pad_event_to=24)
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(stream)
    console.setFormatter(_formatter(shared, console_renderer))
    _install(root, console)
    path: Path | None = None
    if project_dir is not None:
        path = private_file(private_dir(log_dir(project_dir), root=project_dir) / LOG_FILE_NAME)
        file_handler = _PrivateRotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        file_handler.setFormatter(_formatter(shared, json_renderer))
        _install(root, file_handler)
    root.setLevel(number)
    return path


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotates by size; every file it opens (the first, and each after a rotation) is 0600."""

    def _open(self) -> Any:
        private_file(Path(self.baseFilename))
        return super()._open()


def _formatter(shared: list[Any], renderer: Any) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def _install(root: logging.Logger, handler: logging.Handler) -> None:
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

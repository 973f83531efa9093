"""Reading the structured log file (``<project>/.minions/logs/minions.log``, JSON lines).

``minions logs`` shows the events of the whole system or of one component (the ``component``
field every event logged on a component's behalf carries, child processes' included), as
readable lines or as the JSON lines themselves, and with ``-f`` keeps showing new ones as they
are written. Following polls the file a few times a second (it may be rotated or truncated: a
new file or a shorter one is read from its start), so it works the same for a live system, a
stopped one, and a copy of the project folder.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["FOLLOW_POLL", "LogReader", "format_event"]

#: How often a followed log file is checked for new lines, in seconds.
FOLLOW_POLL = 0.2
_SHOWN_APART = ("timestamp", "level", "component", "event", "logger")


def format_event(event: Mapping[str, Any]) -> str:
    """One event as a readable line: time, level, component, event name, then its fields."""
    fields = " ".join(
        f"{key}={_value(value)}" for key, value in event.items() if key not in _SHOWN_APART
    )
    parts = [
        str(event.get("timestamp", "-")),
        f"{event.get('level', '-')!s:<7}",
        f"{event.get('component') or '-'!s:<16}",
        str(event.get("event", "")),
    ]
    return " ".join([*parts, fields]).rstrip()


def _value(value: object) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else json.dumps(value)
    return json.dumps(value, default=str)


class LogReader:
    """The events of one log file, optionally only those of ``component``."""

    def __init__(self, path: Path, component: str | None = None, *, raw: bool = False) -> None:
        self.path = path
        self.component = component
        self.raw = raw

    def __repr__(self) -> str:
        return f"<LogReader {self.path} component={self.component or '*'}>"

    def components(self) -> set[str]:
        """Every component named in the file."""
        with self.path.open("rb") as f:
            return {
                str(event["component"])
                for _, event in _parse(f)
                if event is not None and event.get("component")
            }

    def tail(self, lines: int | None) -> tuple[list[str], int]:
        """The last ``lines`` matching lines (all with ``None``), and where the file ended."""
        shown: deque[str] = deque(maxlen=lines)
        with self.path.open("rb") as f:
            for raw, event in _parse(f):
                text = self._show(raw, event)
                if text is not None:
                    shown.append(text)
            return list(shown), f.tell()

    def follow(
        self,
        start: int,
        out: TextIO,
        *,
        until: Callable[[], bool] = lambda: False,
        poll: float = FOLLOW_POLL,
    ) -> None:
        """Write matching lines appended after byte ``start`` as they come, until ``until()``."""
        position, inode, pending = start, _inode(self.path), b""
        while not until():
            current = _inode(self.path)
            size = _size(self.path)
            if current != inode or (size is not None and size < position):
                position, inode, pending = 0, current, b""  # rotated or truncated
            if size is not None and size > position:
                with self.path.open("rb") as f:
                    f.seek(position)
                    data = pending + f.read()
                    position = f.tell()
                complete, _, pending = data.rpartition(b"\n")
                if complete:
                    for raw, event in _parse(complete.split(b"\n")):
                        text = self._show(raw, event)
                        if text is not None:
                            out.write(text + "\n")
                    out.flush()
                continue
            time.sleep(poll)  # nothing new: look again shortly (no file events in the stdlib)

    def _show(self, raw: str, event: dict[str, Any] | None) -> str | None:
        if event is None:
            return raw if self.component is None else None  # not JSON: shown as it is
        if self.component is not None and event.get("component") != self.component:
            return None
        return raw if self.raw else format_event(event)


def _parse(lines: Iterable[bytes]) -> Iterator[tuple[str, dict[str, Any] | None]]:
    for line in lines:
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        yield text, event if isinstance(event, dict) else None


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None

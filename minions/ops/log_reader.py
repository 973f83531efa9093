"""Reading the structured log file (``<project>/.minions/logs/minions.log``, JSON lines).

``minions logs`` shows the events of the whole system or of one component (the ``component``
field every event logged on a component's behalf carries, child processes' included), as
readable lines or as the JSON lines themselves, and with ``-f`` keeps showing new ones as they
are written.

The file rotates by size (``minions.core.logs``): ``minions.log`` is renamed ``minions.log.1``,
the older ones shift to ``.2`` and up, and a new ``minions.log`` starts. Reading goes across
them, oldest first. Following keeps the file it reads open and polls it a few times a second;
when the name points at another file (rotated) it reads what is left in the old one first, then
goes on to the next newer file from its start, so no line written around a rotation is missed.
A file that became shorter (truncated) is read again from its start. It works the same for a
live system, a stopped one, and a copy of the project folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

__all__ = ["FOLLOW_POLL", "LogReader", "Position", "format_event"]

#: How often a followed log file is checked for new lines, in seconds.
FOLLOW_POLL = 0.2
_SHOWN_APART = ("timestamp", "level", "component", "event", "logger")


@dataclass(frozen=True)
class Position:
    """A place in the log: which file (by inode, which a rotation's rename keeps) and where."""

    inode: int | None
    offset: int


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
    """The events of one log file and its rotated predecessors, optionally only those of
    ``component``."""

    def __init__(self, path: Path, component: str | None = None, *, raw: bool = False) -> None:
        self.path = path
        self.component = component
        self.raw = raw

    def __repr__(self) -> str:
        return f"<LogReader {self.path} component={self.component or '*'}>"

    def files(self) -> list[Path]:
        """The rotated files (oldest first), then the current one if it exists."""
        pattern = re.compile(re.escape(self.path.name) + r"\.(\d+)")
        rotated: list[tuple[int, Path]] = []
        with contextlib.suppress(OSError):
            for entry in self.path.parent.iterdir():
                found = pattern.fullmatch(entry.name)
                if found:
                    rotated.append((int(found.group(1)), entry))
        ordered = [path for _, path in sorted(rotated, reverse=True)]
        return [*ordered, self.path] if self.path.exists() else ordered

    def components(self) -> set[str]:
        """Every component named in the file and its rotated files."""
        found: set[str] = set()
        for path in self.files():
            with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                found |= {
                    str(event["component"])
                    for _, event in _parse(f)
                    if event is not None and event.get("component")
                }
        return found

    def tail(self, lines: int | None) -> tuple[list[str], Position]:
        """The last ``lines`` matching lines (all with ``None``) across the rotated files and the
        current one, and where the reading ended (for :meth:`follow`)."""
        shown: deque[str] = deque(maxlen=lines)
        end = Position(None, 0)
        for path in self.files():
            try:
                f = path.open("rb")
            except FileNotFoundError:
                continue  # rotated away meanwhile
            with f:
                for raw, event in _parse(f):
                    text = self._show(raw, event)
                    if text is not None:
                        shown.append(text)
                end = Position(os.fstat(f.fileno()).st_ino, f.tell())
        return list(shown), end

    def follow(
        self,
        start: Position,
        out: TextIO,
        *,
        until: Callable[[], bool] = lambda: False,
        poll: float = FOLLOW_POLL,
    ) -> None:
        """Write matching lines written after ``start`` as they come, until ``until()``."""
        current = self._open_at(start)
        pending = b""
        try:
            while not until():
                if current is None:
                    current = self._open_next(None)
                    if current is None:
                        time.sleep(poll)
                        continue
                info = os.fstat(current.fileno())
                if info.st_size < current.tell():
                    current.seek(0)  # truncated: read it again from its start
                    pending = b""
                data = current.read()
                if data:
                    pending = self._write_complete(pending + data, out)
                    continue
                successor = self._open_next(info.st_ino)
                if successor is not None:
                    # Rotated: everything of the old file has been read just above.
                    current.close()
                    current, pending = successor, b""
                    continue
                time.sleep(poll)  # nothing new: look again shortly (no file events in the stdlib)
        finally:
            if current is not None:
                current.close()

    def _open_at(self, start: Position) -> IO[bytes] | None:
        """The file ``start`` points into, positioned there (the oldest file if it is gone)."""
        for path in self.files():
            with contextlib.suppress(OSError):
                if start.inode is not None and os.stat(path).st_ino == start.inode:
                    f = path.open("rb")
                    if os.fstat(f.fileno()).st_ino != start.inode:
                        f.close()  # rotated between the stat and the open
                        continue
                    f.seek(start.offset)
                    return f
        return self._open_next(None)

    def _open_next(self, inode: int | None) -> IO[bytes] | None:
        """The file written after the one with ``inode``, from its start; ``None`` while there is
        none. With ``None``, or when that file is gone (rotated out of existence, which takes the
        oldest first), every file left is newer: the oldest of them."""
        files = self.files()
        inodes: list[int | None] = []
        for path in files:
            try:
                inodes.append(os.stat(path).st_ino)
            except OSError:
                inodes.append(None)
        if inode is not None and inode in inodes:
            candidates = files[inodes.index(inode) + 1 :]
        else:
            candidates = files
        for path in candidates:
            try:
                f = path.open("rb")
            except OSError:
                continue  # rotated away meanwhile: the next name holds it now
            if inode is not None and os.fstat(f.fileno()).st_ino == inode:
                f.close()
                return None
            return f
        return None

    def _write_complete(self, data: bytes, out: TextIO) -> bytes:
        """Write the complete lines of ``data``; return the incomplete rest."""
        complete, _, rest = data.rpartition(b"\n")
        if complete:
            for raw, event in _parse(complete.split(b"\n")):
                text = self._show(raw, event)
                if text is not None:
                    out.write(text + "\n")
            out.flush()
        return rest

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

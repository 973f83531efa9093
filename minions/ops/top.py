"""The status table, once (``minions status``) or refreshed each second (``minions top``).

Both render the answer of the control socket's ``status`` request (plain data, see
``minions.ops.control.status_row``): a header line for the system — its folder, pid, uptime, the
main process's CPU and memory, where metrics are served — then one row per component in start
order, each replicated component followed by a row per replica (``#0``, ``#1``...; its node
for a Ray actor). CPU % is measured between two looks at a process; ``top`` looks every
refresh, while a lone ``status`` shows the average since the previous look (or since the process
started). CPU and memory are shown for isolated components' children and replicas; in-process
components share the main process, shown in the header. CALLS counts the calls, streams and
workflow steps in flight on a replica (on all of them, in its component's row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["render_status", "run_top"]

_HEADERS = (
    "COMPONENT",
    "KIND",
    "ISOLATED",
    "STATE",
    "PID",
    "RESTARTS",
    "CALLS",
    "UPTIME",
    "CPU%",
    "RSS",
    "LAST ERROR",
)
_RIGHT = frozenset({"PID", "RESTARTS", "UPTIME", "CPU%", "RSS", "CALLS"})
_CLEAR = "\x1b[H\x1b[2J"


def render_status(status: Mapping[str, Any], width: int | None = None) -> str:
    """The status table as text; ``width`` (a terminal's) shortens the last-error column."""
    system = status["system"]
    header = (
        f"minions  {system['project']}  pid {system['pid']}  "
        f"up {format_duration(system['uptime_seconds'])}  "
        f"cpu {format_percent(system['cpu_percent'])}  rss {format_bytes(system['rss_bytes'])}"
    )
    if system.get("metrics_url"):
        header += f"  metrics {system['metrics_url']}"
    if system.get("stopping"):
        header += "  (stopping)"
    rows = []
    for component in status["components"]:
        rows.append(_row(component))
        rows.extend(_replica_row(replica) for replica in component.get("replicas") or ())
    return "\n".join([header, "", *_table(rows, width)])


def _row(c: Mapping[str, Any]) -> list[str]:
    replicas = c.get("replicas") or ()
    calls = sum(r.get("calls_in_flight") or 0 for r in replicas)
    return [
        c["name"],
        c["kind"],
        "yes" if c["isolated"] else "no",
        c["state"],
        str(c["pid"]) if c.get("pid") is not None else "-",
        str(c["restarts"]),
        str(calls) if replicas else "-",
        format_duration(c.get("uptime_seconds")),
        format_percent(c.get("cpu_percent")),
        format_bytes(c.get("rss_bytes")),
        _one_line(c.get("last_error")),
    ]


def _replica_row(r: Mapping[str, Any]) -> list[str]:
    return [
        f"  #{r['index']}",
        "replica",
        r.get("node") or "",
        r["state"],
        str(r["pid"]) if r.get("pid") is not None else "-",
        str(r["restarts"]),
        str(r.get("calls_in_flight", 0)),
        format_duration(r.get("uptime_seconds")),
        format_percent(r.get("cpu_percent")),
        format_bytes(r.get("rss_bytes")),
        _one_line(r.get("last_error")),
    ]


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())  # one line, whatever the error's message looks like


def _table(rows: Sequence[list[str]], width: int | None) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS[:-1])]
    lines = []
    for cells in [list(_HEADERS), *rows]:
        parts = [
            cell.rjust(w) if header in _RIGHT else cell.ljust(w)
            for cell, w, header in zip(cells, widths, _HEADERS, strict=False)
        ]
        line = "  ".join([*parts, cells[-1]])
        if width is not None and len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        lines.append(line.rstrip())
    return lines


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def run_top(
    fetch: Callable[[], Mapping[str, Any]],
    out: TextIO,
    *,
    interval: float = 1.0,
    iterations: int | None = None,
    width: Callable[[], int | None] = lambda: None,
) -> None:
    """Show the status table every ``interval`` seconds, ``iterations`` times (or until ^C).

    On a terminal each refresh replaces the last; elsewhere the tables follow one another.
    """
    tty = out.isatty()
    shown = 0
    while iterations is None or shown < iterations:
        if shown:
            time.sleep(interval)  # the refresh period of the view, not a wait for an event
        text = render_status(fetch(), width())
        out.write(f"{_CLEAR}{text}\n" if tty else f"{text}\n\n")
        out.flush()
        shown += 1

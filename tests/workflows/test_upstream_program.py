"""A program written for the original ``minions``, run end to end and resumed after a SIGKILL.

``tests/workflows/_upstream_program.py`` combines the original's API beyond the basics —
msgspec Struct events, context and config, the ``Gru.create`` persistence settings, named
steps, an untracked resource method and ``safe_create_task`` in a pipeline, a resource and the
minion — and runs in a real subprocess, with the minion in process or isolated in a child. The
first run finishes two workflows, then is SIGKILLed in the middle of the third (in its step
"confirm"); the second run, on the same SQLite file, resumes that workflow at "confirm" and
then takes a new event. The journal the steps append to shows every step that ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from minions.workflows.checkpoint import read_header
from minions.workflows.sqlite.store import SQLiteStateStore

from .test_resume import integrity

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("open_fds")]

REPO = Path(__file__).resolve().parents[2]
LIMIT = 30.0


class Program:
    """One run of the program; killed (and reaped) when the test is done with it."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.args = [
            "--db", str(tmp_path / "state.sqlite3"), "--journal", str(tmp_path / "journal"),
            *args,
        ]  # fmt: skip
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Program:
        with self.stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.workflows._upstream_program",
                *self.args,
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
        if proc is not None:
            with anyio.fail_after(LIMIT):
                await proc.wait()

    async def line_starting(self, prefix: str) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        with anyio.fail_after(LIMIT):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    await self.proc.wait()
                    stderr = self.stderr_path.read_text(errors="replace")
                    pytest.fail(
                        f"the program exited ({self.proc.returncode}) before printing "
                        f"{prefix!r}; stderr:\n{stderr[-3000:]}"
                    )
                line = raw.decode().strip()
                if line.startswith(prefix):
                    return line

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        with anyio.fail_after(LIMIT):
            assert await self.proc.wait() == -signal.SIGKILL

    async def exit_code(self) -> int:
        assert self.proc is not None
        with anyio.fail_after(LIMIT):
            return await self.proc.wait()


async def saved_steps(db: Path) -> list[tuple[str, int, str | None]]:
    store = SQLiteStateStore(db)
    try:
        rows = await store.get_all_contexts()
    finally:
        await store.aclose()
    headers = [read_header(row.context) for row in rows]
    return [(h.minion, h.next_step_index, h.next_step) for h in headers]


@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "isolated"])
async def test_a_program_for_the_original_runs_and_resumes_after_sigkill(
    tmp_path: Path, isolated: bool
) -> None:
    """Two workflows run end to end; the third is killed in its step "confirm" and resumed
    there by the next run, its Struct context (a Decimal price) intact; the store's first
    failing saves were retried under idle-until-persisted; the program's child processes died
    with it."""
    mode = ["--isolated"] if isolated else []
    minion = "upstream-trader-isolated" if isolated else "upstream-trader"
    async with Program(tmp_path, "first", *mode, "--events", "3", "--kill-at", "3") as first:
        assert await first.line_starting("KILLPOINT") == "KILLPOINT 3"
        await first.kill()
    db = tmp_path / "state.sqlite3"
    assert integrity(db) == "ok"
    assert await saved_steps(db) == [(minion, 1, "confirm")]

    async with Program(tmp_path, "second", *mode, "--first", "4", "--events", "1",
                       "--expect", "2") as second:  # fmt: skip
        done = await second.line_starting("DONE")
        assert await second.exit_code() == 0
    stats: dict[str, Any] = json.loads(done.removeprefix("DONE "))
    assert (stats["resumed"], stats["started"], stats["succeeded"]) == (1, 1, 2)
    assert stats["checkpoint_failures"] == 2 and stats["failed"] == 0
    assert await saved_steps(db) == []

    booked = "Decimal:200.50 True"
    assert (tmp_path / "journal").read_text().splitlines() == [
        "quote 1", "confirm 1", f"book 1 {booked}",
        "quote 2", "confirm 2", f"book 2 {booked}",
        "quote 3", "confirm 3",  # killed here
        "confirm 3", f"book 3 {booked}",  # resumed at "confirm": at least once
        "quote 4", "confirm 4", f"book 4 {booked}",
    ]  # fmt: skip

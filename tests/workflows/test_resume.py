"""Kill points: a workflow program is SIGKILLed at an exact point, then started again against
the same SQLite file; the steps that ran in both processes together show at-least-once resume.

Each case runs ``tests/workflows/_kill_target.py`` in a real subprocess. The program prints a
marker line at the kill point and blocks; the test waits for the marker (no sleeps), sends
SIGKILL, checks ``PRAGMA integrity_check``, and runs the program again without a kill point: it
resumes whatever the file holds and prints its workflow statistics. Steps append to a counts
file, so runs of step one and step two are counted across both processes.
"""

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("open_fds")]

REPO = Path(__file__).resolve().parents[2]
LIMIT = 30.0


class Program:
    """One run of the target program; killed (and reaped) when the test is done with it."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "state.sqlite3"
        self.counts = tmp_path / "counts.txt"
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.args = ["--db", str(self.db), "--counts", str(self.counts), *args]
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "Program":
        with self.stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.workflows._kill_target",
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

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def line_starting(self, prefix: str) -> str:
        """The first stdout line starting with ``prefix``; fails if the program exits first."""
        assert self.proc is not None and self.proc.stdout is not None
        with anyio.fail_after(LIMIT):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    await self.proc.wait()
                    pytest.fail(
                        f"the program exited ({self.proc.returncode}) before printing "
                        f"{prefix!r}; stderr:\n{self.stderr[-3000:]}"
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


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
        return str(result)
    finally:
        conn.close()


def rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute("SELECT count(*) FROM contexts").fetchone()
        return int(count)
    finally:
        conn.close()


def step_runs(counts: Path) -> tuple[int, int]:
    seen = (
        Counter(line.split()[0] for line in counts.read_text().splitlines())
        if counts.exists()
        else Counter()
    )
    return seen["step1"], seen["step2"]


async def kill_at(tmp_path: Path, point: str) -> None:
    async with Program(tmp_path, f"first-{point}", "--kill-point", point) as program:
        assert await program.line_starting("KILLPOINT") == f"KILLPOINT {point}"
        await program.kill()
    assert integrity(tmp_path / "state.sqlite3") == "ok"


async def resume(tmp_path: Path, *args: str) -> dict[str, Any]:
    async with Program(tmp_path, "second", "--events", "0", *args) as program:
        done = await program.line_starting("DONE")
        assert await program.exit_code() == 0, program.stderr[-3000:]
    assert integrity(tmp_path / "state.sqlite3") == "ok"
    stats: dict[str, Any] = json.loads(done.removeprefix("DONE "))
    return stats


@pytest.mark.parametrize(
    ("point", "runs", "resumed"),
    [
        ("before_first_save", (0, 0), 0),  # nothing durable yet: the event is lost
        ("after_start_save", (1, 1), 1),  # resumes at step one, which had not run
        ("inside_step1", (2, 1), 1),  # step one runs again
        ("between_steps", (2, 1), 1),  # step one finished, its successor's save did not commit
        ("after_second_save", (1, 1), 1),  # resumes at step two
        ("before_delete", (1, 2), 1),  # finished, but the delete did not commit: step two again
        ("after_delete", (1, 1), 0),  # finished and deleted: nothing to resume
        # Counted as succeeded, its deferred delete not committed: step two again.
        ("succeeded_delete_pending", (1, 2), 1),
    ],
)
async def test_a_killed_workflow_resumes_at_least_once(
    tmp_path: Path, point: str, runs: tuple[int, int], resumed: int
) -> None:
    """After SIGKILL at each point, a new process resumes from the last committed checkpoint:
    each step runs at least once (never skipped), and no checkpoint is left behind."""
    await kill_at(tmp_path, point)
    stats = await resume(tmp_path)
    assert step_runs(tmp_path / "counts.txt") == runs
    assert stats["resumed"] == resumed
    assert stats["succeeded"] == resumed and stats["failed"] == 0
    assert rows(tmp_path / "state.sqlite3") == 0


async def test_a_truncated_checkpoint_is_logged_and_skipped(tmp_path: Path) -> None:
    """A checkpoint cut short (as by a broken disk or a bad copy) does not stop the start: it is
    logged as corrupt and skipped, and it stays in the file for a person to look at."""
    await kill_at(tmp_path, "after_start_save")
    conn = sqlite3.connect(tmp_path / "state.sqlite3")
    with conn:
        conn.execute("UPDATE contexts SET context = substr(context, 1, length(context) - 5)")
    conn.close()
    async with Program(tmp_path, "second", "--events", "0") as program:
        done = await program.line_starting("DONE")
        assert await program.exit_code() == 0
        assert "workflow.checkpoint_corrupt" in program.stderr
    stats = json.loads(done.removeprefix("DONE "))
    assert (stats["corrupt_skipped"], stats["resumed"]) == (1, 0)
    assert step_runs(tmp_path / "counts.txt") == (0, 0)
    assert integrity(tmp_path / "state.sqlite3") == "ok"
    assert rows(tmp_path / "state.sqlite3") == 1


async def test_a_type_incompatible_checkpoint_fails_the_start_saying_drain_first(
    tmp_path: Path,
) -> None:
    """Restarted with a changed context type, the program's start is refused with a message
    that says to drain first; the checkpoint is kept, and the old code still resumes it."""
    await kill_at(tmp_path, "after_start_save")
    async with Program(tmp_path, "changed", "--events", "0", "--context", "v2") as program:
        line = await program.line_starting("START-FAILED")
        assert await program.exit_code() == 3
    assert "context type" in line and "drain first" in line
    assert rows(tmp_path / "state.sqlite3") == 1 and integrity(tmp_path / "state.sqlite3") == "ok"
    stats = await resume(tmp_path)
    assert stats["resumed"] == 1 and step_runs(tmp_path / "counts.txt") == (1, 1)

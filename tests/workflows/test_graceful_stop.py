"""A graceful stop loses no event: every event a pipeline produced is finished by a workflow,
in this run or the next, across stops by SIGINT of a real ``run(...)`` program."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

LIMIT = 30.0

PROGRAM = """
import asyncio
import os

from pydantic import BaseModel

from minions import Minion, Pipeline, minion_step, run

PRODUCED = open("produced.txt", "a", buffering=1)
FINISHED = open("finished.txt", "a", buffering=1)


class Tick(BaseModel):
    n: str


class Seen(BaseModel):
    first: bool = False


class Ticks(Pipeline[Tick]):
    count = 0

    async def produce_event(self) -> Tick:
        await asyncio.sleep(0.001)
        Ticks.count += 1
        tick = Tick(n=f"{os.getpid()}-{Ticks.count}")
        PRODUCED.write(tick.n + "\\n")  # produced: from here on it must not be lost
        return tick


class Work(Minion[Tick, Seen]):
    ticks: Ticks
    finished = 0

    @minion_step
    async def first(self) -> None:
        self.context.first = True

    @minion_step
    async def second(self) -> None:
        FINISHED.write(self.event.n + "\\n")
        Work.finished += 1
        if Work.finished == 50:
            print("BUSY", flush=True)


run(Work)
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigint_three_times_loses_no_event(tmp_path: Path) -> None:
    """Three runs of a two-step workflow minion, each stopped by SIGINT while its pipeline is
    producing: every event produced was finished, and no checkpoint is left."""
    (tmp_path / "program.py").write_text(textwrap.dedent(PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIONS_")}
    env["MINIONS_PROJECT_DIR"] = str(tmp_path)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "program.py"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], LIMIT)
            assert ready, "the program printed nothing"
            assert proc.stdout.readline() == "BUSY\n"  # 50 workflows done; more under way
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=LIMIT) == 0
        finally:
            proc.kill()
            proc.wait(timeout=LIMIT)
            assert proc.stdout is not None
            proc.stdout.close()
    produced, finished = _lines(tmp_path / "produced.txt"), _lines(tmp_path / "finished.txt")
    assert len(produced) == len(set(produced)) >= 150
    assert sorted(set(produced) - set(finished)) == []
    with sqlite3.connect(tmp_path / ".minions" / "state.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM contexts").fetchone() == (0,)

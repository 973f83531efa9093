"""Helpers for the CLI tests: a small project written into ``tmp_path``, a real system running it
in a subprocess, and the ``minions`` command called in-process against that system.

:class:`System` starts ``python -m minions run app.py`` with ``MINIONS_PROJECT_DIR`` set and
reads its stdout line by line in a thread; the test programs print a line for what the tests
wait for (``READY``, ``noted: ...``), and :meth:`System.wait_for` waits for it under a timeout.
Whatever happens, the fixture stops the system — SIGTERM, then SIGKILL of its process group —
and waits for it, so no process outlives a test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minions.ops.cli import main

#: How long a test waits for a line, an answer or an exit before it fails.
LIMIT = 30.0

RESOURCES = '''
from collections.abc import AsyncIterator

from minions import Resource


class Recorder(Resource):
    """Prints what it is told, so the test sees calls from any process on the system's stdout."""

    async def note(self, text: str) -> int:
        print(f"noted: {text}", flush=True)
        return len(text)

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
'''

STRATEGY = """
import asyncio
import os

from minions import Minion
from resources import Recorder

VERSION = "v1"


class Strategy(Minion, isolated=True):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def run(self) -> None:
        await self._recorder.note(f"Strategy {VERSION} pid={os.getpid()}")
        await asyncio.Event().wait()
"""

APP = '''
import asyncio
import os

from minions import Minion, run
from resources import Recorder
from strategy import Strategy

MAIN_VERSION = "m1"


class Ticker(Minion):
    """In-process: says READY once it runs."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def run(self) -> None:
        await self._recorder.note("Ticker running")
        await asyncio.Event().wait()


class MainWorker(Minion, isolated=True):
    """Isolated, defined in the program file itself."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def run(self) -> None:
        await self._recorder.note(f"MainWorker {MAIN_VERSION} pid={os.getpid()}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    run(Ticker, Strategy, MainWorker)
'''


def write_project(directory: Path, **files: str) -> Path:
    """Write the default test project, and ``files`` (named without ``.py``), into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = {"resources": RESOURCES, "strategy": STRATEGY, "app": APP, **files}
    for name, text in sources.items():
        target = directory / (name if "." in name else f"{name}.py")
        target.write_text(text.lstrip())
    return directory


class System:
    """A Minions system running ``app.py`` of ``project`` in a subprocess."""

    def __init__(self, project: Path, *run_args: str) -> None:
        self.project = project
        self.stderr_path = project / "system.stderr"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.pending: list[str] = []
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "minions", "run", *run_args, "app.py"],
                cwd=project,
                env={**os.environ, "MINIONS_PROJECT_DIR": str(project)},
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killed as one in cleanup
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = LIMIT) -> re.Match[str]:
        """The first line not matched before that matches ``pattern`` (lines arrive in any
        order, so unmatched ones are kept for later waits); fails after ``timeout``."""
        regex = re.compile(pattern)
        for line in self.pending:
            found = regex.search(line)
            if found:
                self.pending.remove(line)
                return found
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s{self._context()}")
            if line is None:
                pytest.fail(f"the system ended before printing {pattern!r}{self._context()}")
            self.seen.append(line)
            found = regex.search(line)
            if found:
                return found
            self.pending.append(line)

    def wait_exit(self, timeout: float = LIMIT) -> int:
        return self.process.wait(timeout=timeout)

    def _context(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"\nstdout so far: {self.seen}\nstderr (tail):\n{stderr}"

    def close(self) -> None:
        """Stop the system, whatever state it is in, and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this test created
        self.process.wait(timeout=LIMIT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._reader.join(timeout=LIMIT)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


@pytest.fixture
def start_system() -> Iterator[type[System]]:
    """Start systems with ``start_system(project, *run_args)``; all are stopped at the end."""
    started: list[System] = []

    class _Tracked(System):
        def __init__(self, project: Path, *run_args: str) -> None:
            super().__init__(project, *run_args)
            started.append(self)

    try:
        yield _Tracked
    finally:
        for system in started:
            system.close()


@pytest.fixture
def running(project: Path, start_system: type[System]) -> System:
    """The default project's system, with every component running."""
    system = start_system(project)
    system.wait_for(r"noted: Ticker running")
    system.wait_for(r"noted: Strategy v1")
    system.wait_for(r"noted: MainWorker m1")
    wait_all_running(project)
    return system


def status_components(project: Path) -> dict[str, dict[str, object]]:
    """``minions status --json``'s components, by name."""
    result = cli("status", "--json", "--project", str(project))
    assert result.code == 0, result.err
    return {c["name"]: c for c in json.loads(result.out)["components"]}


def wait_all_running(project: Path, timeout: float = LIMIT) -> dict[str, dict[str, object]]:
    """Ask the system until it reports every component running.

    An isolated child prints its readiness line from ``run()``, which may reach the test a
    moment before the parent has processed the child's READY and marked the component running.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = status_components(project)
        if all(c["state"] == "running" for c in found.values()):
            return found
        states = {name: c["state"] for name, c in found.items()}
        assert time.monotonic() < deadline, f"not every component is running: {states}"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli(*args: str) -> Result:
    """Run the ``minions`` command in this process; its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())

"""Background tasks and untracked methods of components in a child process.

``safe_create_task`` keeps its rules across the boundary: a task that raises in the child
crashes the isolated component (the parent sees the exception's type and message, and the
restart policy applies), and the tasks are cancelled and drained in the child before its
``shutdown()``. ``@Resource.untracked`` methods stay callable through a proxy, both ways, and
are left out of the runtime's call metrics. Components are module-level so the child finds them;
every wait is on an event the parent-side ``Board`` sets when a child calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from minions import Backoff, Minion, Resource, Runtime
from minions.ops.metrics import MetricsEndpoint

pytestmark = pytest.mark.anyio

LIMIT = 30.0
FAST = Backoff(initial=0.01, cap=0.05, jitter=0.0)


class Board(Resource):
    """Parent-side: where children report, and what the test tells them."""

    hellos: ClassVar[list[str]] = []
    notes: ClassVar[list[str]] = []
    changed: ClassVar[asyncio.Event]
    fail: ClassVar[asyncio.Event]

    async def hello(self, who: str) -> int:
        self.hellos.append(who)
        self.changed.set()
        return len(self.hellos)

    async def told_to_fail(self) -> None:
        await self.fail.wait()

    @Resource.untracked
    async def note(self, text: str) -> None:
        self.notes.append(text)
        self.changed.set()


@pytest.fixture(autouse=True)
def fresh_board() -> None:
    Board.hellos, Board.notes = [], []
    Board.changed, Board.fail = asyncio.Event(), asyncio.Event()


async def until(predicate: object) -> None:
    assert callable(predicate)
    with anyio.fail_after(LIMIT):
        while not predicate():
            Board.changed.clear()
            await Board.changed.wait()


class Sensor(Resource, isolated=True, backoff=FAST):
    """An isolated resource whose background task fails when the test says so."""

    board: Board

    async def startup(self) -> None:
        self.safe_create_task(self.watch(), name="sensor-watch")

    async def watch(self) -> None:
        await self.board.hello("sensor")
        await self.board.told_to_fail()
        raise ValueError("the sensor broke")


async def test_a_failing_task_in_a_child_crashes_the_isolated_component(tmp_path: Path) -> None:
    """The task's exception ends the child as a crash whose cause names it; the resource is
    restarted in a new child by its (permanent) policy."""
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        await rt.start(Sensor)
        await until(lambda: len(Board.hellos) == 1)
        Board.fail.set()
        await until(lambda: len(Board.hellos) == 2)  # the second child said hello
        status = rt.status()["Sensor"]
        assert status.crashes == 1 and status.crash_causes == {"raised": 1}
        assert "ValueError: the sensor broke" in (status.last_error or "")


@dataclass
class WorkerConfig:
    journal: str


class Worker(Minion, isolated=True):
    """An isolated minion whose task must be drained in the child before its shutdown()."""

    board: Board
    config: WorkerConfig

    async def run(self) -> None:
        self.safe_create_task(self.loop())
        await asyncio.Event().wait()

    async def loop(self) -> None:
        try:
            await self.board.note("loop started")
            await asyncio.Event().wait()
        finally:
            self._write("loop cancelled")

    async def shutdown(self) -> None:
        self._write("shutdown")

    def _write(self, line: str) -> None:
        with open(self.config.journal, "a", encoding="utf-8") as f:
            f.write(line + "\n")


async def test_tasks_in_a_child_are_drained_before_its_shutdown(tmp_path: Path) -> None:
    """Stopping an isolated minion cancels its background task in the child and waits for
    it before shutdown() runs there; the untracked note() reached the parent through the
    child's proxy."""
    journal = tmp_path / "journal.txt"
    config = {"Worker": {"journal": str(journal)}}
    async with Runtime(project_dir=tmp_path, environ={}, config=config) as rt:
        await rt.start(Worker)
        await until(lambda: Board.notes == ["loop started"])
        await rt.stop(Worker)
        assert rt.status()["Worker"].crashes == 0
    assert journal.read_text().splitlines() == ["loop cancelled", "shutdown"]


class Counter(Resource, isolated=True):
    """An isolated resource with measured and untracked methods."""

    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @Resource.untracked
    async def peek(self) -> int:
        return self.total

    @Resource.untracked()
    async def countdown(self, n: int) -> AsyncIterator[int]:
        for i in range(n, 0, -1):
            yield i


class Caller(Minion):
    """In-process: calls the isolated Counter; and its results go to the Board."""

    counter: Counter
    board: Board

    async def run(self) -> None:
        await self.counter.add(2)
        await self.counter.add(3)
        seen = await self.counter.peek()
        items = [i async for i in self.counter.countdown(3)]
        await self.board.note(f"peek={seen} countdown={items}")
        await asyncio.Event().wait()


class Reporter(Minion, isolated=True):
    """In a child: calls the parent's Board, tracked and untracked."""

    board: Board

    async def run(self) -> None:
        await self.board.hello("reporter")
        await self.board.note("reporter noted")
        await asyncio.Event().wait()


async def test_untracked_methods_are_callable_through_proxies_and_left_out_of_metrics(
    tmp_path: Path,
) -> None:
    """With metrics on, calls across the boundary are measured per method — except those to
    @Resource.untracked methods (and streams), which still work through the proxy, into a
    child and out of one."""
    endpoint = MetricsEndpoint(0)
    async with Runtime(project_dir=tmp_path, environ={}, extensions=[endpoint]) as rt:
        await rt.start(Caller, Reporter)
        await until(lambda: len(Board.notes) == 2 and Board.hellos == ["reporter"])
        assert endpoint.metrics is not None
        measured = set(endpoint.metrics.meters)
        text = endpoint.metrics.exposition()
    assert sorted(Board.notes) == ["peek=5 countdown=[3, 2, 1]", "reporter noted"]
    assert ("Counter", "Counter", "add") in measured
    assert ("Reporter", "Board", "hello") in measured
    assert not {method for _, _, method in measured} & {"peek", "countdown", "note"}
    assert 'method="add"' in text and 'method="peek"' not in text


def test_untracked_marks_async_methods_only() -> None:
    """@Resource.untracked on a plain function is a TypeError saying it must be async."""
    with pytest.raises(TypeError, match="not 'async def'"):

        class Wrong(Resource):
            @Resource.untracked
            def size(self) -> int:
                return 0

"""An isolated workflow minion: its steps run in a child, the parent owns the store.

When the child dies in the middle of a step, the restarted child resumes that workflow from its
last checkpoint — the orchestrator (this test's runtime) is never restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import psutil
import pytest
from structlog.testing import capture_logs

from isolation import Isolation
from minions import (
    AbortWorkflow,
    Backoff,
    ComponentState,
    Minion,
    Pipeline,
    Resource,
    Runtime,
    WorkflowStore,
    minion_step,
)
from minions.workflows.checkpoint import read_header

pytestmark = pytest.mark.anyio

LIMIT = 30.0


@dataclass(frozen=True)
class Job:
    number: int


@dataclass
class JobContext:
    doubled: int = 0


class Jobs(Pipeline[Job]):
    """Produces jobs 0..count-1, then nothing."""

    count: ClassVar[int] = 3

    def __init__(self) -> None:
        self._next = 0

    async def produce_event(self) -> Job:
        if self._next >= self.count:
            await asyncio.Event().wait()
        self._next += 1
        return Job(self._next - 1)


class Ledger(Resource):
    """Parent-side record of every step run, by whom (pid) and with what context."""

    runs: ClassVar[list[tuple[int, str, int, int]]] = []
    crashed: ClassVar[set[int]] = set()
    done: ClassVar[asyncio.Event]
    expected: ClassVar[int] = 3
    #: The job whose report step, once it has crashed, waits here until ``released``.
    hold: ClassVar[int | None] = None
    held: ClassVar[asyncio.Event]
    released: ClassVar[asyncio.Event]

    async def ran(self, number: int, step: str, pid: int, doubled: int) -> None:
        if step == "report" and number == self.hold:
            Ledger.held.set()
            await Ledger.released.wait()
        self.runs.append((number, step, pid, doubled))
        if sum(1 for r in self.runs if r[1] == "report") >= self.expected:
            self.done.set()

    async def first_crash(self, number: int) -> bool:
        """True the first time it is asked for ``number``: crash now."""
        if number in self.crashed:
            return False
        self.crashed.add(number)
        return True


class Doubler(Minion[Job, JobContext], isolated=True, backoff=Backoff(initial=0.01, jitter=0)):
    """Its steps run in a child. One workflow at a time, so that a crash interrupts only the
    workflow that causes it (with more in flight, the others' steps would run again too:
    at-least-once)."""

    max_in_flight = 1
    jobs: Jobs
    ledger: Ledger
    crash_on: ClassVar[int | None] = 1
    abort_on: ClassVar[int | None] = None
    fail_on: ClassVar[int | None] = None

    @minion_step
    async def double(self) -> None:
        self.context.doubled = self.event.number * 2
        await self.ledger.ran(self.event.number, "double", os.getpid(), self.context.doubled)

    @minion_step
    async def report(self) -> None:
        if self.event.number == self.abort_on:
            raise AbortWorkflow("nothing to report")
        if self.event.number == self.fail_on:
            raise ValueError(f"report {self.event.number} refused")
        if self.event.number == self.crash_on and await self.ledger.first_crash(self.event.number):
            os._exit(7)  # the child dies in the middle of this step
        await self.ledger.ran(self.event.number, "report", os.getpid(), self.context.doubled)


def _reset(expected: int) -> None:
    Ledger.runs, Ledger.crashed, Ledger.expected = [], set(), expected
    Ledger.done = asyncio.Event()
    Ledger.hold, Ledger.held, Ledger.released = None, asyncio.Event(), asyncio.Event()


async def test_a_child_dying_mid_step_resumes_the_workflow_in_the_next_child(
    tmp_path: Path,
) -> None:
    """Job 1's child dies in step 2; the restarted child runs step 2 again with the context
    checkpointed by step 1 (which does not run again); every job succeeds."""
    _reset(expected=3)
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(Doubler)
            await Ledger.done.wait()
            status = rt.status()["Doubler"]
    doubles = [r for r in Ledger.runs if r[1] == "double"]
    reports = [r for r in Ledger.runs if r[1] == "report"]
    assert sorted(r[0] for r in doubles) == [0, 1, 2], "step 1 ran once per job"
    assert sorted((r[0], r[3]) for r in reports) == [(0, 0), (1, 2), (2, 4)]
    parent = os.getpid()
    assert all(r[2] != parent for r in Ledger.runs), "steps ran in the child"
    double_1 = next(r for r in doubles if r[0] == 1)
    report_1 = next(r for r in reports if r[0] == 1)
    assert double_1[2] != report_1[2], "job 1 finished in a new child"
    assert status.crashes == 1 and "exited with status 7" in (status.last_error or "")
    assert status.state is ComponentState.RUNNING


async def test_a_childs_death_in_a_step_is_the_workflows_last_error(tmp_path: Path) -> None:
    """The workflow whose step killed the child is resumed as attempt 2, and both the board
    (what ``minions workflows`` shows) and its checkpoint's history name the death."""
    _reset(expected=3)
    Ledger.hold = 1
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(Doubler)
            await Ledger.held.wait()
            store = rt.instances()["WorkflowStore"]
            assert isinstance(store, WorkflowStore)
            # Job 2, handed over while the minion stopped, may wait for room meanwhile.
            (entry,) = [e for e in store.services.board.entries() if e.state == "running"]
            rows = await store.state_store.get_all_contexts()
            (row,) = [r for r in rows if r.workflow_id == entry.workflow_id]
            Ledger.released.set()
            await Ledger.done.wait()
    assert (entry.state, entry.steps[entry.step_index], entry.attempts) == ("running", "report", 2)
    assert entry.last_error is not None and entry.last_error.startswith("ComponentCrashed: ")
    assert "status 7" in entry.last_error
    header = read_header(row.context)
    assert (header.attempts, header.last_error) == (2, entry.last_error)


async def test_abort_and_failure_in_the_child_are_counted_as_in_process(tmp_path: Path) -> None:
    """AbortWorkflow raised by a step in the child ends that workflow as aborted, not failed; a
    builtin error raised by a step fails its workflow and reaches the parent as that builtin;
    the child keeps running through both."""
    _reset(expected=1)
    Doubler.crash_on, Doubler.abort_on, Doubler.fail_on = None, 1, 2
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    try:
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with Runtime(project_dir=tmp_path, config=config) as rt:
                await rt.start(Doubler)
                await Ledger.done.wait()
                store = rt.instances()["WorkflowStore"]
                assert isinstance(store, WorkflowStore)
                (counters,) = store.services.counters.values()
                stats = await counters.wait_until(lambda s: s.finished == 3)
                status = rt.status()["Doubler"]
    finally:
        Doubler.crash_on, Doubler.abort_on, Doubler.fail_on = 1, None, None
    assert (stats.succeeded, stats.aborted, stats.failed) == (1, 1, 1)
    assert sorted(r[0] for r in Ledger.runs if r[1] == "report") == [0]
    (failed,) = [e for e in logs if e["event"] == "workflow.failed"]
    assert failed["step"] == "report"
    assert isinstance(failed["exc_info"], ValueError)
    assert failed["reason"].endswith("ValueError: report 2 refused")
    assert not [e for e in logs if e["event"] == "workflow.failed" and "Abort" in e["reason"]]
    assert status.crashes == 0


class Gate(Resource):
    """Holds steps until the test opens it; says when a step is waiting at it."""

    opened: ClassVar[asyncio.Event]
    waiting: ClassVar[asyncio.Event]
    both: ClassVar[asyncio.Event]
    finished: ClassVar[list[int]] = []

    async def pass_through(self, number: int) -> None:
        Gate.waiting.set()
        await Gate.opened.wait()

    async def done(self, number: int) -> None:
        Gate.finished.append(number)
        if len(Gate.finished) >= 2:
            Gate.both.set()


class Pair(Pipeline[Job]):
    """Produces jobs 0 and 1 once, across runtimes (an outside source that does not replay)."""

    produced: ClassVar[int] = 0

    async def produce_event(self) -> Job:
        if Pair.produced >= 2:
            await asyncio.Event().wait()
        Pair.produced += 1
        return Job(Pair.produced - 1)


class OneAtATime(Minion[Job, JobContext]):
    """In-process; job 1 waits for room while job 0 holds the only place."""

    max_in_flight = 1
    jobs: Pair
    gate: Gate

    @minion_step
    async def hold(self) -> None:
        await self.gate.pass_through(self.event.number)

    @minion_step
    async def finish(self) -> None:
        await self.gate.done(self.event.number)


async def test_an_event_arriving_during_a_stop_is_kept_for_the_next_start(tmp_path: Path) -> None:
    """The event the pipeline was handing over when the minion stopped is saved, not dropped:
    the next start runs it (and resumes the interrupted one)."""
    Gate.opened, Gate.waiting, Gate.both = asyncio.Event(), asyncio.Event(), asyncio.Event()
    Gate.finished, Pair.produced = [], 0
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(OneAtATime)
            await Gate.waiting.wait()  # job 0 holds the place; job 1 waits for room
        assert Gate.finished == []
        Gate.opened.set()
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(OneAtATime)
            await Gate.both.wait()
    assert sorted(Gate.finished) == [0, 1]
    assert Pair.produced == 2


VERSIONED = """
import asyncio
import sys
from dataclasses import dataclass
from typing import ClassVar

from minions import Minion, Pipeline, Resource, minion_step


@dataclass(frozen=True)
class Tick:
    n: int


@dataclass
class TickContext:
    seen: str = ""


class Ticks(Pipeline[Tick]):
    def __init__(self) -> None:
        self._n = 0

    async def produce_event(self) -> Tick:
        await asyncio.sleep(0.01)  # the source's own pace
        self._n += 1
        return Tick(self._n)


class Versions(Resource):
    seen: ClassVar[list[str]] = []
    changed: ClassVar[asyncio.Event]

    async def saw(self, version: str) -> None:
        if version not in self.seen:
            self.seen.append(version)
            self.changed.set()


class Stamper(Minion[Tick, TickContext], isolated=True):
    ticks: Ticks
    versions: Versions

    @minion_step
    async def stamp(self) -> None:
        await self.versions.saw("VERSION")
"""


async def test_redeploy_runs_an_isolated_workflow_minions_new_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Runtime.redeploy` restarts an isolated workflow minion in a child that runs its module's
    code anew: its steps change behaviour while the parent (pipeline, store) keeps running."""
    import importlib

    source = tmp_path / "stamping.py"
    source.write_text(VERSIONED.replace("VERSION", "v1"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("stamping")
    module.Versions.seen, module.Versions.changed = [], asyncio.Event()
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    try:
        with anyio.fail_after(LIMIT):
            async with Runtime(project_dir=tmp_path, config=config) as rt:
                await rt.start(module.Stamper)
                await module.Versions.changed.wait()
                assert module.Versions.seen == ["v1"]
                module.Versions.changed.clear()
                source.write_text(VERSIONED.replace("VERSION", "v2"))
                await rt.redeploy("Stamper")
                await module.Versions.changed.wait()
                assert rt.status()["Ticks"].restarts == 0
    finally:
        sys.modules.pop("stamping", None)
    assert module.Versions.seen == ["v1", "v2"]


class Many(Pipeline[Job]):
    """Produces jobs 0..count-1, then nothing."""

    count: ClassVar[int] = 500

    def __init__(self) -> None:
        self._next = 0

    async def produce_event(self) -> Job:
        if self._next >= self.count:
            await asyncio.Event().wait()
        self._next += 1
        return Job(self._next - 1)


class Tally(Resource):
    """Parent-side record of every step run: (job, step, pid). Says when enough have run."""

    runs: ClassVar[list[tuple[int, str, int, int]]] = []
    wanted: ClassVar[int] = 0
    enough: ClassVar[asyncio.Event]
    held: ClassVar[asyncio.Event | None] = None  # when set, steps park here after reporting
    parked: ClassVar[set[int]] = set()
    parked_on_both: ClassVar[asyncio.Event]

    async def ran(self, number: int, step: str, pid: int, context: int) -> None:
        self.runs.append((number, step, pid, context))
        if len(self.runs) >= self.wanted:
            self.enough.set()
        if self.held is not None:
            self.parked.add(pid)
            if len(self.parked) >= 2:
                self.parked_on_both.set()
            await self.held.wait()


class Spread(
    Minion[Job, JobContext],
    isolated=Isolation(replicas=2, workflows_per_replica=16),
    backoff=Backoff(initial=0.5, jitter=0),
):
    """Three steps per job over two replicas; each step reports, then takes a moment, so that
    steps are in flight on both replicas when one is killed. The backoff is long: the dead
    replica's steps must not wait for its replacement."""

    jobs: Many
    tally: Tally

    @minion_step
    async def first(self) -> None:
        await self._step("first", 1)

    @minion_step
    async def second(self) -> None:
        await self._step("second", 10)

    @minion_step
    async def third(self) -> None:
        await self._step("third", 100)

    async def _step(self, name: str, weight: int) -> None:
        await self.tally.ran(self.event.number, name, os.getpid(), self.context.doubled)
        await asyncio.sleep(0.001)
        self.context.doubled += weight


async def test_workflows_spread_over_replicas_survive_one_replica_being_killed(
    tmp_path: Path,
) -> None:
    """500 workflows over 2 replicas, one replica SIGKILLed mid-run: every workflow succeeds
    with the context of all three steps, the steps the dead replica was running run again on
    the live one at once (only those: at most once more each, no completed step again), and
    the store is empty at the end."""
    Tally.runs, Tally.wanted, Tally.enough = [], 400, asyncio.Event()
    Tally.held, Tally.parked, Tally.parked_on_both = None, set(), asyncio.Event()
    path = tmp_path / "state.sqlite3"
    config: dict[str, Any] = {"WorkflowStore": {"path": str(path)}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(Spread)
            await Tally.enough.wait()
            Tally.held = asyncio.Event()  # steps that report from now on wait, mid-step
            await Tally.parked_on_both.wait()
            victim, survivor = rt.status()["Spread"].replicas
            assert victim.pid is not None and victim.calls_in_flight > 0
            os.kill(victim.pid, signal.SIGKILL)
            Tally.held.set()  # the victim runs no more code: its parked steps never return
            store = rt.instances()["WorkflowStore"]
            assert isinstance(store, WorkflowStore)
            (counters,) = store.services.counters.values()
            stats = await counters.wait_until(lambda s: s.finished == 500)
            status = rt.status()["Spread"]
    assert (stats.succeeded, stats.failed, stats.interrupted) == (500, 0, 0)
    assert status.state is ComponentState.RUNNING and status.restarts == 0
    assert status.replicas[0].crashes == 1
    runs: dict[tuple[int, str], list[int]] = {}
    for number, step, pid, context in Tally.runs:
        runs.setdefault((number, step), []).append(pid)
        # Each step saw the context its predecessors left (checkpointed in the parent).
        assert context == {"first": 0, "second": 1, "third": 11}[step], (number, step)
    assert len(runs) == 1500, "every step of every job ran"
    again = {key: pids for key, pids in runs.items() if len(pids) > 1}
    assert again, "some steps were running on the killed replica"
    assert len(again) <= 16, "only the steps in flight on the killed replica ran again"
    for pids in again.values():
        # Again at once on the live replica, not after the dead one's backoff.
        assert pids == [victim.pid, survivor.pid]
    per_job = [number for number, _ in again]
    assert len(per_job) == len(set(per_job)), "one step per interrupted job ran again"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM contexts").fetchone() == (0,)


class Few(Pipeline[Job]):
    """Produces jobs 0..39, then nothing."""

    def __init__(self) -> None:
        self._next = 0

    async def produce_event(self) -> Job:
        if self._next >= 40:
            await asyncio.Event().wait()
        self._next += 1
        return Job(self._next - 1)


class Drained(Minion[Job, JobContext], isolated=Isolation(replicas=2, stop_timeout=10)):
    jobs: Few
    tally: Tally

    @minion_step
    async def only(self) -> None:
        await self.tally.ran(self.event.number, "only", os.getpid(), self.context.doubled)


async def test_scaling_a_workflow_minion_down_lets_its_steps_in_flight_finish(
    tmp_path: Path,
) -> None:
    """Scaling from 2 replicas to 1 while steps run on both: the removed replica takes no new
    step, finishes the ones it runs, then stops; every workflow succeeds, no step runs twice."""
    Tally.runs, Tally.wanted, Tally.enough = [], 10**9, asyncio.Event()
    Tally.held, Tally.parked, Tally.parked_on_both = asyncio.Event(), set(), asyncio.Event()
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(Drained)
            await Tally.parked_on_both.wait()
            removed = rt.status()["Drained"].replicas[1]
            assert removed.calls_in_flight > 0
            scaling = asyncio.ensure_future(rt.scale("Drained", 1))
            await asyncio.sleep(0)  # one turn: the scale marks the replica draining at once
            assert rt.status()["Drained"].replicas[1].state is ComponentState.STOPPING
            Tally.held.set()
            await scaling
            store = rt.instances()["WorkflowStore"]
            assert isinstance(store, WorkflowStore)
            (counters,) = store.services.counters.values()
            stats = await counters.wait_until(lambda s: s.finished == 40)
            status = rt.status()["Drained"]
    assert (stats.succeeded, stats.failed, stats.interrupted) == (40, 0, 0)
    assert [r.index for r in status.replicas] == [0]
    numbers = [number for number, *_ in Tally.runs]
    assert sorted(numbers) == list(range(40)), "each step ran once"
    assert removed.pid in {pid for _, _, pid, _ in Tally.runs}
    assert not psutil.pid_exists(removed.pid) or (
        psutil.Process(removed.pid).status() == psutil.STATUS_ZOMBIE
    )


class CrashOnce(
    Minion[Job, JobContext],
    isolated=Isolation(replicas=2),
    backoff=Backoff(initial=5, jitter=0),
):
    """Job 1's first step kills its replica once; the step runs again on the other one."""

    jobs: Jobs
    ledger: Ledger

    @minion_step
    async def start(self) -> None:
        if self.event.number == 1 and await self.ledger.first_crash(1):
            os._exit(7)

    @minion_step
    async def report(self) -> None:
        await self.ledger.ran(self.event.number, "report", os.getpid(), 0)


async def test_a_replicas_death_in_a_step_is_the_workflows_last_error(tmp_path: Path) -> None:
    """A replicated minion's step that loses its replica runs again on another one within the
    same attempt; the death is the workflow's last error on the board and in the checkpoint of
    its next step."""
    _reset(expected=3)
    Ledger.hold = 1
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(CrashOnce)
            await Ledger.held.wait()
            store = rt.instances()["WorkflowStore"]
            assert isinstance(store, WorkflowStore)
            (entry,) = [e for e in store.services.board.entries() if e.step_index == 1]
            rows = await store.state_store.get_all_contexts()
            (row,) = [r for r in rows if r.workflow_id == entry.workflow_id]
            Ledger.released.set()
            await Ledger.done.wait()
    assert (entry.state, entry.attempts) == ("running", 1)
    assert entry.last_error is not None and entry.last_error.startswith("ComponentCrashed: ")
    header = read_header(row.context)
    assert (header.next_step, header.attempts, header.last_error) == ("report", 1, entry.last_error)

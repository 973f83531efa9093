"""Gru, the orchestration API: results instead of exceptions, deterministic orchestration ids,
resume on restart, 'drain first', shared pipelines, graceful stop, shutdown.

Each test creates its Gru with a real store (in memory, or an SQLite file in ``tmp_path``) and
shuts it down in a fixture, so the one-Gru-per-process rule holds between tests.
"""

import asyncio
import logging
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

from minions import (
    ComponentState,
    Gru,
    Minion,
    Pipeline,
    Resource,
    RuntimeStateError,
    minion_id,
    minion_step,
)
from minions.core.identity import identity_of
from minions.exceptions import StateStoreError
from minions.implementations import (
    InMemoryStateStore,
    PrometheusMetrics,
    SQLiteStateStore,
)
from minions.interfaces import StoredContext
from minions.types import ShutdownResult, StartResult, StopResult, WorkflowStatistics
from minions.workflows.checkpoint import Checkpoint, checkpoint_codec, read_header
from minions.workflows.runner import orchestration_id

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_store_threads")]

LIMIT = 10.0


class Board:
    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.log: list[tuple[str, int]] = []
        self.gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.reached: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release_all = asyncio.Event()
        self.startups: list[str] = []

    async def arrive(self, name: str) -> None:
        self.reached[name].set()
        if not self.release_all.is_set():
            gate = asyncio.ensure_future(self.gates[name].wait())
            both = asyncio.ensure_future(self.release_all.wait())
            try:
                await asyncio.wait({gate, both}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gate.cancel()
                both.cancel()


board = Board()


@pytest.fixture(autouse=True)
def fresh_board() -> Iterator[None]:
    global board
    board = Board()
    yield


class ListLogger:
    """A Logger (the public protocol) that keeps what it is told."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.records.append((level, event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.records if event == name]


@pytest.fixture
async def logger() -> ListLogger:
    return ListLogger()


@pytest.fixture
async def gru(tmp_path: Path, logger: ListLogger) -> AsyncIterator[Gru]:
    created = await Gru.create(
        state_store=InMemoryStateStore(), logger=logger, metrics=None, project_dir=tmp_path
    )
    try:
        yield created
    finally:
        await created.shutdown()


# -- components ------------------------------------------------------------------------------


@dataclass
class Tick:
    n: int


@dataclass
class Ctx:
    steps: list[str] = field(default_factory=list)


@dataclass
class OtherEvent:
    text: str = ""


class Ticks(Pipeline[Tick]):
    async def startup(self) -> None:
        board.startups.append("Ticks")

    async def produce_event(self) -> Tick:
        tick: Tick = await board.events.get()
        return tick


class Words(Pipeline[OtherEvent]):
    async def produce_event(self) -> OtherEvent:
        return OtherEvent((await board.events.get()).n)


class Silent(Pipeline[Tick]):
    """Forgot produce_event."""


class BrokenPipeline(Pipeline[Tick]):
    async def startup(self) -> None:
        raise ConnectionError("the chain node refused the connection")

    async def produce_event(self) -> Tick:
        return Tick(0)


class Hold(Minion[Tick, Ctx]):
    """Two steps; the first waits at gate 'a:<n>', the second at 'b:<n>'."""

    stop_grace = 0.0

    @minion_step
    async def a(self) -> None:
        board.log.append(("a", self.event.n))
        self.context.steps.append("a")
        await board.arrive(f"a:{self.event.n}")

    @minion_step
    async def b(self) -> None:
        board.log.append(("b", self.event.n))
        await board.arrive(f"b:{self.event.n}")


class Quick(Minion[Tick, Ctx]):
    @minion_step
    async def one(self) -> None:
        board.log.append(("quick", self.event.n))


class Also(Minion[Tick, Ctx]):
    @minion_step
    async def one(self) -> None:
        board.log.append(("also", self.event.n))


class Plain(Minion):
    async def run(self) -> None:
        return None


@dataclass
class Settings:
    factor: int = 1
    label: str = "default"


class Configured(Minion[Tick, Ctx]):
    config: Settings

    @minion_step
    async def one(self) -> None:
        board.log.append((self.config.label, self.event.n * self.config.factor))


class StrictSettings(pydantic.BaseModel):
    factor: int


class NeedsConfig(Minion[Tick, Ctx]):
    config: StrictSettings

    @minion_step
    async def one(self) -> None:
        return None


class ClosedSettings(pydantic.BaseModel):
    """Refuses fields it does not declare."""

    model_config = pydantic.ConfigDict(extra="forbid")
    factor: int
    label: str


class Strict(Minion[Tick, Ctx]):
    config: ClosedSettings

    @minion_step
    async def one(self) -> None:
        return None


class CustomLoader(Minion[Tick, Ctx]):
    config: Settings

    async def load_config(self, path: str) -> Settings:
        return Settings(factor=3, label=Path(path).stem)

    @minion_step
    async def one(self) -> None:
        board.log.append((self.config.label, self.event.n * self.config.factor))


@dataclass
class CtxV1:
    count: int = 0


@dataclass
class CtxV2:
    count: int = 0
    note: str = ""


@minion_id("versioned-minion")
class VersionOne(Minion[Tick, CtxV1]):
    @minion_step
    async def one(self) -> None:
        board.log.append(("v1", self.event.n))


@minion_id("versioned-minion")
class VersionTwo(Minion[Tick, CtxV2]):
    @minion_step
    async def one(self) -> None:
        board.log.append(("v2", self.event.n))


class Idle(Minion[Tick, Ctx]):
    """No policy of its own: Gru's default applies."""

    @minion_step
    async def one(self) -> None:
        board.log.append(("idle", self.event.n))


async def ticks(*numbers: int) -> None:
    for n in numbers:
        await board.events.put(Tick(n))


async def wait_for(gru: Gru, oid: str, check: Any) -> WorkflowStatistics:
    with anyio.fail_after(LIMIT):
        return await gru.wait_for_workflows(oid, check)


async def reached(*names: str) -> None:
    with anyio.fail_after(LIMIT):
        for name in names:
            await board.reached[name].wait()


# -- creating ----------------------------------------------------------------------------------


async def test_gru_is_created_with_create_and_one_per_process(tmp_path: Path) -> None:
    """Gru() raises; a second create while one lives raises; after shutdown a new one can be
    created."""
    with pytest.raises(RuntimeStateError, match=r"await Gru\.create"):
        Gru()  # type: ignore[call-arg]
    first = await Gru.create(state_store=None, logger=None, metrics=None, project_dir=tmp_path)
    try:
        with pytest.raises(RuntimeStateError, match="already running"):
            await Gru.create(state_store=None, logger=None, metrics=None)
    finally:
        assert (await first.shutdown()).success
    second = await Gru.create(state_store=None, logger=None, metrics=None, project_dir=tmp_path)
    assert (await second.shutdown()).success


async def test_bad_create_arguments_are_clear_errors(tmp_path: Path) -> None:
    """A logger, metrics or store that does not implement its interface is a TypeError naming
    the interface; an unknown persistence policy a ValueError. No Gru is left behind."""
    with pytest.raises(TypeError, match=r"minions\.interfaces\.StateStore"):
        await Gru.create(state_store=object(), logger=None, metrics=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"minions\.interfaces\.Logger"):
        await Gru.create(logger=print, metrics=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="persistence_policy"):
        await Gru.create(persistence_policy="maybe")  # type: ignore[arg-type]
    gru = await Gru.create(state_store=None, logger=None, metrics=None, project_dir=tmp_path)
    await gru.shutdown()


class DictStore:
    """A state store written from the protocol alone: four methods, no base class, no hooks."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, bytes]] = {}

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        self.rows[workflow_id] = (orchestration_id, context)

    async def delete_context(self, workflow_id: str) -> None:
        self.rows.pop(workflow_id, None)

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        return [StoredContext(w, o, c) for w, (o, c) in self.rows.items() if o == orchestration_id]

    async def get_all_contexts(self) -> list[StoredContext]:
        return [StoredContext(w, o, c) for w, (o, c) in self.rows.items()]


async def test_a_duck_typed_store_works_without_hooks(tmp_path: Path) -> None:
    """A store need not subclass StateStore nor have startup/shutdown hooks."""
    store = DictStore()
    gru = await Gru.create(state_store=store, logger=None, metrics=None, project_dir=tmp_path)  # type: ignore[arg-type]
    try:
        result = await gru.start_orchestration(Ticks, Hold)
        await ticks(1)
        await reached("a:1")
        assert len(store.rows) == 1
        board.release_all.set()
        await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded == 1)
        assert store.rows == {}
    finally:
        assert (await gru.shutdown()).success


async def test_default_store_is_sqlite_in_the_project_folder(tmp_path: Path) -> None:
    """Without a state_store argument, checkpoints go to <project>/.minions/state.sqlite3."""
    gru = await Gru.create(logger=None, metrics=None, project_dir=tmp_path)
    try:
        assert isinstance(gru.state_store, SQLiteStateStore)
        assert gru.state_store.path == tmp_path / ".minions" / "state.sqlite3"
        result = await gru.start_orchestration(Ticks, Hold)
        await ticks(1)
        await reached("a:1")
    finally:
        await gru.shutdown()
    async with SQLiteStateStore(tmp_path / ".minions" / "state.sqlite3") as store:
        (row,) = await store.get_all_contexts()
    assert row.orchestration_id == result.orchestration_id


# -- starting and stopping ---------------------------------------------------------------------


async def test_start_stop_and_restart_an_orchestration(gru: Gru) -> None:
    """A start returns the orchestration id; starting it again while it runs is refused; after
    a stop it can start again under the same id; 'start' is an alias."""
    first = await gru.start_orchestration(Ticks, Quick)
    assert first == StartResult(True, orchestration_id=first.orchestration_id)
    assert first.orchestration_id == orchestration_id(identity_of(Quick), identity_of(Ticks))
    again = await gru.start(Ticks, Quick)
    assert not again.success and again.orchestration_id == first.orchestration_id
    assert "already running" in (again.reason or "")
    await ticks(1)
    await wait_for(gru, first.orchestration_id or "", lambda s: s.succeeded == 1)
    assert await gru.stop_orchestration(first.orchestration_id or "") == StopResult(True)
    stopped = await gru.stop_orchestration(first.orchestration_id or "")
    assert not stopped.success and "no orchestration" in (stopped.reason or "")
    restarted = await gru.start_orchestration(Ticks, Quick)
    assert restarted.success and restarted.orchestration_id == first.orchestration_id
    await ticks(2)
    stats = await wait_for(gru, first.orchestration_id or "", lambda s: s.succeeded == 2)
    assert stats.started == 2
    assert board.log == [("quick", 1), ("quick", 2)]


@pytest.mark.parametrize(
    ("pipeline", "minion", "reason"),
    [
        (Words, Quick, "event-type mismatch"),
        (Silent, Quick, "does not implement produce_event()"),
        (Ticks, Plain, "is not a workflow minion"),
        (Quick, Quick, "must be a subclass of minions.Pipeline"),
        ("tests.workflows.no_such_module", Quick, "cannot import the pipeline module"),
        ("tests.workflows.test_gru", Quick, "must define one Pipeline class"),
        ("tests.workflows.test_gru:Nothing", Quick, "has no attribute 'Nothing'"),
    ],
)
async def test_refused_starts_are_results_with_a_reason(
    gru: Gru, pipeline: Any, minion: Any, reason: str
) -> None:
    """A start that cannot work returns success=False with a reason and a suggestion."""
    result = await gru.start_orchestration(pipeline, minion)
    assert not result.success
    assert reason in (result.reason or "")
    assert result.suggestion and result.cause is not None
    assert (await gru.runtime_state_snapshot()).orchestrations == frozenset()


async def test_a_failed_start_undoes_only_what_it_started(gru: Gru) -> None:
    """A pipeline whose startup() raises fails the start with the cause in the reason; the
    orchestration that was running keeps running, and nothing of the failed one is left."""
    running = await gru.start_orchestration(Ticks, Quick)
    failed = await gru.start_orchestration(BrokenPipeline, Also)
    assert not failed.success
    assert "the chain node refused the connection" in (failed.reason or "")
    snapshot = await gru.runtime_state_snapshot()
    assert snapshot.orchestrations == {running.orchestration_id}
    assert "BrokenPipeline" not in snapshot.components
    assert "Also[BrokenPipeline]" not in snapshot.components
    assert snapshot.components["Ticks"].state is ComponentState.RUNNING
    await ticks(1)
    await wait_for(gru, running.orchestration_id or "", lambda s: s.succeeded == 1)


async def test_module_paths_name_the_pipeline_and_minion(gru: Gru) -> None:
    """A module path finds the module's 'pipeline'/'minion' variables, or 'module:Class'; the
    id is the same as when passing the classes."""
    from tests.workflows import _modpath

    result = await gru.start_orchestration("tests.workflows._modpath", "tests.workflows._modpath")
    assert result.success
    assert result.orchestration_id == orchestration_id(
        identity_of(_modpath.PingMinion), identity_of(_modpath.PingPipeline)
    )
    await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded >= 3)
    other = await gru.start_orchestration(
        "tests.workflows._modpath:PingPipeline", "tests.workflows._modpath:SpareMinion"
    )
    assert other.success and other.orchestration_id != result.orchestration_id


async def test_one_pipeline_serves_several_orchestrations_and_starts_once(gru: Gru) -> None:
    """Two orchestrations on one pipeline share its one instance; stopping one leaves the other
    and the pipeline running."""
    quick = await gru.start_orchestration(Ticks, Quick)
    also = await gru.start_orchestration(Ticks, Also)
    assert board.startups == ["Ticks"]
    await ticks(1)
    await wait_for(gru, quick.orchestration_id or "", lambda s: s.succeeded == 1)
    await wait_for(gru, also.orchestration_id or "", lambda s: s.succeeded == 1)
    assert (await gru.stop_orchestration(quick.orchestration_id or "")).success
    await ticks(2)
    await wait_for(gru, also.orchestration_id or "", lambda s: s.succeeded == 2)
    assert sorted(board.log) == [("also", 1), ("also", 2), ("quick", 1)]
    snapshot = await gru.runtime_state_snapshot()
    assert snapshot.orchestrations == {also.orchestration_id}
    assert snapshot.pipeline_by_orchestration == {also.orchestration_id: "Ticks"}
    assert snapshot.components["Ticks"].state is ComponentState.RUNNING


async def test_same_id_calls_are_serialised_and_different_ids_overlap(gru: Gru) -> None:
    """Concurrent starts of one pairing: exactly one succeeds. Starts of different pairings
    started together all succeed."""
    results = await asyncio.gather(*(gru.start_orchestration(Ticks, Quick) for _ in range(5)))
    assert sum(r.success for r in results) == 1
    others = await asyncio.gather(
        gru.start_orchestration(Ticks, Also), gru.start_orchestration(Ticks, Hold)
    )
    assert all(r.success for r in others)
    assert len((await gru.runtime_state_snapshot()).orchestrations) == 3


# -- config ----------------------------------------------------------------------------------


async def test_config_objects_and_files_reach_the_minion_and_its_id(
    gru: Gru, tmp_path: Path
) -> None:
    """minion_config and minion_config_path (TOML, relative to the project) set self.config;
    different configs are different orchestrations."""
    (tmp_path / "double.toml").write_text('factor = 2\nlabel = "file"\n')
    inline = await gru.start_orchestration(Ticks, Configured, Settings(factor=10, label="obj"))
    from_file = await gru.start_orchestration(Ticks, Configured, minion_config_path="double.toml")
    assert inline.success and from_file.success
    assert inline.orchestration_id != from_file.orchestration_id
    await ticks(4)
    await wait_for(gru, inline.orchestration_id or "", lambda s: s.succeeded == 1)
    await wait_for(gru, from_file.orchestration_id or "", lambda s: s.succeeded == 1)
    assert sorted(board.log) == [("file", 8), ("obj", 40)]
    same = await gru.start_orchestration(Ticks, Configured, Settings(factor=10, label="obj"))
    assert not same.success and same.orchestration_id == inline.orchestration_id


async def test_a_restart_reads_the_config_file_again(gru: Gru, tmp_path: Path) -> None:
    """The file is the config's identity: after an edit, restarting the orchestration keeps
    its id (and its saved workflows) and runs with the new values."""
    config = tmp_path / "settings.toml"
    config.write_text('factor = 2\nlabel = "before"\n')
    first = await gru.start_orchestration(Ticks, Configured, minion_config_path=config)
    await ticks(1)
    await wait_for(gru, first.orchestration_id or "", lambda s: s.succeeded == 1)
    assert (await gru.stop_orchestration(first.orchestration_id or "")).success
    config.write_text('factor = 3\nlabel = "after"\n')
    again = await gru.start_orchestration(Ticks, Configured, minion_config_path="settings.toml")
    assert again.orchestration_id == first.orchestration_id
    await ticks(1)
    await wait_for(gru, first.orchestration_id or "", lambda s: s.succeeded == 2)
    assert board.log == [("before", 2), ("after", 3)]


async def test_a_config_files_own_id_is_its_identity(gru: Gru, tmp_path: Path) -> None:
    """A config file carrying _minions_config_id (``minions stamp config-ids``) is known by it:
    moved or renamed, it is the same orchestration. The key is not a config value, so a config
    type that forbids extra fields still takes the file."""
    stamped = '# Generated\n_minions_config_id = "5c9e0f5e-8f0a-4c1e-9a51-2f3b7d6c1a11"\n'
    (tmp_path / "a.toml").write_text(stamped + 'factor = 2\nlabel = "a"\n')
    (tmp_path / "plain.toml").write_text('factor = 2\nlabel = "a"\n')
    first = await gru.start_orchestration(Ticks, Strict, minion_config_path="a.toml")
    assert first.success, first.reason
    plain = await gru.start_orchestration(Ticks, Strict, minion_config_path="plain.toml")
    assert plain.success and plain.orchestration_id != first.orchestration_id
    assert (await gru.stop_orchestration(first.orchestration_id or "")).success
    (tmp_path / "a.toml").rename(tmp_path / "moved.toml")
    again = await gru.start_orchestration(Ticks, Strict, minion_config_path="moved.toml")
    assert again.success and again.orchestration_id == first.orchestration_id
    (tmp_path / "bad.toml").write_text('_minions_config_id = 7\nfactor = 2\nlabel = "a"\n')
    bad = await gru.start_orchestration(Ticks, Strict, minion_config_path="bad.toml")
    assert not bad.success and "_minions_config_id" in bad.reason


async def test_a_minions_own_load_config_reads_the_file(gru: Gru, tmp_path: Path) -> None:
    """A minion that defines 'async def load_config(self, path)' loads its config itself."""
    (tmp_path / "custom.cfg").write_text("anything")
    result = await gru.start_orchestration(Ticks, CustomLoader, minion_config_path="custom.cfg")
    assert result.success
    await ticks(5)
    await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded == 1)
    assert board.log == [("custom", 15)]


async def test_config_problems_are_refused_with_the_field(gru: Gru, tmp_path: Path) -> None:
    """Invalid values, missing files, unknown formats and configs for minions without one are
    refused with a reason naming the problem."""
    (tmp_path / "bad.toml").write_text('factor = "lots"\n')
    (tmp_path / "bad.yaml").write_text("factor: 2\n")
    cases = [
        (NeedsConfig, {}, "factor: Field required"),
        (NeedsConfig, {"minion_config_path": "bad.toml"}, "factor: Input should be a valid"),
        (NeedsConfig, {"minion_config_path": "missing.toml"}, "cannot read the config file"),
        (NeedsConfig, {"minion_config_path": "bad.yaml"}, "use .toml or .json"),
        (Quick, {"minion_config": Settings()}, "declares no config"),
    ]
    for minion, kwargs, reason in cases:
        result = await gru.start_orchestration(Ticks, minion, **kwargs)
        assert not result.success, minion
        assert reason in (result.reason or ""), result.reason


# -- resume, drain, corrupt ----------------------------------------------------------------------


async def test_restarting_an_orchestration_resumes_its_workflows_first(gru: Gru) -> None:
    """Workflows interrupted by stop_orchestration resume at their step when the orchestration
    starts again, before new events."""
    first = await gru.start_orchestration(Ticks, Hold)
    oid = first.orchestration_id or ""
    await ticks(1, 2)
    board.gates["a:2"].set()
    await reached("a:1", "b:2")
    assert (await gru.stop_orchestration(oid)).success
    stats = gru.workflow_statistics(oid)
    assert (stats.interrupted, stats.in_flight) == (2, 0)
    board.log.clear()
    board.release_all.set()
    await ticks(3)
    assert (await gru.start_orchestration(Ticks, Hold)).success
    stats = await wait_for(gru, oid, lambda s: s.succeeded == 3)
    assert stats.resumed == 2
    first_new = board.log.index(("a", 3))
    assert board.log.index(("a", 1)) < first_new and board.log.index(("b", 2)) < first_new
    assert sorted(board.log) == [("a", 1), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    assert await gru.state_store.get_all_contexts() == []


async def test_changed_context_types_fail_the_start_saying_drain_first(gru: Gru) -> None:
    """Saved workflows of another context shape refuse the start with 'drain first'; the old
    version still resumes them."""
    oid = orchestration_id("versioned-minion", identity_of(Ticks))
    blob = checkpoint_codec(Tick, CtxV1).encode(
        Checkpoint(oid, "wf-1", "versioned-minion", Tick(9), CtxV1(count=1), 0)
    )
    await gru.state_store.save_context("wf-1", oid, blob)
    refused = await gru.start_orchestration(Ticks, VersionTwo)
    assert not refused.success and refused.orchestration_id == oid
    assert "drain first" in (refused.suggestion or "")
    assert "context type" in (refused.reason or "")
    resumed = await gru.start_orchestration(Ticks, VersionOne)
    assert resumed.success
    await wait_for(gru, oid, lambda s: s.succeeded == 1)
    assert board.log == [("v1", 9)]


async def test_a_corrupt_checkpoint_is_logged_and_skipped(gru: Gru, logger: ListLogger) -> None:
    """An undecodable checkpoint does not stop the start: it is logged, counted and skipped."""
    oid = orchestration_id(identity_of(Quick), identity_of(Ticks))
    good = checkpoint_codec(Tick, Ctx).encode(Checkpoint(oid, "good", "x", Tick(1), Ctx(), 0))
    await gru.state_store.save_context("bad", oid, good[:-7])
    await gru.state_store.save_context("good", oid, good)
    result = await gru.start_orchestration(Ticks, Quick)
    assert result.success
    stats = await wait_for(gru, oid, lambda s: s.succeeded == 1)
    assert stats.corrupt_skipped == 1
    (record,) = logger.events("workflow.checkpoint_corrupt")
    assert record["workflow"] == "bad" and "not readable" in record["reason"]
    assert board.log == [("quick", 1)]


async def test_graceful_stop_keeps_one_checkpoint_per_workflow_and_all_resume(
    tmp_path: Path,
) -> None:
    """Hundreds of workflows in flight when the orchestration stops: each keeps exactly one
    checkpoint in the SQLite file, and on the next start all resume and succeed."""
    count = 300
    path = tmp_path / "state.sqlite3"
    gru = await Gru.create(
        state_store=SQLiteStateStore(path), logger=None, metrics=None, project_dir=tmp_path
    )
    try:
        result = await gru.start_orchestration(Ticks, Hold)
        oid = result.orchestration_id or ""
        await ticks(*range(count))
        await wait_for(gru, oid, lambda s: s.in_flight == count and s.checkpoints_saved == count)
        assert (await gru.stop_orchestration(oid)).success
        rows = await gru.state_store.get_contexts_for_orchestration(oid)
        assert len(rows) == len({row.workflow_id for row in rows}) == count
        assert {read_header(row.context).next_step_index for row in rows} == {0}
        assert gru.workflow_statistics(oid).interrupted == count
        board.release_all.set()
        assert (await gru.start_orchestration(Ticks, Hold)).success
        stats = await wait_for(gru, oid, lambda s: s.succeeded == count)
        assert stats.resumed == count and stats.failed == 0
        assert await gru.state_store.get_all_contexts() == []
    finally:
        await gru.shutdown()


class OneAtATime(Minion[Tick, Ctx]):
    max_in_flight = 1

    @minion_step
    async def first(self) -> None:
        self.context.steps.append("first")

    @minion_step
    async def second(self) -> None:
        self.context.steps.append("second")


async def test_a_finished_workflows_delete_shares_the_next_workflows_first_commit(
    tmp_path: Path,
) -> None:
    """One workflow in flight on SQLite: each workflow commits its two checkpoints, and its
    delete rides in the next workflow's first commit instead of a commit of its own; shutdown
    commits the last one."""
    count = 20
    path = tmp_path / "state.sqlite3"
    store = SQLiteStateStore(path)
    gru = await Gru.create(state_store=store, logger=None, metrics=None, project_dir=tmp_path)
    try:
        before = store.statistics()
        result = await gru.start_orchestration(Ticks, OneAtATime)
        oid = result.orchestration_id or ""
        await ticks(*range(count))
        stats = await wait_for(gru, oid, lambda s: s.succeeded == count)
        assert stats.checkpoints_saved == 2 * count and stats.in_flight == 0
    finally:
        await gru.shutdown()
    after = store.statistics()
    assert after.rows - before.rows == 3 * count  # two saves and a delete per workflow
    # Alone, each delete would be a commit: 3 per workflow. One is flushed alone when the next
    # event comes more than 2 ms later (the linger), as the last one does; most share.
    assert after.commits - before.commits < 2.5 * count
    assert after.loop_commits > 0
    reopened = SQLiteStateStore(path)
    try:
        assert await reopened.get_all_contexts() == []
    finally:
        await reopened.aclose()


# -- policies, metrics, snapshot, shutdown ------------------------------------------------------


async def test_grus_persistence_policy_is_the_default_for_minions(tmp_path: Path) -> None:
    """Gru.create(persistence_policy=...) applies to minions that set none: with
    idle-until-persisted, a workflow waits out a store outage before its step."""
    from minions.testing import FakeClock

    store = InMemoryStateStore()
    clock = FakeClock()
    gru = await Gru.create(
        state_store=store,
        logger=None,
        metrics=None,
        project_dir=tmp_path,
        persistence_policy="idle-until-persisted",
        clock=clock,
    )
    try:
        result = await gru.start_orchestration(Ticks, Idle)
        store.fail_next("save", times=2)
        await ticks(1)
        for _ in range(2):
            with anyio.fail_after(LIMIT):
                await clock.advance_to_next()
        stats = await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded == 1)
        assert stats.checkpoint_failures == 2 and board.log == [("idle", 1)]
    finally:
        await gru.shutdown()


async def test_prometheus_metrics_count_outcomes(tmp_path: Path) -> None:
    """Workflow outcomes are counted in the Metrics given to Gru, labelled by orchestration."""
    metrics = PrometheusMetrics()
    gru = await Gru.create(
        state_store=InMemoryStateStore(), logger=None, metrics=metrics, project_dir=tmp_path
    )
    try:
        result = await gru.start_orchestration(Ticks, Quick)
        await ticks(1, 2)
        await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded == 2)
    finally:
        await gru.shutdown()
    labels = {"orchestration": result.orchestration_id or ""}
    assert metrics.value("minions_workflows_succeeded_total", labels) == 2
    assert metrics.value("minions_workflows_started_total", labels) == 2


async def test_snapshot_describes_orchestrations_and_components(gru: Gru) -> None:
    """The snapshot is frozen data: orchestration ids, who they pair, states and counters."""
    result = await gru.start_orchestration(Ticks, Quick)
    await ticks(1)
    oid = result.orchestration_id or ""
    await wait_for(gru, oid, lambda s: s.succeeded == 1)
    snapshot = await gru.runtime_state_snapshot()
    status = snapshot.orchestration_status[oid]
    assert status.minion == identity_of(Quick) and status.pipeline == identity_of(Ticks)
    assert status.component == "Quick[Ticks]" and status.state is ComponentState.RUNNING
    assert status.workflows.succeeded == 1
    assert snapshot.minion_instances == {"Quick[Ticks]"}
    assert set(snapshot.components) == {"WorkflowStore", "Ticks", "Quick[Ticks]"}
    assert not snapshot.is_empty
    with pytest.raises(TypeError):
        snapshot.orchestration_status[oid] = status  # type: ignore[index]


async def test_shutdown_is_final_idempotent_and_shared(tmp_path: Path) -> None:
    """Concurrent shutdowns share one result; later calls return success; starts and stops
    after it are refused; the snapshot is empty."""
    gru = await Gru.create(
        state_store=InMemoryStateStore(), logger=None, metrics=None, project_dir=tmp_path
    )
    result = await gru.start_orchestration(Ticks, Hold)
    await ticks(1)
    await reached("a:1")
    first, second = await asyncio.gather(gru.shutdown(), gru.shutdown())
    assert first == second == ShutdownResult(True)
    assert (await gru.shutdown()).success
    late = await gru.start_orchestration(Ticks, Quick)
    assert not late.success and "shut down" in (late.reason or "")
    stop = await gru.stop_orchestration(result.orchestration_id or "")
    assert not stop.success
    assert (await gru.runtime_state_snapshot()).is_empty
    assert gru.workflow_statistics(result.orchestration_id or "").interrupted == 1
    store = gru.state_store
    assert isinstance(store, InMemoryStateStore)
    (kept,) = store.contexts.values()  # the interrupted workflow keeps its checkpoint
    assert read_header(kept.context).next_step_index == 0


async def test_a_store_that_cannot_open_fails_create_and_leaves_no_gru(tmp_path: Path) -> None:
    """Gru.create raises the store's error when the store cannot start; no Gru is left."""
    (tmp_path / "not-a-dir").write_text("")
    broken = SQLiteStateStore(tmp_path / "not-a-dir" / "state.sqlite3")
    with pytest.raises(StateStoreError, match="cannot be created or written"):
        await Gru.create(state_store=broken, logger=None, metrics=None, project_dir=tmp_path)
    gru = await Gru.create(state_store=None, logger=None, metrics=None, project_dir=tmp_path)
    await gru.shutdown()


async def test_a_copied_project_folder_resumes_its_workflows(tmp_path: Path) -> None:
    """Orchestration ids come from identities, not places or processes: a project folder copied
    elsewhere, with its .minions state, resumes the workflows saved in it."""
    first_dir, copy_dir = tmp_path / "here", tmp_path / "there"
    first_dir.mkdir()
    gru = await Gru.create(logger=None, metrics=None, project_dir=first_dir)
    try:
        started = await gru.start_orchestration(Ticks, Hold)
        await ticks(1)
        await reached("a:1")
    finally:
        await gru.shutdown()
    shutil.copytree(first_dir, copy_dir)
    shutil.rmtree(first_dir)
    board.release_all.set()
    gru = await Gru.create(logger=None, metrics=None, project_dir=copy_dir)
    try:
        again = await gru.start_orchestration(Ticks, Hold)
        assert again.orchestration_id == started.orchestration_id
        stats = await wait_for(gru, again.orchestration_id or "", lambda s: s.succeeded == 1)
        assert stats.resumed == 1
    finally:
        await gru.shutdown()
    assert board.log == [("a", 1), ("a", 1), ("b", 1)]


class Counting(Resource):
    """A resource shared by the services layer and a workflow minion."""

    instances: list["Counting"] = []

    def __init__(self) -> None:
        Counting.instances.append(self)
        self.calls = 0

    async def bump(self) -> int:
        self.calls += 1
        return self.calls


class UsesCounting(Minion[Tick, Ctx]):
    counting: Counting

    @minion_step
    async def one(self) -> None:
        await self.counting.bump()


class ServiceUsesCounting(Minion):
    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    async def run(self) -> None:
        await self.counting.bump()
        await asyncio.Event().wait()


async def test_services_and_workflows_share_one_runtime_and_its_resources(gru: Gru) -> None:
    """A service started on Gru's runtime and a workflow minion get the same resource
    instance."""
    Counting.instances.clear()
    await gru.runtime.start(ServiceUsesCounting)
    result = await gru.start_orchestration(Ticks, UsesCounting)
    await ticks(1)
    await wait_for(gru, result.orchestration_id or "", lambda s: s.succeeded == 1)
    assert len(Counting.instances) == 1 and Counting.instances[0].calls == 2


def test_log_levels_are_standard() -> None:
    """The Logger protocol takes standard logging levels."""
    assert ListLogger().log(logging.INFO, "x") is None

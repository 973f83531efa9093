"""The rest of the original project's workflow API, used as its documentation shows.

A program written for the original ``minions`` runs unchanged: msgspec Struct and TypedDict
events, contexts and configs; the ``Gru.create`` persistence settings, validated as the original
validates them and driving the retry of a checkpoint; ``@minion_step()`` and
``@minion_step(name=...)``; a step may not call another step; ``PrometheusMetrics`` with
``create_metric``; and the builtin exception classes its users catch. Each test starts a real
Gru on a real store in ``tmp_path``; the one-Gru-per-process rule holds between tests because
each shuts its Gru down.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import subprocess
import sys
import typing
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import msgpack
import msgspec
import pytest

from minions import Gru, Minion, Pipeline, minion_id, minion_step
from minions.implementations import InMemoryStateStore, PrometheusMetrics, SQLiteStateStore
from minions.testing import FakeClock
from minions.workflows.checkpoint import read_header
from minions.workflows.store import WorkflowStore

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_store_threads")]

LIMIT = 10.0
REPO = Path(__file__).resolve().parents[2]


class Board:
    """What the components of these tests share with the test: events in, a log out, gates."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.log: list[Any] = []
        self.reached = asyncio.Event()
        self.hold = True


board = Board()


@pytest.fixture(autouse=True)
def fresh_board() -> None:
    global board
    board = Board()


class ListLogger:
    """A Logger (the public protocol) that keeps what it is told."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.records.append((level, event, fields))

    def events(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        return [(level, fields) for level, event, fields in self.records if event == name]


@asynccontextmanager
async def a_gru(tmp_path: Path, **settings: Any) -> AsyncIterator[Gru]:
    settings.setdefault("state_store", InMemoryStateStore())
    settings.setdefault("logger", None)
    settings.setdefault("metrics", None)
    gru = await Gru.create(project_dir=tmp_path, **settings)
    try:
        yield gru
    finally:
        await gru.shutdown()


async def wait_for(gru: Gru, oid: str | None, check: Any) -> Any:
    with anyio.fail_after(LIMIT):
        return await gru.wait_for_workflows(oid or "", check)


async def hold_here() -> None:
    """Block the running step until the test stops the orchestration."""
    board.reached.set()
    if board.hold:
        await asyncio.Event().wait()


# -- msgspec.Struct events, contexts and configs -----------------------------------------------


class Quote(msgspec.Struct, frozen=True):
    pair: str
    at: datetime.datetime
    amount: Decimal


class QuoteCtx(msgspec.Struct):
    seen: list[str] = msgspec.field(default_factory=list)
    price: Decimal | None = None


class Limits(msgspec.Struct):
    factor: int = 1
    label: str = "default"


class Quotes(Pipeline[Quote]):
    async def produce_event(self) -> Quote:
        event: Quote = await board.events.get()
        return event


@minion_id("struct-trader")
class StructTrader(Minion[Quote, QuoteCtx]):
    config: Limits
    stop_grace = 0.0

    @minion_step
    async def price(self) -> None:
        assert isinstance(self.event, Quote) and isinstance(self.context, QuoteCtx)
        self.context.seen.append("price")
        self.context.price = self.event.amount * self.config.factor

    @minion_step
    async def settle(self) -> None:
        await hold_here()
        assert isinstance(self.context, QuoteCtx) and isinstance(self.context.price, Decimal)
        board.log.append((self.event.pair, self.context.price, self.config.label))


AT = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)


async def test_msgspec_struct_events_contexts_and_configs_run_checkpoint_and_resume(
    tmp_path: Path,
) -> None:
    """A Minion[Struct, Struct] with a Struct config: its checkpoints are msgpack of plain data
    (no pickle), and a workflow stopped in its second step resumes with a real Struct context,
    Decimal and all, in the next start."""
    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    async with a_gru(tmp_path, state_store=store) as gru:
        config = Limits(factor=3, label="x3")
        result = await gru.start_orchestration(Quotes, StructTrader, minion_config=config)
        assert result.success, result.reason
        await board.events.put(Quote("ETH/USDC", AT, Decimal("2.5")))
        with anyio.fail_after(LIMIT):
            await board.reached.wait()
        assert (await gru.stop_orchestration(result.orchestration_id or "")).success
        (row,) = await store.get_all_contexts()
        record = msgpack.unpackb(row.context, raw=False, strict_map_key=False)
        assert record[10] == {"pair": "ETH/USDC", "at": "2024-05-01T12:30:00Z", "amount": "2.5"}
        assert record[11] == {"seen": ["price"], "price": "7.5"}
        assert read_header(row.context).next_step == "settle"
        assert b"\x80\x04" not in row.context  # no pickle protocol header anywhere

        board.hold = False
        again = await gru.start_orchestration(Quotes, StructTrader, minion_config=config)
        assert again.orchestration_id == result.orchestration_id
        stats = await wait_for(gru, again.orchestration_id, lambda s: s.succeeded == 1)
        assert stats.resumed == 1
        assert board.log == [("ETH/USDC", Decimal("7.5"), "x3")]


async def test_a_struct_config_comes_from_a_config_file(tmp_path: Path) -> None:
    """minion_config_path validates a TOML file into the minion's Struct config."""
    (tmp_path / "trader.toml").write_text('factor = 2\nlabel = "from-file"\n')
    board.hold = False
    async with a_gru(tmp_path) as gru:
        result = await gru.start_orchestration(
            Quotes, StructTrader, minion_config_path="trader.toml"
        )
        assert result.success, result.reason
        await board.events.put(Quote("BTC/USDC", AT, Decimal("10")))
        await wait_for(gru, result.orchestration_id, lambda s: s.succeeded == 1)
        bad = await gru.start_orchestration(Quotes, StructTrader, minion_config={"factor": "x"})
    assert board.log == [("BTC/USDC", Decimal("20"), "from-file")]
    assert not bad.success and "Expected `int`, got `str`" in (bad.reason or "")


def test_msgspec_is_imported_only_by_a_program_that_uses_it() -> None:
    """msgspec is the program's dependency: a program whose types are dataclasses defines,
    checks and checkpoints its workflow minion without msgspec ever being imported."""
    program = """
import sys
from dataclasses import dataclass
from minions import Minion, minion_step
from minions.workflows.checkpoint import Checkpoint, checkpoint_codec

@dataclass
class Event:
    n: int

@dataclass
class Ctx:
    total: int = 0

class Adder(Minion[Event, Ctx]):
    @minion_step
    async def add(self) -> None:
        self.context.total += self.event.n

codec = checkpoint_codec(Event, Ctx)
blob = codec.encode(Checkpoint("o", "w", "m", Event(2), Ctx(3)))
assert codec.decode(blob).context == Ctx(3)
print("msgspec" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- typing.TypedDict events and contexts (Python 3.11 included) ---------------------------------


class Ping(typing.TypedDict):
    n: int
    at: datetime.datetime


class PingCtx(typing.TypedDict, total=False):
    doubled: int


class Pings(Pipeline[Ping]):
    async def produce_event(self) -> Ping:
        event: Ping = await board.events.get()
        return event


@minion_id("typed-dict-doubler")
class Doubler(Minion[Ping, PingCtx]):
    stop_grace = 0.0

    @minion_step
    async def double(self) -> None:
        self.context["doubled"] = self.event["n"] * 2

    @minion_step
    async def report(self) -> None:
        await hold_here()
        board.log.append((self.context["doubled"], self.event["at"]))


async def test_typing_typeddict_events_and_contexts_run_and_resume(tmp_path: Path) -> None:
    """typing.TypedDict (not typing_extensions') events and contexts work on every supported
    Python: checkpointed, resumed after a stop, the datetime coming back as a datetime."""
    async with a_gru(tmp_path, state_store=SQLiteStateStore(tmp_path / "s.sqlite3")) as gru:
        result = await gru.start_orchestration(Pings, Doubler)
        assert result.success, result.reason
        await board.events.put(Ping(n=21, at=AT))
        with anyio.fail_after(LIMIT):
            await board.reached.wait()
        assert (await gru.stop_orchestration(result.orchestration_id or "")).success
        board.hold = False
        again = await gru.start_orchestration(Pings, Doubler)
        stats = await wait_for(gru, again.orchestration_id, lambda s: s.succeeded == 1)
    assert stats.resumed == 1 and board.log == [(42, AT)]


# -- Gru.create settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"workflow_failure_policy": "keep"}, ValueError, "workflow_failure_policy must be 'de"),
        ({"workflow_failure_policy": 1}, TypeError, "workflow_failure_policy must be 'delete'"),
        (
            {"workflow_persistence_failure_policy": "retry"},
            ValueError,
            "workflow_persistence_failure_policy must be 'continue-on-failure' or "
            "'idle-until-persisted'",
        ),
        ({"workflow_persistence_failure_policy": True}, TypeError, "must be 'continue-on-failure'"),
        (
            {"workflow_persistence_retry_delay_seconds": 0},
            ValueError,
            "workflow_persistence_retry_delay_seconds must be a positive number of seconds",
        ),
        (
            {"workflow_persistence_retry_delay_seconds": "1"},
            TypeError,
            "workflow_persistence_retry_delay_seconds must be a positive number of seconds",
        ),
        ({"workflow_persistence_retry_delay_seconds": True}, TypeError, "got bool"),
        (
            {"workflow_persistence_retry_max_delay_seconds": float("inf")},
            ValueError,
            "workflow_persistence_retry_max_delay_seconds must be a positive number of seconds",
        ),
        (
            {"workflow_persistence_retry_backoff_multiplier": 0.5},
            ValueError,
            "workflow_persistence_retry_backoff_multiplier must be a number greater than or "
            "equal to 1",
        ),
        (
            {"workflow_persistence_retry_jitter_ratio": 1.5},
            ValueError,
            "workflow_persistence_retry_jitter_ratio must be a number between 0 and 1",
        ),
        (
            {"workflow_persistence_retry_warning_interval_seconds": -1},
            ValueError,
            "workflow_persistence_retry_warning_interval_seconds must be a positive number",
        ),
        (
            {"workflow_persistence_retry_error_after_seconds": -1},
            ValueError,
            "workflow_persistence_retry_error_after_seconds must be None or a non-negative",
        ),
        (
            {"workflow_persistence_retry_error_after_seconds": float("nan")},
            ValueError,
            "must be None or a non-negative number of seconds",
        ),
        (
            {
                "workflow_persistence_retry_delay_seconds": 10.0,
                "workflow_persistence_retry_max_delay_seconds": 5.0,
            },
            ValueError,
            "workflow_persistence_retry_max_delay_seconds must be greater than or equal to "
            "workflow_persistence_retry_delay_seconds",
        ),
        (
            {
                "workflow_persistence_failure_policy": "idle-until-persisted",
                "persistence_policy": "continue-on-failure",
            },
            ValueError,
            "pass only one",
        ),
    ],
)
async def test_gru_create_validates_the_workflow_settings(
    tmp_path: Path, settings: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A setting of the wrong type is a TypeError, one out of range a ValueError, with the
    original's wording; nothing is created (the next Gru.create succeeds)."""
    with pytest.raises(error, match=match):
        await Gru.create(logger=None, metrics=None, project_dir=tmp_path, **settings)
    async with a_gru(tmp_path, workflow_persistence_retry_error_after_seconds=None):
        pass


class Idle(Minion[Quote, QuoteCtx]):
    @minion_step
    async def one(self) -> None:
        board.log.append(self.event.pair)


async def test_the_persistence_settings_drive_the_retry_of_a_checkpoint(tmp_path: Path) -> None:
    """Under idle-until-persisted a failed checkpoint is retried after the configured delay,
    multiplied each time up to the maximum; the wait is logged as a warning at first, then only
    every warning interval, as an error once it has lasted error_after_seconds."""
    store, clock, logger = InMemoryStateStore(), FakeClock(), ListLogger()
    async with a_gru(
        tmp_path,
        state_store=store,
        logger=logger,
        clock=clock,
        workflow_failure_policy="delete",
        workflow_persistence_failure_policy="idle-until-persisted",
        workflow_persistence_retry_delay_seconds=2.0,
        workflow_persistence_retry_max_delay_seconds=5.0,
        workflow_persistence_retry_backoff_multiplier=2.0,
        workflow_persistence_retry_jitter_ratio=0.0,
        workflow_persistence_retry_warning_interval_seconds=3.0,
        workflow_persistence_retry_error_after_seconds=5.0,
    ) as gru:
        result = await gru.start_orchestration(Quotes, Idle)
        store.fail_next("save", times=4)
        await board.events.put(Quote("ETH/USDC", AT, Decimal(1)))
        for _ in range(4):
            with anyio.fail_after(LIMIT):
                await clock.advance_to_next()
        stats = await wait_for(gru, result.orchestration_id, lambda s: s.succeeded == 1)
    assert clock.slept == [2.0, 4.0, 5.0, 5.0]
    assert stats.checkpoint_failures == 4 and board.log == ["ETH/USDC"]
    # Failures at t=0, 2, 6, 11: the first is logged; at 2 the interval has not passed; at 6
    # it has, and the wait passed 5 s: an error; at 11, another interval.
    logged = logger.events("workflow.checkpoint_retrying")
    assert [(level, f["attempt"], f["waited"]) for level, f in logged] == [
        (logging.WARNING, 1, 0.0),
        (logging.ERROR, 3, 6.0),
        (logging.ERROR, 4, 11.0),
    ]
    ((_, saved),) = logger.events("workflow.checkpoint_saved")
    assert saved["attempts"] == 5


async def test_error_after_none_never_escalates_and_jitter_spreads_the_delay(
    tmp_path: Path,
) -> None:
    """workflow_persistence_retry_error_after_seconds=None keeps a long wait at warning level;
    the jitter ratio moves each delay by at most that fraction."""
    store, clock, logger = InMemoryStateStore(), FakeClock(), ListLogger()
    async with a_gru(
        tmp_path,
        state_store=store,
        logger=logger,
        clock=clock,
        workflow_persistence_failure_policy="idle-until-persisted",
        workflow_persistence_retry_delay_seconds=100.0,
        workflow_persistence_retry_max_delay_seconds=100.0,
        workflow_persistence_retry_jitter_ratio=0.5,
        workflow_persistence_retry_warning_interval_seconds=1.0,
        workflow_persistence_retry_error_after_seconds=None,
    ) as gru:
        result = await gru.start_orchestration(Quotes, Idle)
        store.fail_next("save", times=3)
        await board.events.put(Quote("ETH/USDC", AT, Decimal(1)))
        for _ in range(3):
            with anyio.fail_after(LIMIT):
                await clock.advance_to_next()
        await wait_for(gru, result.orchestration_id, lambda s: s.succeeded == 1)
    assert len(clock.slept) == 3 and all(50.0 <= d <= 150.0 for d in clock.slept)
    levels = [level for level, _ in logger.events("workflow.checkpoint_retrying")]
    assert levels == [logging.WARNING] * 3


class Failing(Minion[Quote, QuoteCtx]):
    @minion_step
    async def one(self) -> None:
        raise RuntimeError("the exchange said no")


async def test_workflow_failure_policy_delete_deletes_a_failed_workflows_checkpoint(
    tmp_path: Path,
) -> None:
    """workflow_failure_policy="delete" (the only policy): a failed workflow is counted and its
    checkpoint deleted, while an interrupted one keeps it."""
    store = DeleteWatch()
    async with a_gru(tmp_path, state_store=store, workflow_failure_policy="delete") as gru:
        result = await gru.start_orchestration(Quotes, Failing)
        await board.events.put(Quote("ETH/USDC", AT, Decimal(1)))
        await wait_for(gru, result.orchestration_id, lambda s: s.failed == 1)
        with anyio.fail_after(LIMIT):
            await store.deleted.wait()  # the workflow is counted before its delete
        assert await store.get_all_contexts() == []


class DeleteWatch(InMemoryStateStore):
    """The in-memory store, telling when a checkpoint was deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted = asyncio.Event()

    async def delete_context(self, workflow_id: str) -> None:
        await super().delete_context(workflow_id)
        self.deleted.set()


# -- @minion_step() and @minion_step(name=...) ---------------------------------------------------


@minion_id("named-steps")
class NamedV1(Minion[Quote, QuoteCtx]):
    stop_grace = 0.0

    @minion_step()
    async def quote(self) -> None:
        self.context.seen.append("quote")

    @minion_step(name="price")
    async def fetch_price(self) -> None:
        await hold_here()
        board.log.append(("v1", self.context.seen))


@minion_id("named-steps")
class NamedV2(Minion[Quote, QuoteCtx]):
    """The method renamed; its step name kept, so saved workflows resume in it."""

    @minion_step()
    async def quote(self) -> None:
        self.context.seen.append("quote")

    @minion_step(name="price")
    async def price_from_the_exchange(self) -> None:
        if self.event.pair == "fail":
            raise RuntimeError("no price")
        board.log.append(("v2", self.context.seen))


@minion_id("named-steps")
class NamedV3(Minion[Quote, QuoteCtx]):
    """The second step renamed: a saved workflow at "price" cannot resume here."""

    @minion_step
    async def quote(self) -> None: ...

    @minion_step(name="settle")
    async def fetch_price(self) -> None: ...


async def test_step_names_are_what_checkpoints_logs_and_metrics_call_steps(
    tmp_path: Path,
) -> None:
    """@minion_step() names a step after its method, @minion_step(name=...) as given. The name
    is recorded in the checkpoint, so a renamed method with the same step name resumes saved
    workflows and a changed name is refused ("drain first"); logs and the step-duration
    metrics use it too."""
    store, logger = SQLiteStateStore(tmp_path / "state.sqlite3"), ListLogger()
    async with a_gru(tmp_path, state_store=store) as gru:
        first = await gru.start_orchestration(Quotes, NamedV1)
        await board.events.put(Quote("ETH/USDC", AT, Decimal(1)))
        with anyio.fail_after(LIMIT):
            await board.reached.wait()
        await gru.stop_orchestration(first.orchestration_id or "")
        (row,) = await store.get_all_contexts()
        assert read_header(row.context).next_step == "price"

    # The next version of the program, on the same store: one that renamed the step is
    # refused; one that renamed only the method resumes the workflow at "price".
    async with a_gru(tmp_path, state_store=SQLiteStateStore(tmp_path / "state.sqlite3")) as gru:
        refused = await gru.start_orchestration(Quotes, NamedV3)
    assert not refused.success
    assert "'price'" in (refused.reason or "") and "'settle'" in (refused.reason or "")
    assert "drain" in (refused.suggestion or "")

    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    async with a_gru(tmp_path, state_store=store, logger=logger) as gru:
        second = await gru.start_orchestration(Quotes, NamedV2)
        assert second.success and second.orchestration_id == first.orchestration_id
        oid = second.orchestration_id or ""
        await wait_for(gru, oid, lambda s: s.succeeded == 1)
        assert board.log == [("v2", ["quote"])]
        await board.events.put(Quote("fail", AT, Decimal(1)))
        await wait_for(gru, oid, lambda s: s.failed == 1)
        (store_instance,) = [
            i for i in gru.runtime.instances().values() if isinstance(i, WorkflowStore)
        ]
        durations = store_instance.counters(oid).step_durations()
    assert set(durations) == {"quote", "price"}
    ((_, failed),) = logger.events("workflow.failed")
    assert failed["step"] == "price"
    ((_, resumed),) = logger.events("workflow.resumed")
    assert resumed["step"] == "price"


def test_a_step_name_must_be_a_non_empty_string() -> None:
    """@minion_step(name=...) with an empty name or a non-string is a TypeError."""
    for name in ("", "  ", 3):
        with pytest.raises(TypeError, match="non-empty string"):
            minion_step(name=name)  # type: ignore[call-overload]


def test_two_steps_with_one_name_are_rejected() -> None:
    """Step names tell steps apart in checkpoints: two alike are rejected by the class."""
    with pytest.raises(TypeError, match="two steps named 'go'"):

        class Twice(Minion[Quote, QuoteCtx]):
            @minion_step(name="go")
            async def one(self) -> None: ...

            @minion_step(name="go")
            async def two(self) -> None: ...


# -- a step awaiting another step ---------------------------------------------------------------


def test_a_step_that_awaits_another_step_is_rejected_at_class_definition() -> None:
    """Calling a step from a step would skip the checkpoint between them: the class statement
    raises a TypeError that says to split the work."""
    with pytest.raises(TypeError, match=r"Eager\.quote calls the step settle\(\).*Split the"):

        class Eager(Minion[Quote, QuoteCtx]):
            @minion_step
            async def quote(self) -> None:
                self.context.seen.append("quote")
                await self.settle()

            @minion_step
            async def settle(self) -> None: ...

    with pytest.raises(TypeError, match=r"Gathers\.two calls the step one\(\)"):

        class Gathers(Minion[Quote, QuoteCtx]):
            @minion_step
            async def one(self) -> None: ...

            @minion_step
            async def two(me) -> None:  # any name for the instance
                await asyncio.gather(me.one())


def test_steps_may_share_helpers_and_call_their_base_step() -> None:
    """What the rule leaves alone: a helper method both steps call, and an override that
    calls the step it overrides through super()."""

    class Base(Minion[Quote, QuoteCtx]):
        async def helper(self) -> None: ...

        @minion_step
        async def one(self) -> None:
            await self.helper()

        @minion_step
        async def two(self) -> None:
            await self.helper()

    class Derived(Base):
        @minion_step
        async def one(self) -> None:
            await super().one()

    assert Derived.__minions_steps__ == ("one", "two")  # type: ignore[attr-defined]


# -- PrometheusMetrics(logger, port, addr, registry).create_metric -------------------------------


async def test_prometheus_metrics_create_metric_beside_the_workflow_metrics(
    tmp_path: Path,
) -> None:
    """create_metric(name, label_names, kind) makes a counter, gauge or histogram of the
    program's own, served on 127.0.0.1 with the workflow layer's metrics; asking again for
    the same metric gives it back, another kind or other labels under its name is a
    ValueError, as is an unknown kind."""
    logger = ListLogger()
    metrics = PrometheusMetrics(logger, port=0, addr="", registry=None)
    jobs = metrics.create_metric("app_jobs_total", ["queue"], "counter")
    jobs.labels(queue="fast").inc()
    jobs.labels(queue="fast").inc(2)
    metrics.create_metric("app_depth", [], "gauge").labels().set(7)
    metrics.create_metric("app_seconds", ["queue"], "histogram").labels(queue="slow").observe(0.2)
    assert metrics.create_metric("app_jobs_total", ["queue"], "counter") is not None
    with pytest.raises(ValueError, match="exists already as a counter"):
        metrics.create_metric("app_jobs_total", ["queue"], "gauge")
    with pytest.raises(ValueError, match="unknown metric kind 'summary'"):
        metrics.create_metric("app_other", [], "summary")  # type: ignore[arg-type]
    board.hold = False
    async with a_gru(tmp_path, metrics=metrics) as gru:
        assert metrics.addr == "127.0.0.1" and metrics.port != 0
        result = await gru.start_orchestration(Quotes, Idle)
        await board.events.put(Quote("ETH/USDC", AT, Decimal(1)))
        await wait_for(gru, result.orchestration_id, lambda s: s.succeeded == 1)
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        text = await asyncio.to_thread(_scrape, url)
    assert 'app_jobs_total{queue="fast"} 3.0' in text
    assert "app_depth 7.0" in text
    assert 'app_seconds_count{queue="slow"} 1.0' in text
    assert "minions_workflows_succeeded_total{orchestration=" in text
    assert metrics.value("app_jobs_total", {"queue": "fast"}) == 3


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=LIMIT) as response:
        text: str = response.read().decode()
        return text


# -- exception classes users catch ---------------------------------------------------------------


async def test_errors_are_the_builtin_exceptions_the_original_raised(tmp_path: Path) -> None:
    """Bad definitions are TypeErrors, bad ids ValueErrors, Gru misuse RuntimeErrors: the
    except clauses of a program written for the original still catch them."""
    with pytest.raises(TypeError, match="no event and context types"):

        class Untyped(Minion):
            @minion_step
            async def one(self) -> None: ...

    with pytest.raises(TypeError, match="not 'async def'"):
        minion_step(lambda self: None)
    with pytest.raises(ValueError, match="non-empty string"):
        minion_id("")
    with pytest.raises(TypeError, match="non-empty string"):
        minion_id(42)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"Gru\.create"):
        Gru()
    async with a_gru(tmp_path):
        with pytest.raises(RuntimeError, match="already running"):
            await Gru.create(logger=None, metrics=None, project_dir=tmp_path)


async def test_the_run_form_takes_the_retry_settings_from_its_config(tmp_path: Path) -> None:
    """Without Gru, the [WorkflowStore] table sets the same retry settings (retry_...),
    checked at start like any config: a value out of range is a ConfigError naming it."""
    from minions import ConfigError, Runtime
    from minions.workflows.store import PersistenceRetry

    table: dict[str, Any] = {
        "path": str(tmp_path / "state.sqlite3"),
        "retry_delay_seconds": 0.5,
        "retry_jitter_ratio": 0.0,
        "retry_error_after_seconds": None,
    }
    async with Runtime(project_dir=tmp_path, environ={}, config={"WorkflowStore": table}) as rt:
        await rt.start(WorkflowStore)
        store = rt.instances()["WorkflowStore"]
        assert isinstance(store, WorkflowStore)
        assert store.services.retry == PersistenceRetry(
            delay_seconds=0.5, jitter_ratio=0.0, error_after_seconds=None
        )
    table["retry_jitter_ratio"] = 2
    async with Runtime(project_dir=tmp_path, environ={}, config={"WorkflowStore": table}) as rt:
        with pytest.raises(ConfigError, match="retry_jitter_ratio must be a number between 0"):
            await rt.start(WorkflowStore)

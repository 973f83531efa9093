"""``run(...)``, the blocking front door, driven as users drive it: a real Python process running
a script, stopped with real signals.

Each test writes its program into ``tmp_path`` (its project folder, via MINIONS_PROJECT_DIR),
waits for a line the program prints on stdout once it is ready (never a sleep), then signals it
or waits for it to end; every wait is bounded and the process is killed in a finally.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minions import Minion, RuntimeStateError, run

LIMIT = 15.0
"""Seconds any one wait on a program may take (a generous bound: Python starts in ~0.3 s)."""

PRELUDE = """\
import asyncio
import logging
import sys

import structlog

from minions import Minion, Resource, run


def say(text):
    print(text, flush=True)

"""


class Program:
    """A script running in its own Python process, its stdout read line by line."""

    started = 0

    def __init__(
        self,
        tmp_path: Path,
        body: str,
        *,
        stderr: Any = None,
        cli: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``cli``: run it as ``minions run *cli program.py`` instead of ``python program.py``;
        ``env``: more environment variables (every other ``MINIONS_*`` one is removed)."""
        self.tmp_path = tmp_path
        script = tmp_path / "program.py"
        script.write_text(PRELUDE + textwrap.dedent(body), encoding="utf-8")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MINIONS_")}
        environ["MINIONS_PROJECT_DIR"] = str(tmp_path)
        environ.update(env or {})
        Program.started += 1
        self.stderr_path = tmp_path / f"stderr{Program.started}.txt"
        self._stderr_file = None
        if stderr is None:
            self._stderr_file = stderr = self.stderr_path.open("wb")
        command = [sys.executable, str(script)]
        if cli is not None:
            command = [sys.executable, "-m", "minions", "run", *cli, str(script)]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=environ,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def expect(self, line: str) -> None:
        """Wait (bounded) until the program prints ``line``."""
        while True:
            try:
                got = self._lines.get(timeout=LIMIT)
            except queue.Empty:
                pytest.fail(f"no {line!r} within {LIMIT} s; {self.describe()}")
            if got is None:
                self.proc.wait(timeout=LIMIT)
                pytest.fail(f"the program ended before printing {line!r}; {self.describe()}")
            self.output.append(got)
            if got == line:
                return

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> int:
        """Wait (bounded) for the program to exit; collect the rest of its output."""
        try:
            code = self.proc.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the program did not exit within {LIMIT} s; {self.describe()}")
        self._reader.join(timeout=LIMIT)
        while (line := self._lines.get_nowait()) is not None:
            self.output.append(line)
        return code

    def describe(self) -> str:
        stderr = self.stderr_path.read_text("utf-8", "replace") if self._stderr_file else ""
        return f"stdout so far: {self.output!r}; stderr: {stderr[-3000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=LIMIT)
        self._reader.join(timeout=LIMIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.close()

    def log_events(self) -> list[dict[str, Any]]:
        path = self.tmp_path / ".minions" / "logs" / "minions.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Any]:
    """Start programs with ``program(body)``; every one is killed and reaped at the end."""
    started: list[Program] = []

    def start(body: str, **kwargs: Any) -> Program:
        started.append(Program(tmp_path, body, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for p in started:
            p.close()


LAYERED = """
class Database(Resource):
    async def shutdown(self):
        say("shutdown Database")


class Feed(Resource):
    db: Database

    async def shutdown(self):
        say("shutdown Feed")


class Strategy(Minion):
    def __init__(self, feed: Feed):
        self.feed = feed

    async def run(self):
        say("READY")
        await asyncio.Event().wait()

    async def shutdown(self):
        say("shutdown Strategy")


run(Strategy)
say("RETURNED")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_gracefully_in_reverse_order(program: Any, signum: int) -> None:
    """SIGTERM or SIGINT: every component stops, dependents first; run() returns; status 0."""
    p = program(LAYERED)
    p.expect("READY")
    p.signal(signum)
    assert p.finish() == 0, p.describe()
    assert p.output == [
        "READY",
        "shutdown Strategy",
        "shutdown Feed",
        "shutdown Database",
        "RETURNED",
    ]
    events = [(e["event"], e.get("component")) for e in p.log_events()]
    stopped = [c for event, c in events if event == "component.stopped"]
    assert stopped == ["Strategy", "Feed", "Database"]
    stopping = [e for e in p.log_events() if e["event"] == "runtime.stopping"]
    assert signal.Signals(signum).name in stopping[0]["reason"]


BLOCKING_SHUTDOWN = """
class Stuck(Minion, stop_timeout=60):
    async def run(self):
        say("READY")
        await asyncio.Event().wait()

    async def shutdown(self):
        say("SHUTDOWN BLOCKING")
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                say("SWALLOWED")  # a shutdown that will not be told


run(Stuck)
say("RETURNED")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_forces_the_stop(program: Any, signum: int) -> None:
    """A shutdown() that blocks (and ignores cancellation) holds the graceful stop; a second
    signal ends the program at once with status 128 + the signal number."""
    p = program(BLOCKING_SHUTDOWN)
    p.expect("READY")
    p.signal(signum)
    p.expect("SHUTDOWN BLOCKING")
    p.signal(signum)
    assert p.finish() == 128 + signum, p.describe()
    assert "RETURNED" not in p.output
    forced = [e for e in p.log_events() if e["event"] == "runtime.forced"]
    assert len(forced) == 1
    assert signal.Signals(signum).name in forced[0]["reason"]
    abandoned = [e for e in p.log_events() if e["event"] == "runtime.abandoned"]
    assert [e["tasks"] for e in abandoned] == [["minions:Stuck"]]


def test_a_run_that_ignores_cancellation_does_not_hold_the_exit(program: Any) -> None:
    """A minion whose run() swallows cancellation is abandoned after its stop timeout, logged,
    and the program still exits cleanly."""
    p = program(
        """
        class Deaf(Minion, stop_timeout=0.2):
            async def run(self):
                say("READY")
                while True:
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        say("SWALLOWED")


        run(Deaf)
        say("RETURNED")
        """
    )
    p.expect("READY")
    p.signal(signal.SIGTERM)
    assert p.finish() == 0, p.describe()
    assert p.output[:2] == ["READY", "SWALLOWED"]
    assert p.output[-1] == "RETURNED"
    timeouts = [e for e in p.log_events() if e["event"] == "component.stop_timeout"]
    assert [e["component"] for e in timeouts] == ["Deaf"]
    abandoned = [e for e in p.log_events() if e["event"] == "runtime.abandoned"]
    assert [e["tasks"] for e in abandoned] == [["minions:Deaf"]]


def test_a_signal_during_startup_stops_what_is_starting(program: Any) -> None:
    """SIGTERM while a resource's startup() is still connecting: the start is abandoned, the
    resource's shutdown() runs, nothing after it is constructed, status 0."""
    p = program(
        """
        class Slow(Resource):
            async def startup(self):
                say("CONNECTING")
                await asyncio.Event().wait()

            async def shutdown(self):
                say("shutdown Slow")


        class Strategy(Minion):
            def __init__(self, slow: Slow):
                say("constructed Strategy")


        run(Strategy)
        say("RETURNED")
        """
    )
    p.expect("CONNECTING")
    p.signal(signal.SIGTERM)
    assert p.finish() == 0, p.describe()
    assert p.output == ["CONNECTING", "shutdown Slow", "RETURNED"]


def test_stop_after_stops_gracefully(program: Any) -> None:
    """``run(..., stop_after=s)`` stops everything gracefully after s seconds."""
    p = program(
        """
        class Forever(Minion):
            async def run(self):
                say("READY")
                await asyncio.Event().wait()

            async def shutdown(self):
                say("shutdown Forever")


        run(Forever, stop_after=0.2)
        say("RETURNED")
        """
    )
    assert p.finish() == 0, p.describe()
    assert p.output == ["READY", "shutdown Forever", "RETURNED"]


def test_run_returns_when_every_minion_has_finished(program: Any) -> None:
    """Minions that return end the program: resources stop, run() returns, status 0."""
    p = program(
        """
        class Feed(Resource):
            async def shutdown(self):
                say("shutdown Feed")


        class Once(Minion):
            feed: Feed

            async def run(self):
                say("Once ran")


        class Twice(Minion):
            async def run(self):
                say("Twice ran")


        run(Once, Twice)
        say("RETURNED")
        """
    )
    assert p.finish() == 0, p.describe()
    assert sorted(p.output[:2]) == ["Once ran", "Twice ran"]
    assert p.output[2:] == ["shutdown Feed", "RETURNED"]
    completed = {e["component"] for e in p.log_events() if e["event"] == "component.completed"}
    assert completed == {"Once", "Twice"}


def test_a_temporary_component_that_crashed_makes_the_exit_status_1(program: Any) -> None:
    """A crash that the policy does not restart is not a clean stop: status 1, and the log
    says which component crashed."""
    p = program(
        """
        class OneShot(Minion, restart="temporary"):
            async def run(self):
                raise RuntimeError("bad input")


        run(OneShot)
        say("RETURNED")
        """
    )
    assert p.finish() == 1, p.describe()
    assert "RETURNED" not in p.output
    stopped = [e for e in p.log_events() if e["event"] == "runtime.stopped"]
    assert stopped[-1]["reason"] == "crashed, not restarted: OneShot"


LIFECYCLE = """
from minions import Backoff

fast = Backoff(initial=0.01, factor=1.0, cap=0.01, jitter=0.0)
incarnations = []
feed_back = asyncio.Event()


class Feed(Resource, backoff=fast):
    async def startup(self):
        incarnations.append(self)
        if len(incarnations) == 2:
            feed_back.set()

    async def run(self):
        if len(incarnations) == 1:
            raise ConnectionError("upstream closed")
        await asyncio.Event().wait()


class Worker(Minion):
    feed: Feed

    async def run(self):
        structlog.get_logger("user").info("worker.tick", n=len(incarnations))
        logging.getLogger("user.stdlib").warning("stdlib line from the worker")
        await feed_back.wait()


class Doomed(Minion, max_restarts=0):
    async def run(self):
        await feed_back.wait()
        raise RuntimeError("cannot go on")


run(Worker, Doomed)
say("RETURNED")
"""


def test_a_given_up_component_makes_the_exit_status_1_and_logs_tell_the_story(
    program: Any,
) -> None:
    """The project's JSON log file records every lifecycle event with its component and reason;
    events logged by user code carry the component's name; a given-up component gives status 1.
    On a pipe, stderr carries the same JSON lines."""
    p = program(LIFECYCLE)
    assert p.finish() == 1, p.describe()
    assert "RETURNED" not in p.output  # run() raised SystemExit(1)
    events = p.log_events()
    seen = {(e["event"], e.get("component")) for e in events}
    for expected in [
        ("component.starting", "Feed"),
        ("component.started", "Feed"),
        ("component.crashed", "Feed"),
        ("component.restarting", "Feed"),
        ("component.stopped", "Worker"),
        ("component.restarting", "Worker"),
        ("component.crashed", "Doomed"),
        ("component.given_up", "Doomed"),
        ("component.stopped", "Feed"),
        ("worker.tick", "Worker"),
        ("stdlib line from the worker", "Worker"),
    ]:
        assert expected in seen, f"{expected} not logged; logged: {sorted(map(str, seen))}"
    lifecycle = [e for e in events if e["event"].startswith("component.")]
    assert all(e.get("component") for e in lifecycle)
    crashed = next(e for e in events if e["event"] == "component.crashed")
    assert crashed["reason"] == "run() raised ConnectionError: upstream closed"
    assert "ConnectionError: upstream closed" in crashed["exception"]
    given_up = next(e for e in events if e["event"] == "component.given_up")
    assert given_up["reason"] == (
        "more than 0 restarts within 60.0 s; last: run() raised RuntimeError: cannot go on"
    )
    assert given_up["level"] == "error"
    assert all("timestamp" in e and "level" in e for e in events)
    stderr_lines = p.stderr_path.read_text("utf-8").splitlines()
    stderr_events = [json.loads(line)["event"] for line in stderr_lines if line.startswith("{")]
    assert stderr_events == [e["event"] for e in events]


def test_logs_are_readable_lines_on_a_terminal(program: Any) -> None:
    """With stderr on a terminal, log lines are rendered for people, not as JSON; the log file
    is JSON all the same."""
    leader, follower = pty.openpty()
    try:
        p = program(
            """
            class Once(Minion):
                async def run(self):
                    say("ran")


            run(Once)
            """,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        assert p.finish() == 0
        text = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    lines = [line for line in text.decode("utf-8", "replace").splitlines() if line.strip()]
    started = [line for line in lines if "component.started" in line]
    assert started, lines
    assert not started[0].lstrip().startswith("{")
    assert "Once" in started[0]
    file_events = [e["event"] for e in p.log_events()]
    assert "component.started" in file_events


def test_a_definition_error_is_one_line_and_exit_status_78(program: Any) -> None:
    """Bad input to run(...) is reported before any component starts: one line on stderr that
    says what to fix, no traceback, exit status 78 (EX_CONFIG), no component logged as
    starting."""
    p = program(
        """
        class Worker(Minion):
            def __init__(self, url: str):
                say("constructed")


        run(Worker, "Worker")
        """
    )
    assert p.finish() == 78
    assert p.output == []
    assert (
        p.stderr() == "minions: str object 'Worker' is not a component: pass classes that "
        "subclass minions.Resource or minions.Minion\n"
    )
    assert not any(e["event"] == "component.starting" for e in p.log_events())


def test_a_config_error_is_one_line_and_exit_status_78(program: Any, tmp_path: Path) -> None:
    """An invalid value in minions.toml: one line naming the component, the field and the file;
    status 78, distinct from 1 (a component given up)."""
    (tmp_path / "minions.toml").write_text("[Feed]\ntick = -1\n")
    p = program(
        """
        from pydantic import BaseModel, Field

        class FeedConfig(BaseModel):
            tick: float = Field(0.2, gt=0)

        class Feed(Minion):
            config: FeedConfig

            async def run(self):
                say("RUNNING")

        run(Feed)
        """
    )
    assert p.finish() == 78
    assert p.output == []
    err = p.stderr()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("minions: invalid configuration for Feed: field 'tick'")
    assert f"Fix the [Feed] table of {tmp_path / 'minions.toml'}" in err


def test_a_class_that_cannot_be_a_component_fails_minions_run_in_one_line(
    program: Any,
) -> None:
    """``minions run app.py`` whose file defines a component with a hook that is not async: the
    DefinitionError raised while the file loads is one line and status 78 too."""
    p = program(
        """
        class Spinner(Minion):
            def run(self):
                while True:
                    pass

        run(Spinner)
        """,
        cli=[],
    )
    assert p.finish() == 78
    err = p.stderr()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "Spinner.run() is not async: define it as 'async def run(self) -> None'" in err


def test_minions_run_options_reach_a_program_file(program: Any, tmp_path: Path) -> None:
    """``minions run --seconds --log-level --config app.py``: the program calls run(...) itself,
    and each option still applies — over what the program passes to run()."""
    (tmp_path / "other.toml").write_text("[Feed]\nname = 'from other.toml'\n")
    p = program(
        """
        from dataclasses import dataclass

        @dataclass
        class FeedConfig:
            name: str = "default"

        class Feed(Minion):
            config: FeedConfig

            async def run(self):
                structlog.get_logger().debug("feed.debugging", name=self.config.name)
                say(self.config.name)
                await asyncio.Event().wait()

        run(Feed, log_level="error")
        """,
        cli=["--seconds", "0.5", "--log-level", "debug", "--config", "other.toml"],
    )
    p.expect("from other.toml")
    assert p.finish() == 0  # --seconds stopped it
    events = p.log_events()
    assert any(e["event"] == "feed.debugging" for e in events)
    assert events[-1]["event"] == "runtime.stopped"


def test_run_inside_a_running_event_loop_says_to_use_runtime() -> None:
    """run() blocks and runs its own loop: from async code it is a clear error naming Runtime,
    raised before anything is set up."""

    class Idle(Minion):
        async def run(self) -> None:
            return None

    async def main() -> None:
        with pytest.raises(RuntimeStateError, match=r"inside a running event loop.*use Runtime"):
            run(Idle)

    asyncio.run(main())


def test_config_that_nothing_reads_is_warned(program: Any, tmp_path: Path) -> None:
    """A table or an environment override that no component reads (a typo in its name, or a
    component without a config) would be ignored in silence: each is logged as
    ``config.unmatched``, a typo with the closest name; what is read is not reported."""
    (tmp_path / "minions.toml").write_text(
        "[PriceFed]\ntick = 1\n[Strategy]\nlimit = 2\n[minions]\nlog_level = 'info'\n"
    )
    p = program(
        """
        from dataclasses import dataclass

        @dataclass
        class Limits:
            limit: int = 1

        class PriceFeed(Resource):
            pass

        class Strategy(Minion):
            feed: PriceFeed
            config: Limits

            async def run(self):
                say(f"limit={self.config.limit}")

        run(Strategy)
        """,
        env={
            "MINIONS_STRATEGI__LIMIT": "3",
            "MINIONS_PRICEFEED__TICK": "2",
            "MINIONS_STRATEGY__LIMIT": "4",
        },
    )
    assert p.finish() == 0
    assert p.output == ["limit=4"]
    warnings = [e["reason"] for e in p.log_events() if e["event"] == "config.unmatched"]
    assert len(warnings) == 3, warnings
    assert "[PriceFed] table" in warnings[0] and "(did you mean PriceFeed?)" in warnings[0]
    assert "MINIONS_PRICEFEED__TICK is not read: PriceFeed declares no config" in warnings[1]
    assert "MINIONS_STRATEGI__LIMIT names no component" in warnings[2]
    assert "(did you mean MINIONS_STRATEGY__?)" in warnings[2]


def test_the_log_file_rotates_by_size_and_logs_read_across(program: Any, tmp_path: Path) -> None:
    """``log_max_bytes`` in ``[minions]`` and ``$MINIONS_LOG_BACKUPS``: the file rotates before
    it passes the size, only that many rotated files are kept, and ``minions logs`` reads the
    events of every file that is left, in order."""
    (tmp_path / "minions.toml").write_text("[minions]\nlog_max_bytes = 4000\n")
    p = program(
        """
        class Chatty(Minion):
            async def run(self):
                for i in range(300):
                    structlog.get_logger().info("tick", n=i)

        run(Chatty)
        """,
        env={"MINIONS_LOG_BACKUPS": "2"},
    )
    assert p.finish() == 0
    logs = tmp_path / ".minions" / "logs"
    assert sorted(f.name for f in logs.iterdir()) == [
        "minions.log",
        "minions.log.1",
        "minions.log.2",
    ]
    assert all(f.stat().st_size <= 4000 for f in logs.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "minions", "logs", "Chatty", "--json", "--project", str(tmp_path)],
        capture_output=True, text=True, timeout=LIMIT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ticks = [json.loads(line)["n"] for line in result.stdout.splitlines() if '"tick"' in line]
    assert len(ticks) > 20 and ticks == list(range(ticks[0], 300))  # the newest, none missing


FOREVER = """
class Forever(Minion):
    async def run(self):
        say("READY")
        await asyncio.Event().wait()

run(Forever)
"""


def test_a_second_system_in_the_same_folder_is_refused(program: Any, tmp_path: Path) -> None:
    """While a system runs, another one started in its project folder stops at once with one
    line naming the first one's pid, and exit status 75; it starts nothing and logs nothing."""
    first = program(FOREVER)
    first.expect("READY")
    second = program(FOREVER)
    assert second.finish() == 75
    assert second.output == []
    err = second.stderr()
    assert err.count("\n") == 1, err
    assert f"another Minions system (pid {first.proc.pid}) is running in {tmp_path}" in err
    first.signal(signal.SIGTERM)
    assert first.finish() == 0
    assert [e["event"] for e in first.log_events()].count("runtime.starting") == 1

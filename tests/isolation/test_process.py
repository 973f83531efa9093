"""ChildProcess: spawn and READY, calls both ways, start failures, stop, output and logs,
children that never outlive the parent, and one-file scripts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from isolation import ChildExit, ChildSpec, ChildStartError, Isolation, Zygote, spawn
from tests.isolation._targets import Chatty, Counter, Echo, Graceful, Leveled

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
FAST = Isolation(start_timeout=10, stop_timeout=2, heartbeat_interval=0.1, heartbeat_timeout=5)


def spec(name: str, payload: Any = None, **limits: Any) -> ChildSpec:
    isolation = Isolation(**{**FAST.__dict__, **limits})
    return ChildSpec(name, f"tests.isolation._targets:{name}", payload=payload, isolation=isolation)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"memory_mb": 0}, "memory_mb=0"),
        ({"memory_mb": 1.5}, "memory_mb=...) must be an int, got 1.5"),
        ({"cpu_seconds": -1}, "cpu_seconds=-1"),
        ({"start_timeout": float("inf")}, "start_timeout=inf"),
        ({"heartbeat_interval": 1, "heartbeat_timeout": 1}, "must be longer than"),
    ],
)
def test_bad_limits_are_clear_errors(limits: dict[str, Any], message: str) -> None:
    """Isolation(...) refuses a bad value where it is written, naming the field."""
    with pytest.raises((TypeError, ValueError)) as info:
        Isolation(**limits)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"component": ""}, "component must be a non-empty name"),
        ({"factory": "no_colon"}, "must be a 'module:qualname' string"),
        ({"services": {"db": "a:b:c"}}, "services['db'] must be a 'module:qualname'"),
        ({"isolation": {"memory_mb": 64}}, "isolation must be an Isolation"),
    ],
)
def test_bad_specs_are_clear_errors(fields: dict[str, Any], message: str) -> None:
    """ChildSpec(...) refuses malformed names and values, saying what form is expected."""
    arguments: dict[str, Any] = {"component": "Echo", "factory": "tests.isolation._targets:Echo"}
    with pytest.raises((TypeError, ValueError)) as info:
        ChildSpec(**{**arguments, **fields})
    assert message in str(info.value)


async def test_spawn_returns_a_ready_child_that_serves_calls(
    open_fds: None, zygote: Zygote
) -> None:
    """After spawn() the component is built and reachable; stop() ends it gracefully."""
    with anyio.fail_after(10):
        child = await spawn(zygote, spec("Echo", payload={"answer": 42}), {})
        echo = child.proxy(Echo)
        assert await echo.echo("hi") == "hi"
        assert await echo.payload() == {"answer": 42}
        assert await echo.pid() == child.pid != os.getpid()
        end = await child.stop()
    assert end == ChildExit("stopped", "stopped on request", 0, None, None)
    assert await child.stop() == end  # idempotent
    assert await child.wait() == end
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(child.pid).status()


async def test_child_calls_parent_services(zygote: Zygote) -> None:
    """A service the parent passes to spawn() is reached from the child through a proxy."""
    counter = Counter()
    child_spec = ChildSpec(
        "Echo",
        "tests.isolation._targets:Echo",
        services={"counter": "tests.isolation._targets:Counter"},
        isolation=FAST,
    )
    with anyio.fail_after(10):
        child = await spawn(zygote, child_spec, {"counter": counter})
        echo = child.proxy(Echo)
        assert await echo.count(2) == 2
        assert await echo.count(3) == 5
        await child.stop()
    assert counter.total == 5


async def test_run_returning_and_raising_are_reported(zygote: Zygote) -> None:
    """run() returning and run() raising end the child with reason and cause in words."""
    with anyio.fail_after(10):
        returned = await (await spawn(zygote, spec("Returns"), {})).wait()
        raised = await (await spawn(zygote, spec("Raises"), {})).wait()
    assert (returned.reason, returned.cause, returned.exit_code) == (
        "returned",
        "run() returned",
        0,
    )
    assert (raised.reason, raised.cause) == ("raised", "run() raised ValueError: boom")
    assert raised.error is not None and "boom" in str(raised.error)


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (
            "tests.isolation._no_such_module:Thing",
            "No module named 'tests.isolation._no_such_module'",
        ),
        ("tests.isolation._targets:BrokenConstructor", "RuntimeError: constructor exploded"),
        ("tests.isolation._targets:BrokenStartup", "KeyError: 'missing-setting'"),
    ],
)
async def test_start_failures_raise_child_start_error(
    zygote: Zygote, factory: str, reason: str
) -> None:
    """Import, constructor and startup failures become ChildStartError with the reason."""
    with anyio.fail_after(10), pytest.raises(ChildStartError) as info:
        await spawn(zygote, ChildSpec("Broken", factory, isolation=FAST), {})
    assert reason in str(info.value)
    assert "Traceback" in "".join(getattr(info.value, "__notes__", []))
    assert not zygote._children


async def test_ready_timeout_raises_and_kills(zygote: Zygote) -> None:
    """A child that is not READY within start_timeout is killed and reported."""
    with (
        anyio.fail_after(10),
        pytest.raises(ChildStartError, match=r"not become ready within 0\.3 s"),
    ):
        await spawn(zygote, spec("SlowStartup", start_timeout=0.3), {})
    assert not zygote._children


async def test_memory_limit_during_startup_is_a_start_error(zygote: Zygote) -> None:
    """Exceeding memory_mb while starting is a ChildStartError that names the limit."""
    with anyio.fail_after(10), pytest.raises(ChildStartError, match="exceeded memory limit 32 MiB"):
        await spawn(zygote, spec("HungryStartup", memory_mb=32), {})


async def test_children_forked_on_demand(tmp_path: Path, open_fds: None) -> None:
    """Without a spare, every child is forked when asked for, and works the same."""
    zygote = Zygote.start(run_dir=tmp_path / "run", spare=False)
    try:
        with anyio.fail_after(10):
            for _ in range(2):
                child = await spawn(zygote, spec("Echo"), {})
                assert await child.proxy(Echo).echo("on demand") == "on demand"
                assert (await child.stop()).reason == "stopped"
    finally:
        with anyio.fail_after(10):
            await zygote.aclose()


async def test_missing_service_object_is_a_clear_error(zygote: Zygote) -> None:
    """spawn() names a service the spec needs but the caller did not provide, before forking."""
    child_spec = ChildSpec(
        "Echo",
        "tests.isolation._targets:Echo",
        services={"counter": "tests.isolation._targets:Counter"},
    )
    with pytest.raises(ChildStartError, match="no object given for service"):
        await spawn(zygote, child_spec, {})


async def test_payload_that_is_not_msgpack_is_a_clear_error(zygote: Zygote) -> None:
    """A payload msgpack cannot carry is refused before forking, saying what to send instead."""
    with pytest.raises(ChildStartError, match="payload is not msgpack data"):
        await spawn(zygote, spec("Echo", payload=object()), {})
    assert not zygote._children


async def test_large_payload_travels_on_the_channel(zygote: Zygote) -> None:
    """A payload too big to travel with the fork request reaches the factory all the same."""
    payload = {"blob": "x" * 200_000}
    with anyio.fail_after(10):
        child = await spawn(zygote, spec("Echo", payload=payload), {})
        assert await child.proxy(Echo).payload() == payload
        await child.stop()


async def test_lifecycle_hooks_are_not_reachable_through_the_proxy(zygote: Zygote) -> None:
    """A dependent holding the proxy cannot call run(), startup() or shutdown() remotely."""
    with anyio.fail_after(10):
        child = await spawn(zygote, spec("Graceful"), {}, on_output=lambda *line: None)
        proxy = child.proxy(Graceful)
        for hook in ("run", "startup", "shutdown"):
            with pytest.raises(AttributeError):
                getattr(proxy, hook)
        await child.stop()


async def test_aclose_during_spawn_fails_the_spawn(zygote: Zygote) -> None:
    """Closing the zygote while a child is still starting ends it; spawn() says why."""
    starting = asyncio.Event()
    with anyio.fail_after(10):
        spawning = asyncio.ensure_future(
            spawn(zygote, spec("SlowStartup"), {}, on_output=lambda *line: starting.set())
        )
        await starting.wait()
        await zygote.aclose()
        with pytest.raises(ChildStartError, match="before it was ready"):
            await spawning


async def test_stop_escalates_to_sigkill(zygote: Zygote) -> None:
    """A child that ignores the stop request and SIGTERM is killed with SIGKILL, and reaped."""
    lines: list[str] = []
    with anyio.fail_after(10):
        child = await spawn(
            zygote,
            spec("Stubborn"),
            {},
            on_output=lambda component, stream, line: lines.append(line),
        )
        end = await child.stop(timeout=0.3)
    assert end.reason == "stopped"
    assert end.signal == signal.SIGKILL
    assert end.cause == "did not stop within 0.3 s nor on SIGTERM; killed"
    assert "ignoring the stop request" in lines


async def test_graceful_stop_runs_shutdown(zygote: Zygote) -> None:
    """stop() cancels run() and awaits shutdown() in the child before it exits."""
    lines: list[str] = []
    with anyio.fail_after(10):
        child = await spawn(
            zygote,
            spec("Graceful"),
            {},
            on_output=lambda component, stream, line: lines.append(line),
        )
        end = await child.stop()
    assert (end.reason, end.exit_code) == ("stopped", 0)
    assert lines == ["graceful shutdown ran"]


async def test_output_and_logs_are_forwarded(zygote: Zygote) -> None:
    """stdout/stderr lines and stdlib/structlog events reach the callbacks with the name."""
    output: list[tuple[str, str, str]] = []
    logs: list[tuple[str, dict[str, Any]]] = []
    with anyio.fail_after(10):
        child = await spawn(
            zygote,
            spec("Chatty"),
            {},
            on_output=lambda *line: output.append(line),
            on_log=lambda component, event: logs.append((component, event)),
        )
        assert await child.proxy(Chatty).ping() == "pong"
        await child.stop()
    assert ("Chatty", "stdout", "hello on stdout") in output
    assert ("Chatty", "stderr", "hello on stderr") in output
    assert ("Chatty", "stdout", "written by a C library") in output
    events = {event["event"]: (component, event) for component, event in logs}
    component, stdlib = events["stdlib says hi"]
    assert (component, stdlib["level"], stdlib["logger"]) == ("Chatty", "warning", "chatty")
    component, structured = events["structlog says hi"]
    assert (component, structured["level"], structured["answer"]) == ("Chatty", "warning", 42)
    assert structured["obj"].startswith("<object object at")


async def test_a_child_sends_only_the_events_the_parent_logs(zygote: Zygote) -> None:
    """The child forwards only events at or above the level the parent's root logger is at
    when it is spawned: a debug event is never sent to a parent logging at info, whichever
    logging system made it and whatever level its own logger has."""
    logs: list[dict[str, Any]] = []
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        with anyio.fail_after(10):
            child = await spawn(
                zygote, spec("Leveled"), {}, on_log=lambda component, event: logs.append(event)
            )
            assert await child.proxy(Leveled).ping() == "pong"  # its startup() has logged
            await child.stop()
    finally:
        root.setLevel(before)
    assert sorted((event["event"], event["level"]) for event in logs) == [
        ("stdlib info", "info"),
        ("stdlib warning", "warning"),
        ("structlog exception", "error"),
        ("structlog info", "info"),
        ("structlog warning", "warning"),
    ]


async def test_many_children_at_once(open_fds: None, zygote: Zygote) -> None:
    """Several children run side by side and all stop cleanly."""
    with anyio.fail_after(20):
        children = await asyncio.gather(*(spawn(zygote, spec("Echo"), {}) for _ in range(4)))
        assert len({child.pid for child in children}) == 4
        ends = await asyncio.gather(*(child.stop() for child in children))
    assert {end.reason for end in ends} == {"stopped"}


async def test_zygote_aclose_kills_running_children(tmp_path: Path) -> None:
    """Closing the zygote ends its children and resolves their wait()."""
    zygote = Zygote.start(run_dir=tmp_path / "run")
    try:
        with anyio.fail_after(10):
            child = await spawn(zygote, spec("Graceful"), {})
    finally:
        with anyio.fail_after(10):
            await zygote.aclose()
    end = await child.wait()
    assert (end.reason, end.signal) == ("stopped", signal.SIGKILL)


def _write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


async def _start_python(script: Path, *args: str) -> asyncio.subprocess.Process:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


ORPHAN_SCRIPT = """\
import asyncio, sys
from pathlib import Path
from isolation import ChildSpec, Isolation, Zygote, spawn

zygote = Zygote.start(run_dir=Path(sys.argv[1]))

async def main():
    spec = ChildSpec("Graceful", "tests.isolation._targets:Graceful")
    children = [await spawn(zygote, spec, {}) for _ in range(2)]
    print(zygote.pid, *(child.pid for child in children), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_parent_sigkill_leaves_no_orphans(tmp_path: Path) -> None:
    """When the parent is SIGKILLed, the zygote and every child exit within about a second."""
    script = _write_script(tmp_path / "parent.py", ORPHAN_SCRIPT)
    parent = await _start_python(script, str(tmp_path / "run"))
    pidfds: dict[int, int] = {}
    try:
        assert parent.stdout is not None
        with anyio.fail_after(20):
            line = await parent.stdout.readline()
        pids = [int(word) for word in line.split()]
        assert len(pids) == 3, line
        # A pidfd becomes readable when its process exits, even if nobody reaps it.
        pidfds = {pid: os.pidfd_open(pid) for pid in pids}
        parent.kill()
        await parent.wait()
        with anyio.fail_after(2):
            await asyncio.gather(*(_exited(pidfd) for pidfd in pidfds.values()))
    finally:
        if parent.returncode is None:
            parent.kill()
        await parent.communicate()
        for pidfd in pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # only if the test failed
            os.close(pidfd)


async def _exited(pidfd: int) -> None:
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)


SILENT_PARENT_SCRIPT = """\
import asyncio, sys
from pathlib import Path
from isolation import ChildSpec, Isolation, Zygote, spawn

zygote = Zygote.start(run_dir=Path(sys.argv[1]))

async def main():
    limits = Isolation(heartbeat_interval=0.1, heartbeat_timeout=0.5)
    spec = ChildSpec("Graceful", "tests.isolation._targets:Graceful", isolation=limits)
    children = [await spawn(zygote, spec, {}) for _ in range(2)]
    print(*(child.pid for child in children), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_children_of_a_frozen_parent_stop(tmp_path: Path) -> None:
    """A parent that is alive but silent (SIGSTOP) loses its children after heartbeat_timeout."""
    script = _write_script(tmp_path / "parent.py", SILENT_PARENT_SCRIPT)
    parent = await _start_python(script, str(tmp_path / "run"))
    pidfds: dict[int, int] = {}
    try:
        assert parent.stdout is not None
        with anyio.fail_after(20):
            line = await parent.stdout.readline()
        pids = [int(word) for word in line.split()]
        assert len(pids) == 2, line
        pidfds = {pid: os.pidfd_open(pid) for pid in pids}
        parent.send_signal(signal.SIGSTOP)
        with anyio.fail_after(5):
            await asyncio.gather(*(_exited(pidfd) for pidfd in pidfds.values()))
    finally:
        parent.kill()
        await parent.communicate()
        for pidfd in pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # only if the test failed
            os.close(pidfd)


LOGGING_PARENT_SCRIPT = """\
import asyncio, logging, sys
from pathlib import Path

logging.basicConfig(filename=sys.argv[2])  # the log file takes the lowest free descriptor

from isolation import ChildSpec, Zygote, spawn
from tests.isolation._targets import Chatty

zygote = Zygote.start(run_dir=Path(sys.argv[1]))

async def main():
    spec = ChildSpec("Chatty", "tests.isolation._targets:Chatty")
    child = await spawn(zygote, spec, {}, on_output=lambda *line: None)
    for _ in range(3):
        print(await asyncio.wait_for(child.proxy(Chatty).ping(), 5), flush=True)
    print((await child.stop()).cause, flush=True)
    await zygote.aclose()

asyncio.run(main())
"""


async def test_parent_log_files_do_not_break_children(tmp_path: Path) -> None:
    """A log file the parent had open when the zygote was forked is dropped in the child
    without closing a descriptor the child opened since (its event loop, its channel)."""
    script = _write_script(tmp_path / "parent.py", LOGGING_PARENT_SCRIPT)
    process = await _start_python(script, str(tmp_path / "run"), str(tmp_path / "parent.log"))
    try:
        with anyio.fail_after(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["pong", "pong", "pong", "stopped on request"]


ONE_FILE_SCRIPT = """\
import asyncio, os, sys
from pathlib import Path
from isolation import ChildSpec, Zygote, spawn

print("top level ran in", os.getpid(), flush=True)


class Greeter:
    def __init__(self, proxies, payload):
        self.greeting = payload

    async def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}, from {os.getpid()}"


zygote = Zygote.start(run_dir=Path(sys.argv[1]))


async def main():
    child = await spawn(zygote, ChildSpec("Greeter", "__main__:Greeter", payload="hello"), {})
    print(await child.proxy(Greeter).greet("script"), "parent", os.getpid(), flush=True)
    print((await child.stop()).cause, flush=True)
    await zygote.aclose()

asyncio.run(main())
"""


async def test_one_file_script_without_main_guard(tmp_path: Path) -> None:
    """A script with classes in __main__ and no main guard spawns a child of its own class,
    without the child running the script's top level again."""
    script = _write_script(tmp_path / "app.py", ONE_FILE_SCRIPT)
    process = await _start_python(script, str(tmp_path / "run"))
    try:
        with anyio.fail_after(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3, (lines, err.decode())
    assert lines[0].startswith("top level ran in")
    greeting, parent = lines[1].split(" parent ")
    child_pid = int(greeting.rsplit(" ", 1)[1])
    assert greeting.startswith("hello, script, from") and child_pid != int(parent)
    assert lines[2] == "stopped on request"
    assert "top level ran" not in err.decode()

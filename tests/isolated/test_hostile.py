"""A hostile child: every escape the sandbox must stop is tried from inside it, and fails with
the error docs/sandboxing.md names; floods of legal messages from it (which the protocol bounds
for every child) stall nothing. Meanwhile an in-process minion on the same resource misses no
tick, an innocent isolated sibling is never restarted (the parent's heartbeats stay on time),
and the parent's event loop is never late by more than 50 ms (measured).

The system under test: ``Ticker`` (in-process resource, a tick every 2 ms to each subscriber),
``Watcher`` (in-process minion counting ticks), ``Innocent`` (isolated, not sandboxed, reading
ticks through its proxy) and ``Hostile`` (a sandboxed resource, see ``_hostile``), with a
control socket, a state store, a log, a ``.env`` and a ``minions.toml`` holding secrets, and a
secret in the environment of the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from isolation import ComponentCrashed
from isolation._sandbox.kernel import probe_kernel
from minions import Runtime
from minions.ops.control import ControlServer
from minions.workflows.sqlite.store import SQLiteStateStore

from ._hostile import SCRATCH, Hostile, Innocent, Ticker, Watcher

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        probe_kernel().landlock_abi < 6, reason="this kernel cannot enforce a sandbox"
    ),
]

LIMIT = 60.0
SECRET = "sk-live-0123456789abcdef-hostile-test"
EPERM = "errno 1:"
EACCES = "errno 13:"
EAFNOSUPPORT = "errno 97:"


class LoopLag:
    """How late the event loop runs a callback scheduled every millisecond (the worst case)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - due)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@dataclass
class System:
    runtime: Runtime
    hostile: Any
    project: Path
    outside: Path

    def pid(self, name: str) -> int:
        pid = self.runtime.status()[name].pid
        assert pid is not None
        return pid


@pytest.fixture
async def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    monkeypatch.setenv("MINIONS_TEST_API_KEY", SECRET)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"API_KEY={SECRET}\n")
    (project / "minions.toml").write_text(f'[Vault]\ntoken = "{SECRET}"\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text(f"{SECRET}\n")
    store = SQLiteStateStore(project / ".minions" / "state.sqlite3")
    await store.save_context("wf", "orch", SECRET.encode())
    await store.aclose()
    (project / ".minions" / "logs").mkdir(mode=0o700)
    (project / ".minions" / "logs" / "minions.log").write_text(f"{SECRET}\n")
    Watcher.seen, Watcher.gaps, Ticker.missed, Ticker.hostiles = 0, [], 0, []
    Ticker.hostile_started = asyncio.Event()
    runtime = Runtime(project_dir=project, config={}, extensions=[ControlServer()])
    try:
        with anyio.fail_after(LIMIT):
            await runtime.start(Watcher, Innocent, Hostile)
        gc.freeze()  # as run() does once the system has started
        hostile = runtime.instances()["Hostile"]
        yield System(runtime, hostile, project, outside)
    finally:
        gc.unfreeze()
        with anyio.fail_after(LIMIT):
            await runtime.stop()


async def test_every_escape_fails_with_the_documented_error(system: System) -> None:
    """Each attempt, made from inside the sandbox, and what it must end with."""
    project, runtime_pid = system.project, os.getpid()
    private = project / ".minions"
    # Every Unix socket this process (the runtime) listens on: the control socket and each
    # child's channel, wherever their directory is.
    sockets = sorted({Path(c.laddr) for c in psutil.Process().net_connections("unix") if c.laddr})
    assert private / "run" / "control.sock" in sockets and len(sockets) >= 3
    scratch = str(project / SCRATCH)
    listener = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0minions-hostile-test-{os.getpid()}")
    abstract.listen()
    port = listener.getsockname()[1]
    cases: list[tuple[str, Any, str]] = [
        ("signal the runtime", runtime_pid, EPERM),
        ("signal its zygote", None, EPERM),
        ("signal a sibling", system.pid("Innocent"), EPERM),
        ("signal its process group", None, EPERM),
        ("signal through a pidfd", runtime_pid, EPERM),
        ("ptrace the runtime", runtime_pid, EPERM),
        ("read the runtime's memory", runtime_pid, EPERM),
        ("read the runtime's environment", runtime_pid, EACCES),
        ("read its own environment block", None, EACCES),
        ("list a directory", str(project), EACCES),
        ("list a directory", str(private / "run"), EACCES),
        ("write a file", str(project / "evil.py"), EACCES),
        ("write a file", str(private / "run" / "evil"), EACCES),
        ("write a file", "/tmp/minions-hostile-escape", EACCES),
        ("connect to an abstract socket", f"minions-hostile-test-{os.getpid()}", EACCES),
        ("open a tcp connection", port, EAFNOSUPPORT),
        ("send a udp datagram", port, EAFNOSUPPORT),
        ("resolve a host name", "example.com", "not among the hosts this sandbox may reach"),
        ("run a program", None, EPERM),
        ("exec a program", None, EPERM),
        ("fork", None, EPERM),
        ("load a kernel module", None, EPERM),
        ("make a user namespace", None, EPERM),
        ("mount", None, EPERM),
        ("set up io_uring", None, EPERM),
        ("raise its file limit", None, "not allowed to raise maximum limit"),  # EPERM
        ("open many files", None, "errno 24:"),  # EMFILE: Sandbox(max_open_files=64)
        ("write a huge file", scratch, "errno 27:"),  # EFBIG: Sandbox(max_file_mb=1)
        ("no_new_privs", None, "done: 1"),
        ("dumpable", None, "done: 0"),
        ("capabilities", None, "done: (0, 0)"),
        ("environment", None, f"done: {{'TMPDIR': '{scratch}'}}"),
        ("find the secret", SECRET, "done: 0"),
        ("start a thread", None, "done: 'ran'"),  # what stays possible works
        ("write in its scratch directory", scratch, "done: 7"),
    ]
    for path in (
        project / ".env",
        project / "minions.toml",
        private / "state.sqlite3",
        private / "logs" / "minions.log",
        private / "run" / "control.token",
        system.outside / "id_rsa",
        Path("/etc/passwd"),
    ):
        cases.append(("read a file", str(path), EACCES))
    cases += [("connect to a unix socket", str(path), EACCES) for path in sockets]
    try:
        with anyio.fail_after(LIMIT):
            outcomes = [
                (name, target, expected, await system.hostile.attempt(name, target))
                for name, target, expected in cases
            ]
    finally:
        listener.close()
        abstract.close()
    escaped = [
        f"{name}({target!r}): {outcome}"
        for name, target, expected, outcome in outcomes
        if not (outcome.startswith("refused") or expected.startswith("done"))
        or expected not in outcome
    ]
    assert not escaped, "\n".join(escaped)
    leftovers = [Path("/tmp/minions-hostile-escape"), project / "evil.py"]
    assert not any([await asyncio.to_thread(path.exists) for path in leftovers])


async def test_floods_of_legal_messages_stall_nothing(system: System) -> None:
    """A million-message frames (three), 50,000 streams opened without credit, 10,000 calls
    that never answer, 50,000 log events each under a new logger name: the parent's loop is
    never late by 50 ms, the in-process Watcher misses no tick, the isolated sibling keeps its
    heartbeats (no restart), the parent keeps no task or logger per message, and the hostile
    child itself is still served."""
    loggers = len(logging.root.manager.loggerDict)
    innocent = system.pid("Innocent")
    with anyio.fail_after(LIMIT), LoopLag() as lag:
        tasks = len(asyncio.all_tasks())
        seen = Watcher.seen
        await system.hostile.flood("cancels", 1_000_000)
        await system.hostile.flood("streams", 50_000)
        await system.hostile.flood("calls", 10_000)
        await system.hostile.flood("logs", 50_000)
        pid = await system.hostile.ping()  # answered after everything it sent before
        for _ in range(50):  # and the in-process minion still moves: ticks keep coming
            await asyncio.sleep(0.01)
        held = len(asyncio.all_tasks()) - tasks  # at most what Isolation's defaults allow
    assert pid == system.pid("Hostile")
    assert lag.worst < 0.05, f"the parent's event loop was {lag.worst * 1000:.0f} ms late"
    assert Watcher.gaps == [] and Watcher.seen > seen
    status = system.runtime.status()
    assert status["Innocent"].restarts == 0 and status["Innocent"].pid == innocent
    assert status["Hostile"].restarts == 0
    assert len(logging.root.manager.loggerDict) - loggers < 5
    assert held <= 1024 + 256, f"{held} tasks held in the parent for the hostile child"


@pytest.mark.parametrize("kind", ["oversized", "timestamp"])
async def test_frames_the_protocol_refuses_kill_only_their_sender(
    system: System, kind: str
) -> None:
    """A 128 MiB frame is dropped by ZeroMQ before the parent allocates it; msgpack's timestamp
    extension is refused like any other: either way the sender is killed ("protocol") and
    restarted, and nothing else notices."""
    parent = psutil.Process()
    before = parent.memory_info().rss
    hostile = system.pid("Hostile")
    with anyio.fail_after(LIMIT), LoopLag() as lag:
        Ticker.hostile_started.clear()
        with contextlib.suppress(ComponentCrashed):  # it may be killed before it answers
            await system.hostile.garbage(kind)
        await Ticker.hostile_started.wait()  # its next incarnation is starting
        pid = Ticker.hostiles[-1]
    assert pid != hostile and Ticker.hostiles == [hostile, pid]
    assert "protocol" in system.runtime.status()["Hostile"].crash_causes
    assert parent.memory_info().rss - before < 64 * 1024 * 1024
    assert lag.worst < 0.05, f"the parent's event loop was {lag.worst * 1000:.0f} ms late"
    assert Watcher.gaps == []
    assert system.runtime.status()["Innocent"].restarts == 0

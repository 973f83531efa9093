"""The zygote: forks warm children on request, reaps them, reports statuses, cleans up."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from isolation import ChildSpec, ChildStartError, Zygote, spawn
from isolation._zygote import ExitStatus, Forked
from tests.isolation import _targets

pytestmark = pytest.mark.anyio


async def _read_all(fd: int) -> bytes:
    """Everything written to the pipe ``fd`` until its writers close it."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done = loop.create_future()

    def on_readable() -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                loop.remove_reader(fd)
                done.set_result(None)
                return
            chunks.append(chunk)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


async def _run(zygote: Zygote, entry: str, args: Any = None) -> tuple[ExitStatus, str, str]:
    """Fork ``entry(args)`` through the zygote; its exit status, stdout and stderr."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            forked = await zygote.fork(entry, args, [out_w, err_w], "test")
        finally:
            os.close(out_w)
            os.close(err_w)
        os.close(forked.pidfd)
        with anyio.fail_after(10):
            out, err = await asyncio.gather(_read_all(out_r), _read_all(err_r))
            status = await zygote.exit_status(forked.pid)
    finally:
        os.close(out_r)
        os.close(err_r)
    assert status is not None
    return status, out.decode(), err.decode()


async def test_child_exit_status_is_reported(open_fds: None, zygote: Zygote) -> None:
    """A child's exit code reaches the parent through the zygote's report."""
    status, _, _ = await _run(zygote, "tests.isolation._targets:exit_with", {"code": 3})
    assert os.WIFEXITED(status.status) and os.WEXITSTATUS(status.status) == 3


async def test_child_killed_by_signal_is_reported(zygote: Zygote) -> None:
    """A segfaulting child is reported as killed by SIGSEGV; the zygote survives it."""
    status, _, _ = await _run(zygote, "tests.isolation._targets:segfault")
    assert os.WIFSIGNALED(status.status) and os.WTERMSIG(status.status) == signal.SIGSEGV
    status, _, _ = await _run(zygote, "tests.isolation._targets:exit_with", {"code": 0})
    assert os.WIFEXITED(status.status)


async def test_child_stdio_goes_to_the_given_pipes(zygote: Zygote) -> None:
    """print() and raw writes to fds 1 and 2 land in the pipes handed over with the request."""
    status, out, err = await _run(
        zygote, "tests.isolation._targets:print_and_exit", {"stdout": "out!", "stderr": "err!"}
    )
    assert os.WEXITSTATUS(status.status) == 0
    assert out == "out!\nraw line\nno newline at the end"
    assert err == "err!\n"


async def test_children_inherit_loaded_modules(zygote: Zygote) -> None:
    """Children are forks of the warm zygote: modules loaded in the parent are not re-imported."""
    _, out, _ = await _run(zygote, "tests.isolation._targets:report_loaded_pid")
    loaded_in, running_in, parent = (int(word) for word in out.split()[1::2])
    assert loaded_in == _targets.LOADED_IN_PID == os.getpid()
    assert running_in != os.getpid()
    assert parent == zygote.pid


async def test_unknown_entry_point_exits_with_traceback(zygote: Zygote) -> None:
    """A name the child cannot resolve ends it with status 1 and a readable error on stderr."""
    status, _, err = await _run(zygote, "tests.isolation._targets:no_such_function")
    assert os.WEXITSTATUS(status.status) == 1
    assert "'no_such_function' not found" in err


async def test_private_directory_is_0700_and_removed(tmp_path: Path) -> None:
    """Sockets live in a fresh 0700 directory under run_dir, removed by aclose()."""
    zygote = Zygote.start(run_dir=tmp_path / "run")
    try:
        private = zygote.private_dir
        assert private.parent == (tmp_path / "run").resolve()
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    finally:
        await zygote.aclose()
    assert not private.exists()


async def test_deep_run_dir_falls_back_to_a_short_private_directory(tmp_path: Path) -> None:
    """A run_dir too deep for AF_UNIX socket paths still works, with a private temp directory."""
    deep = tmp_path.joinpath(*(["nested-directory-name"] * 6))
    zygote = Zygote.start(run_dir=deep)
    try:
        assert len(str(zygote.private_dir)) < 90
        assert stat.S_IMODE(zygote.private_dir.stat().st_mode) == 0o700
        status, _, _ = await _run(zygote, "tests.isolation._targets:exit_with", {"code": 0})
        assert os.WIFEXITED(status.status)
    finally:
        await zygote.aclose()
    assert not zygote.private_dir.exists()


async def test_aclose_kills_and_reaps_running_children(tmp_path: Path, open_fds: None) -> None:
    """aclose() ends children that would never exit on their own, and the zygote itself."""
    zygote = Zygote.start(run_dir=tmp_path / "run")
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        forked: Forked = await zygote.fork(
            "tests.isolation._targets:wait_for_stdin_forever", None, [out_w, out_w], "test"
        )
        os.close(forked.pidfd)
    finally:
        os.close(out_w)
        with anyio.fail_after(10):
            await zygote.aclose()
    with anyio.fail_after(10):
        assert await _read_all(out_r) == b""  # EOF: the child is gone
    os.close(out_r)
    with pytest.raises(ProcessLookupError):
        os.kill(forked.pid, 0)
    assert zygote.gone


async def test_spawn_after_aclose_is_a_clear_error(tmp_path: Path) -> None:
    """A closed zygote refuses to spawn, saying so."""
    zygote = Zygote.start(run_dir=tmp_path / "run")
    await zygote.aclose()
    await zygote.aclose()  # idempotent
    spec = ChildSpec("Echo", "tests.isolation._targets:Echo")
    with pytest.raises(ChildStartError, match="cannot start Echo: the zygote is closed"):
        await spawn(zygote, spec, {})


async def test_zygote_death_is_noticed(zygote: Zygote) -> None:
    """If the zygote is killed, spawning fails with an error that says it died."""
    # Bind the zygote to this loop with one child first, so that its death is seen at once.
    await _run(zygote, "tests.isolation._targets:exit_with", {"code": 0})
    os.kill(zygote.pid, signal.SIGKILL)
    spec = ChildSpec("Echo", "tests.isolation._targets:Echo")
    assert zygote._gone is not None
    with anyio.fail_after(10):
        await zygote._gone.wait()  # the death shows as EOF on the zygote's channel
    with pytest.raises(ChildStartError, match="has died"):
        await spawn(zygote, spec, {})

"""Off Linux: ``import minions`` works, in-process components run, and isolation refuses with a
clear error instead of failing at import.

The other platform is simulated honestly where the difference lies: a ``sitecustomize`` module
(imported by Python at start-up, before anything of ours) takes away what Linux has and macOS
does not — ``prctl`` in the C library's symbols, ``os.pidfd_open``, ``signal.pidfd_send_signal``
and ``os.pipe2`` — in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

LIMIT = 30.0

NOT_LINUX = """
import ctypes, os, signal

class _LibcWithoutPrctl(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "prctl":
            raise AttributeError("dlsym(RTLD_DEFAULT, prctl): symbol not found")
        return super().__getattr__(name)

ctypes.CDLL = _LibcWithoutPrctl
del os.pidfd_open, signal.pidfd_send_signal, os.pipe2
"""

PROGRAM = """
import asyncio
from pathlib import Path

import isolation
from minions import ComponentOptionsError, Minion, Runtime


class Local(Minion):
    async def run(self):
        print("local ran", flush=True)


class Remote(Minion, isolated=True):
    async def run(self):
        pass


async def main():
    async with Runtime(project_dir=Path.cwd()) as rt:
        await rt.start(Local)
        await rt.wait()
    try:
        async with Runtime(project_dir=Path.cwd()) as rt:
            await rt.start(Remote)
    except ComponentOptionsError as exc:
        print("refused:", exc, flush=True)
    try:
        isolation.Zygote.start(run_dir=Path.cwd() / "run")
    except isolation.IsolationError as exc:
        print("zygote:", exc, flush=True)


asyncio.run(main())
"""


def test_minions_imports_and_refuses_isolation_without_linux_features(tmp_path: Path) -> None:
    """``import minions`` succeeds; an in-process component runs; an isolated one is refused at
    start (a ComponentOptionsError naming what is missing and what to do), and so is a zygote."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(NOT_LINUX))
    (tmp_path / "program.py").write_text(textwrap.dedent(PROGRAM))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    result = subprocess.run(
        [sys.executable, "program.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ours = ("local ran", "refused:", "zygote:")  # the rest is the runtime's log
    lines = [line for line in result.stdout.splitlines() if line.startswith(ours)]
    assert len(lines) == 3, result.stdout
    assert lines[0] == "local ran"
    assert lines[1].startswith("refused: Remote cannot be isolated: isolated components need Linux")
    assert "lacks prctl(PR_SET_PDEATHSIG), pidfds, pipe2" in lines[1]
    assert "run the component in-process" in lines[1]
    assert lines[2].startswith("zygote: isolated components need Linux 5.3 or newer")

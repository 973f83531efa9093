"""``minions redeploy NAME``: new code for one isolated component while the system runs on.

The test project's isolated components call the in-process ``Recorder`` with their code's
version when they start, so the system's stdout shows which code a new child runs. The tests
edit the project's files, redeploy, and watch for the new version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from isolation._sandbox.kernel import probe_kernel

from .conftest import System, cli, status_components, write_project


def components(project: Path) -> dict[str, dict[str, object]]:
    return status_components(project)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_redeploy_runs_the_edited_module_in_a_new_child(running: System) -> None:
    """The component's module is executed anew in the new child; nothing else restarts, and
    the new code stays in force for later restarts."""
    before = components(running.project)
    edit(running.project / "strategy.py", 'VERSION = "v1"', 'VERSION = "v2"')
    result = cli("redeploy", "Strategy", "--project", str(running.project))
    assert result.code == 0, result.err
    pid = int(running.wait_for(r"noted: Strategy v2 pid=(\d+)").group(1))
    assert result.out == f"redeployed Strategy: running, pid {pid}\n"
    after = components(running.project)
    assert after["Strategy"]["pid"] == pid != before["Strategy"]["pid"]
    assert after["Strategy"]["restarts"] == 1
    for other in ("Recorder", "Ticker", "MainWorker"):
        assert after[other]["restarts"] == 0
    assert after["MainWorker"]["pid"] == before["MainWorker"]["pid"]
    # A plain restart afterwards forks from the same zygote, yet keeps the new code.
    assert cli("restart", "Strategy", "--project", str(running.project)).code == 0
    running.wait_for(r"noted: Strategy v2")


def test_redeploy_a_component_defined_in_the_program_file(running: System) -> None:
    """A component of app.py itself: the file runs again under another module name, so its
    ``if __name__ == "__main__": run(...)`` block does not start a second system."""
    edit(running.project / "app.py", 'MAIN_VERSION = "m1"', 'MAIN_VERSION = "m2"')
    result = cli("redeploy", "MainWorker", "--project", str(running.project))
    assert result.code == 0, result.err
    running.wait_for(r"noted: MainWorker m2")
    assert components(running.project)["MainWorker"]["state"] == "running"


def test_redeploy_with_a_top_level_run_call_does_not_nest_a_system(
    project: Path, start_system: type[System]
) -> None:
    """A program file calling ``run(...)`` unguarded at the top level still redeploys: while
    the file runs again in the child, ``run()`` does nothing."""
    edit(project / "app.py", 'if __name__ == "__main__":\n    run(', "if True:\n    run(")
    system = start_system(project)
    system.wait_for(r"noted: MainWorker m1")
    edit(project / "app.py", 'MAIN_VERSION = "m1"', 'MAIN_VERSION = "m3"')
    assert cli("redeploy", "MainWorker", "--project", str(project)).code == 0
    system.wait_for(r"noted: MainWorker m3")
    assert [c["state"] for c in components(project).values()] == ["running"] * 4


def test_redeploying_an_in_process_component_is_refused(running: System) -> None:
    """An in-process component's code is the system's own: a one-line error says why and what
    to do, and nothing is restarted."""
    result = cli("redeploy", "Ticker", "--project", str(running.project))
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "cannot redeploy Ticker: it runs in-process" in result.err
    assert "only isolated components can be redeployed" in result.err
    assert all(c["restarts"] == 0 for c in components(running.project).values())


def test_broken_new_code_fails_the_redeploy_and_the_running_child_stays(
    running: System,
) -> None:
    """New code that does not load — a syntax error, an error at import, a hook that is not
    async (which would freeze the child) — fails the redeploy with that error before anything
    stops: the same child runs on, nothing was restarted or counted as a crash; once the file
    is fixed, the next redeploy runs it."""
    path = running.project / "strategy.py"
    good = path.read_text()
    before = components(running.project)["Strategy"]
    blocking_run = """    def run(self) -> None:
        while True:
            pass
"""
    broken = {
        "SyntaxError": good.replace('VERSION = "v1"', 'VERSION = "v4" +'),
        "NameError": good.replace('VERSION = "v1"', "VERSION = undefined_name"),
        "Strategy.run() is not async": good[: good.index("    async def run")] + blocking_run,
    }
    for error, text in broken.items():
        path.write_text(text)
        result = cli("redeploy", "Strategy", "--project", str(running.project))
        assert result.code == 1
        assert result.err.count("\n") == 1, result.err
        assert "cannot redeploy Strategy: its new code does not load" in result.err
        assert error in result.err and "was left as it is" in result.err
        now = components(running.project)["Strategy"]
        assert now["pid"] == before["pid"] and now["state"] == "running"
        assert (now["restarts"], now["crashes"]) == (0, 0)
    path.write_text(good.replace('VERSION = "v1"', 'VERSION = "v5"'))
    fixed = cli("redeploy", "Strategy", "--project", str(running.project))
    assert fixed.code == 0, fixed.err
    running.wait_for(r"noted: Strategy v5")


SANDBOXED_APP = '''
import asyncio
import os

from isolation import Isolation, Sandbox
from minions import Minion, run
from resources import Recorder

MAIN_VERSION = "s1"


def _try(path):
    try:
        with open(path) as f:
            return "read " + f.read(12)
    except OSError as exc:
        return f"refused errno {exc.errno}"


# Module-level code: it runs again in the sandbox zygote, and at each redeploy in the child.
LEAK = _try(".env")


class Vendor(Minion, isolated=Isolation(sandbox=Sandbox())):
    """Sandboxed, defined in the program file itself."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def run(self) -> None:
        await self._recorder.note(f"Vendor {MAIN_VERSION} leak={LEAK} pid={os.getpid()}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    run(Vendor)
'''


@pytest.mark.skipif(probe_kernel().landlock_abi < 6, reason="this kernel cannot enforce a sandbox")
def test_a_sandboxed_component_of_the_program_file_runs_and_redeploys_in_its_sandbox(
    tmp_path: Path, start_system: type[System]
) -> None:
    """A sandboxed class defined in app.py: its module-level code runs inside the sandbox both
    when the system starts and when the class is redeployed (the project's .env, read at the
    top of the file, stays out of reach), and the system runs on."""
    project = write_project(tmp_path / "proj", app=SANDBOXED_APP)
    (project / ".env").write_text("API_KEY=secret\n")
    system = start_system(project)
    system.wait_for(r"noted: Vendor s1 leak=refused errno 13 pid=\d+")
    edit(project / "app.py", 'MAIN_VERSION = "s1"', 'MAIN_VERSION = "s2"')
    result = cli("redeploy", "Vendor", "--project", str(project))
    assert result.code == 0, result.err
    system.wait_for(r"noted: Vendor s2 leak=refused errno 13 pid=\d+")

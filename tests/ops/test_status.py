"""``minions status``: the table, ``--json``, which project, and the errors when nothing answers.

Each test runs a real system in a subprocess (see ``conftest``) and calls the command against
its control socket; the entry-point tests run the command as a subprocess too.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .conftest import LIMIT, System, cli, write_project

COMPONENT_FIELDS = {
    "name",
    "kind",
    "isolated",
    "state",
    "pid",
    "restarts",
    "crashes",
    "crash_causes",
    "started_at",
    "uptime_seconds",
    "cpu_percent",
    "rss_bytes",
    "last_error",
    "ended_by_crash",
    "replicas",
    "dependencies",
}
SYSTEM_FIELDS = {
    "pid",
    "project",
    "started_at",
    "uptime_seconds",
    "cpu_percent",
    "rss_bytes",
    "stopping",
    "metrics_url",
}


def status_json(project: Path) -> dict[str, object]:
    result = cli("status", "--json", "--project", str(project))
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


def by_name(status: dict[str, object]) -> dict[str, dict[str, object]]:
    components = status["components"]
    assert isinstance(components, list)
    return {c["name"]: c for c in components}


def test_status_table_lists_every_component(running: System) -> None:
    """The table has a row per component in start order with kind, isolation, state and pid."""
    result = cli("status", "--project", str(running.project))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"minions  {running.project}  pid {running.pid}")
    assert lines[2].split()[:6] == ["COMPONENT", "KIND", "ISOLATED", "STATE", "PID", "RESTARTS"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert list(rows) == ["Recorder", "Ticker", "Strategy", "MainWorker"]
    assert rows["Recorder"][1:5] == ["resource", "no", "running", "-"]
    assert rows["Ticker"][1:5] == ["minion", "no", "running", "-"]
    strategy_pid = status_pid(running.project, "Strategy")
    assert rows["Strategy"][1:6] == ["minion", "yes", "running", str(strategy_pid), "0"]
    assert rows["Strategy"][-1] == "MiB"  # RSS of its child, e.g. "31.5 MiB"


def status_pid(project: Path, name: str) -> int:
    pid = by_name(status_json(project))[name]["pid"]
    assert isinstance(pid, int)
    return pid


def test_status_json_has_every_field_with_live_values(running: System) -> None:
    """``--json`` gives the system and each component as data a script can rely on."""
    status = status_json(running.project)
    system = status["system"]
    assert isinstance(system, dict)
    assert set(system) == SYSTEM_FIELDS
    assert system["pid"] == running.pid
    assert system["project"] == str(running.project)
    assert system["metrics_url"] is None  # metrics are off unless configured
    assert system["stopping"] is False
    assert isinstance(system["rss_bytes"], int) and system["rss_bytes"] > 0
    components = by_name(status)
    for component in components.values():
        assert set(component) == COMPONENT_FIELDS
        assert component["state"] == "running"
        assert component["restarts"] == 0 and component["crashes"] == 0
        assert component["last_error"] is None
        uptime = component["uptime_seconds"]
        assert isinstance(uptime, float | int) and 0 <= uptime < LIMIT
    strategy = components["Strategy"]
    assert strategy["isolated"] is True and strategy["kind"] == "minion"
    child = psutil.Process(strategy["pid"])
    assert child.ppid() != running.pid  # a fork of the zygote, not of the system itself
    assert strategy["pid"] in {p.pid for p in psutil.Process(running.pid).children(recursive=True)}
    assert isinstance(strategy["rss_bytes"], int) and strategy["rss_bytes"] > 1_000_000
    assert isinstance(strategy["cpu_percent"], float) and strategy["cpu_percent"] >= 0
    recorder = components["Recorder"]
    assert recorder["isolated"] is False and recorder["kind"] == "resource"
    assert recorder["pid"] is None and recorder["rss_bytes"] is None
    assert {name: c["dependencies"] for name, c in components.items()} == {
        "Recorder": [],
        "Ticker": ["Recorder"],
        "Strategy": ["Recorder"],
        "MainWorker": ["Recorder"],
    }


def test_control_socket_is_owner_only(running: System) -> None:
    """The socket lives in .minions/run, a 0700 directory, and is itself 0600."""
    run_dir = running.project / ".minions" / "run"
    path = run_dir / "control.sock"
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_running_system_is_a_one_line_error(tmp_path: Path) -> None:
    """In a folder where nothing runs, every command says so in one line and exits 1."""
    for command in (["status"], ["status", "--json"], ["restart", "X"], ["stop"], ["top"]):
        result = cli(*command, "--project", str(tmp_path))
        assert result.code == 1
        assert result.out == ""
        assert result.err.count("\n") == 1
        assert "no Minions system is running in" in result.err
        assert "minions run" in result.err  # what to do


def test_stale_socket_left_by_a_killed_system(project: Path, start_system: type[System]) -> None:
    """A killed system leaves its socket behind: the command says it is stale; the next system
    replaces it and answers."""
    first = start_system(project)
    first.wait_for(r"noted: Strategy v1")
    os.kill(first.pid, 9)
    first.wait_exit()
    assert (project / ".minions" / "run" / "control.sock").exists()
    result = cli("status", "--project", str(project))
    assert result.code == 1
    assert "stale" in result.err and result.err.count("\n") == 1
    second = start_system(project)
    second.wait_for(r"noted: Strategy v1")
    assert status_json(project)["system"]["pid"] == second.pid  # type: ignore[index]


def test_a_socket_file_nobody_listens_on_is_stale(tmp_path: Path) -> None:
    """A bare Unix socket file with no listener is reported as stale, not as a hang."""
    run_dir = tmp_path / ".minions" / "run"
    run_dir.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(run_dir / "control.sock"))
    result = cli("restart", "Strategy", "--project", str(tmp_path))
    assert result.code == 1
    assert "is stale" in result.err


def test_project_from_env_and_from_the_current_directory(
    running: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --project the folder is $MINIONS_PROJECT_DIR, else the current directory."""
    monkeypatch.setenv("MINIONS_PROJECT_DIR", str(running.project))
    monkeypatch.chdir(tmp_path)
    assert cli("status").code == 0
    monkeypatch.delenv("MINIONS_PROJECT_DIR")
    assert cli("status").code == 1  # tmp_path runs nothing
    monkeypatch.chdir(running.project)
    assert cli("status").code == 0


def test_unknown_component_names_are_one_line_errors(running: System) -> None:
    """restart, stop and redeploy of a name the system does not run: exit 1, naming what runs."""
    for command in ("restart", "stop", "redeploy"):
        result = cli(command, "Nope", "--project", str(running.project))
        assert result.code == 1
        assert result.err == (
            "minions: no component 'Nope' in this runtime; it runs: "
            "Recorder, Ticker, Strategy, MainWorker\n"
        )
    assert by_name(status_json(running.project))["Strategy"]["restarts"] == 0


def test_deep_project_paths_get_a_short_socket_elsewhere(
    tmp_path: Path, start_system: type[System]
) -> None:
    """A project too deep for a Unix socket path still gets a control socket: in a private
    directory of the system's temporary folder, named by .minions/run/control.endpoint."""
    deep = write_project(tmp_path / ("d" * 60) / ("e" * 60))
    system = start_system(deep)
    system.wait_for(r"noted: Strategy v1")
    pointer = deep / ".minions" / "run" / "control.endpoint"
    endpoint = Path(pointer.read_text().strip())
    assert stat.S_IMODE(endpoint.parent.stat().st_mode) == 0o700
    assert status_json(deep)["system"]["pid"] == system.pid  # type: ignore[index]
    assert cli("stop", "--project", str(deep)).code == 0
    assert system.wait_exit() == 0
    assert not endpoint.exists() and not pointer.exists()


@pytest.mark.parametrize("entry", ["module", "script"])
def test_entry_points_answer_and_exit_with_the_right_status(
    running: System, tmp_path: Path, entry: str
) -> None:
    """``python -m minions`` and the ``minions`` script run the same command: 0 when it
    answers, 1 with a one-line error when nothing runs."""
    if entry == "module":
        command = [sys.executable, "-m", "minions"]
    else:
        command = [str(Path(sys.executable).with_name("minions"))]
    env = {k: v for k, v in os.environ.items() if k != "MINIONS_PROJECT_DIR"}
    ok = subprocess.run(
        [*command, "status", "--json"],
        cwd=running.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["system"]["pid"] == running.pid
    missing = subprocess.run(
        [*command, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LIMIT
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("minions: no Minions system is running in")
    assert missing.stderr.count("\n") == 1


FAILING_APP = """
import asyncio

from minions import Minion, Resource, run


class Steady(Minion):
    async def run(self) -> None:
        print("steady", flush=True)
        await asyncio.Event().wait()


class OneShot(Minion, restart="temporary"):
    async def run(self) -> None:
        raise RuntimeError("broken on purpose")


class Hopeless(Resource, max_restarts=0):
    async def run(self) -> None:
        raise RuntimeError("never works")


class NeedsHopeless(Minion):
    hopeless: Hopeless

    async def run(self) -> None:
        await asyncio.Event().wait()


if __name__ == "__main__":
    run(Steady, OneShot, NeedsHopeless)
"""


def test_status_exits_3_when_a_component_has_failed(
    project: Path, start_system: type[System]
) -> None:
    """Like ``supervisorctl status``: the table or JSON is printed, and the exit status is 3
    when a component was given up or crashed and was not restarted — 0 again is only for a
    system whose every component is running or finished normally."""
    write_project(project, app=FAILING_APP)
    system = start_system(project)
    system.wait_for("steady")
    deadline = time.monotonic() + LIMIT
    while True:
        result = cli("status", "--json", "--project", str(project))
        rows = by_name(json.loads(result.out))
        if rows["Hopeless"]["state"] == "failed" and rows["OneShot"]["state"] == "stopped":
            break
        assert result.code in (0, 3)
        assert time.monotonic() < deadline, rows
    assert result.code == 3, result.err
    assert rows["OneShot"]["ended_by_crash"] is True and rows["Steady"]["ended_by_crash"] is False
    table = cli("status", "--project", str(project))
    assert table.code == 3 and "OneShot" in table.out and "failed" in table.out

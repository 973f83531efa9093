"""``minions restart``, ``minions stop [NAME]`` and ``minions top`` against a running system."""

from __future__ import annotations

from pathlib import Path

from .conftest import System, cli, status_components


def components(project: Path) -> dict[str, dict[str, object]]:
    return status_components(project)


def test_restarting_a_resource_restarts_its_dependents_after_it(running: System) -> None:
    """Restart is dependency-aware: the resource's dependents stop first and start again after
    it (new children for the isolated ones); the command prints the component's new state."""
    before = components(running.project)
    result = cli("restart", "Recorder", "--project", str(running.project))
    assert result.code == 0, result.err
    assert result.out == "restarted Recorder: running\n"
    running.wait_for(r"noted: Ticker running")
    running.wait_for(r"noted: Strategy v1")
    after = components(running.project)
    assert {name: c["restarts"] for name, c in after.items()} == {
        "Recorder": 1,
        "Ticker": 1,
        "Strategy": 1,
        "MainWorker": 1,
    }
    assert all(c["state"] == "running" for c in after.values())
    assert after["Strategy"]["pid"] != before["Strategy"]["pid"]


def test_restarting_an_isolated_minion_leaves_the_rest_running(running: System) -> None:
    """A minion nothing depends on restarts alone, in a new child."""
    before = components(running.project)
    result = cli("restart", "Strategy", "--project", str(running.project))
    assert result.code == 0, result.err
    new_pid = int(running.wait_for(r"noted: Strategy v1 pid=(\d+)").group(1))
    after = components(running.project)
    assert after["Strategy"]["pid"] == new_pid != before["Strategy"]["pid"]
    assert result.out == f"restarted Strategy: running, pid {new_pid}\n"
    assert {name: c["restarts"] for name, c in after.items()} == {
        "Recorder": 0,
        "Ticker": 0,
        "Strategy": 1,
        "MainWorker": 0,
    }
    assert after["MainWorker"]["pid"] == before["MainWorker"]["pid"]


def test_stopping_one_component_keeps_it_stopped_until_restarted(running: System) -> None:
    """``stop NAME`` stops that component (and what depends on it) for good; the rest runs on,
    and ``restart NAME`` brings it back."""
    result = cli("stop", "Strategy", "--project", str(running.project))
    assert result.code == 0, result.err
    assert result.out == "stopped Strategy: stopped\n"
    state = {name: c["state"] for name, c in components(running.project).items()}
    assert state == {
        "Recorder": "running",
        "Ticker": "running",
        "Strategy": "stopped",
        "MainWorker": "running",
    }
    assert components(running.project)["Strategy"]["pid"] is None
    assert cli("restart", "Strategy", "--project", str(running.project)).code == 0
    running.wait_for(r"noted: Strategy v1")
    assert components(running.project)["Strategy"]["state"] == "running"


def test_stop_without_a_name_stops_the_system_cleanly(running: System) -> None:
    """``minions stop`` is a graceful stop: answered once everything has stopped; the program
    exits 0 and removes its control socket."""
    result = cli("stop", "--project", str(running.project))
    assert result.code == 0, result.err
    assert result.out == f"stopped the system in {running.project}\n"
    assert running.wait_exit() == 0
    assert not (running.project / ".minions" / "run" / "control.sock").exists()
    assert cli("status", "--project", str(running.project)).code == 1


def test_top_refreshes_the_table(running: System) -> None:
    """``top --iterations 2`` shows the status table twice, then exits 0."""
    result = cli("top", "--iterations", "2", "--interval", "0.2", "--project", str(running.project))
    assert result.code == 0, result.err
    header = f"minions  {running.project}  pid {running.pid}"
    lines = result.out.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert len(starts) == 2
    for start in starts:
        table = lines[start + 2 : start + 7]
        assert [line.split()[0] for line in table] == [
            "COMPONENT",
            "Recorder",
            "Ticker",
            "Strategy",
            "MainWorker",
        ]


def test_top_stops_with_a_clear_error_when_the_system_goes_away(tmp_path: Path) -> None:
    """``top`` against nothing fails like ``status`` does, and rejects a senseless count."""
    result = cli("top", "--iterations", "1", "--project", str(tmp_path))
    assert result.code == 1 and "no Minions system is running" in result.err
    bad = cli("top", "--iterations", "0", "--project", str(tmp_path))
    assert bad.code == 1 and "--iterations must be at least 1" in bad.err

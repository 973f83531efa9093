"""``minions dashboard`` against a real system, and a system serving its own dashboard.

The command runs as a subprocess, as a user runs it: it prints the address with its token,
serves the system's data over the control socket, follows the system when it stops and when
another one starts in the folder, and ends cleanly on SIGTERM. ``run(dashboard_port=...)``
serves the same page from the system itself; ``minions dashboard --url`` prints its address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minions.core.errors import ConfigError
from minions.ops.settings import resolve_settings

from .conftest import LIMIT, System, cli, wait_all_running
from .webclient import BlockingEventStream, get, post_action

ADDRESS = re.compile(r"^Dashboard of (.+): http://127\.0\.0\.1:(\d+)/#token=([\w-]+)$")


class Command:
    """``minions dashboard`` running in a subprocess of its own process group."""

    def __init__(self, project: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "minions", "dashboard", "--project", str(project)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().rstrip("\n")
        found = ADDRESS.match(line)
        assert found, f"unexpected first line {line!r}; stderr: {self._stderr()}"
        assert found.group(1) == str(project)
        self.port, self.token = int(found.group(2)), found.group(3)

    def _stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=LIMIT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=LIMIT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start_command() -> Iterator[type[Command]]:
    started: list[Command] = []

    class _Tracked(Command):
        def __init__(self, project: Path) -> None:
            super().__init__(project)
            started.append(self)

    try:
        yield _Tracked
    finally:
        for command in started:
            command.close()


def test_the_command_serves_the_system_and_follows_it_across_a_restart(
    running: System, start_system: type[System], start_command: type[Command]
) -> None:
    """The page's feed carries the components with their dependencies, an operation's steps as
    they happen, the system stopping (the page is told it does not answer) and a new system in
    the folder (followed again, its events from the start). SIGTERM ends the command with 0."""
    command = start_command(running.project)
    assert get(command.port, "/api/state")[0] == 401
    stream = BlockingEventStream(command.port, command.token)
    try:
        tick = stream.until("tick", lambda t: len(t["components"]) == 4)
        assert tick["system"]["pid"] == running.pid
        deps = {c["name"]: c["dependencies"] for c in tick["components"]}
        assert deps == {
            "Recorder": [],
            "Ticker": ["Recorder"],
            "Strategy": ["Recorder"],
            "MainWorker": ["Recorder"],
        }
        assert cli("restart", "Strategy", "--project", str(running.project)).code == 0
        restarting = stream.until("lifecycle", lambda e: e["kind"] == "restarting")
        assert restarting["component"] == "Strategy"
        assert restarting["reason"] == "restart requested"
        started = stream.until("lifecycle", lambda e: e["kind"] == "started")
        assert started["component"] == "Strategy" and started["pid"] > 0
        # The page's restart button: the same operation, through the command's server.
        answer = post_action(command.port, command.token, "restart", "MainWorker")
        assert answer["ok"] is True and answer["result"]["restarts"] == 1
        missing = post_action(command.port, command.token, "stop", "Nope")
        assert missing["error"]["kind"] == "unknown_component"

        assert cli("stop", "--project", str(running.project)).code == 0
        gone = stream.until("reachability", lambda r: r["reachable"] is False)
        assert "no Minions system is running" in gone["problem"]

        assert running.wait_exit() == 0
        again = start_system(running.project)
        again.wait_for(r"noted: Strategy v1")
        again.wait_for(r"noted: MainWorker m1")
        wait_all_running(running.project)
        back = stream.until("lifecycle", lambda e: e["kind"] == "started")
        assert stream.until("tick")["system"]["pid"] == again.pid
        assert back["seq"] <= 8  # the new system's events, from its first ones
    finally:
        stream.close()
    command.process.send_signal(signal.SIGTERM)
    assert command.process.wait(timeout=LIMIT) == 0


def test_the_command_says_when_there_is_no_system(tmp_path: Path) -> None:
    """No system in the folder: one line and exit status 1, nothing served."""
    result = cli("dashboard", "--project", str(tmp_path))
    assert result.code == 1
    assert result.err.startswith(f"minions: no Minions system is running in {tmp_path}")
    assert result.err.count("\n") == 1
    result = cli("dashboard", "--url", "--project", str(tmp_path))
    assert result.code == 1
    assert "serves a dashboard" in result.err and "minions dashboard" in result.err
    bad = cli("dashboard", "--port", "70000", "--project", str(tmp_path))
    assert bad.code == 2 and "expected a port number from 0 to 65535" in bad.err


def test_a_system_serves_its_own_dashboard_when_given_a_port(
    project: Path, start_system: type[System]
) -> None:
    """``minions run --dashboard-port 0`` serves it from the system; ``minions dashboard
    --url`` prints its address with the token, which opens the data; the log has the address
    without the token. Calls are measured (the dashboard charts them) though the metrics
    endpoint is off."""
    system = start_system(project, "--dashboard-port", "0")
    system.wait_for(r"noted: Strategy v1")
    wait_all_running(project)
    result = cli("dashboard", "--url", "--project", str(project))
    assert result.code == 0, result.err
    found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/#token=([\w-]+)\n", result.out)
    assert found, result.out
    port, token = int(found.group(1)), found.group(2)
    status, state = get(port, "/api/state", token)
    assert status == 200 and state["reachable"] is True
    stream = BlockingEventStream(port, token)
    try:
        tick = stream.until("tick", lambda t: bool(t["calls"]))
        assert tick["measured"] is True
        assert {(c["target"], c["method"]) for c in tick["calls"]} >= {("Recorder", "note")}
        assert tick["system"]["metrics_url"] is None
    finally:
        stream.close()
    log = (project / ".minions" / "logs" / "minions.log").read_text()
    assert f"http://127.0.0.1:{port}/" in log and token not in log


def test_where_the_dashboard_port_comes_from(tmp_path: Path) -> None:
    """As the metrics port: the environment, then run()'s argument, then [minions] of the
    config; a bad value names where it came from."""
    (tmp_path / "minions.toml").write_text("[minions]\ndashboard_port = 8765\n")
    assert resolve_settings(project_dir=tmp_path, environ={}).dashboard_port == 8765
    explicit = resolve_settings(project_dir=tmp_path, environ={}, dashboard_port=0)
    assert explicit.dashboard_port == 0
    environ = {"MINIONS_DASHBOARD_PORT": "9000"}
    chosen = resolve_settings(project_dir=tmp_path, environ=environ, dashboard_port=0)
    assert chosen.dashboard_port == 9000
    assert resolve_settings(project_dir=tmp_path / "none", environ={}).dashboard_port is None
    with pytest.raises(ConfigError, match=r"\$MINIONS_DASHBOARD_PORT must be a port number"):
        resolve_settings(project_dir=tmp_path, environ={"MINIONS_DASHBOARD_PORT": "http"})
    (tmp_path / "minions.toml").write_text("[minions]\ndashboard_port = 70000\n")
    with pytest.raises(ConfigError, match=r"dashboard_port in \[minions\] of .*minions.toml"):
        resolve_settings(project_dir=tmp_path, environ={})

"""``minions logs [NAME] [-f]``: the structured log file, whole, per component, and followed."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import LIMIT, System, cli


def test_logs_of_one_component_show_only_its_events(running: System) -> None:
    """Readable lines carry the component's name; a child's events are under it too."""
    result = cli("logs", "Strategy", "--project", str(running.project))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines, "no events for Strategy"
    assert all(line.split()[2] == "Strategy" for line in lines)
    events = [line.split()[3] for line in lines]
    assert "component.starting" in events and "component.started" in events
    everything = cli("logs", "--project", str(running.project)).out.splitlines()
    assert len(everything) > len(lines)
    assert any(" runtime.started" in line for line in everything)


def test_logs_json_and_last_lines(running: System) -> None:
    """``--json`` prints the file's own JSON lines; ``-n`` keeps the last N."""
    result = cli("logs", "Recorder", "--json", "-n", "2", "--project", str(running.project))
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    assert len(events) == 2
    assert all(event["component"] == "Recorder" for event in events)


def test_logs_of_an_unknown_component_is_a_one_line_error(running: System) -> None:
    """A name neither the running system nor the log knows: exit 1, listing the known ones."""
    result = cli("logs", "Nope", "--project", str(running.project))
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "no component 'Nope'" in result.err and "Strategy" in result.err


def test_logs_without_a_log_file(tmp_path: Path) -> None:
    """A folder where no system ever ran has no log: a clear error, exit 1."""
    result = cli("logs", "--project", str(tmp_path))
    assert result.code == 1
    assert "no log file at" in result.err


def test_logs_of_a_stopped_system_are_still_readable(running: System) -> None:
    """The log outlives the system: a component's events can be read after it stopped."""
    assert cli("stop", "--project", str(running.project)).code == 0
    assert running.wait_exit() == 0
    result = cli("logs", "Strategy", "--project", str(running.project))
    assert result.code == 0, result.err
    assert "component.stopped" in result.out


def test_logs_follow_shows_new_events_as_they_happen(running: System) -> None:
    """``logs NAME -f`` keeps running and prints the component's new events: here the ones a
    restart writes."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "minions", "logs", "Strategy", "-f", "-n", "1"],
        env={**os.environ, "MINIONS_PROJECT_DIR": str(running.project)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=LIMIT)  # the one line of history: the follower is reading
        assert first is not None and " Strategy " in first
        assert cli("restart", "Strategy", "--project", str(running.project)).code == 0
        seen: list[str] = []
        while not any("component.started" in line for line in seen):
            try:
                line = lines.get(timeout=LIMIT)
            except queue.Empty:
                pytest.fail(f"followed output stopped at: {seen}")
            assert line is not None, f"the follower ended: {seen}"
            assert " Strategy " in line
            seen.append(line)
        assert any("component.restarting" in line for line in seen)
    finally:
        follower.kill()
        follower.wait(timeout=LIMIT)
        assert follower.stdout is not None and follower.stderr is not None
        follower.stdout.close()
        follower.stderr.close()
        reader.join(timeout=LIMIT)

"""The workflow examples run as programs: hello world (Gru) and heartbeat (run(...))."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("open_fds")

REPO = Path(__file__).resolve().parents[2]
LIMIT = 30.0


class Example:
    """``python -m examples.<name>`` in its own project folder; killed if the test fails."""

    def __init__(self, tmp_path: Path, name: str, *args: str, **env: str) -> None:
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"examples.{name}", *args],
                cwd=REPO,
                env={**os.environ, "MINIONS_PROJECT_DIR": str(tmp_path), **env},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[str] = []

    def __enter__(self) -> "Example":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=LIMIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def until_line(self, text: str) -> None:
        """Read stdout until a line starts with ``text`` (the program's pace, no sleeps)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.lines[-1].startswith(text):
                return
        pytest.fail(f"the program ended without printing {text!r}: {self.stderr()[-2000:]}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stdout is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stdout)
        return self.proc.wait(timeout=LIMIT)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_hello_world_greets_in_order_and_stops_on_sigint(tmp_path: Path) -> None:
    """Each greeting is a two-step workflow; Ctrl-C shuts Gru down cleanly (exit 0), with the
    checkpoints in the project's .minions folder."""
    with Example(tmp_path, "hello_world", "--interval", "0.02") as hello:
        hello.until_line("hello world #3")
        assert hello.interrupt() == 0, hello.stderr()[-2000:]
    greetings = [line for line in hello.lines if line.startswith("hello world #")]
    assert greetings[:3] == ["hello world #1", "hello world #2", "hello world #3"]
    assert "Traceback" not in hello.stderr()
    assert integrity(tmp_path / ".minions" / "state.sqlite3") == "ok"


@pytest.mark.timeout(60)
def test_hello_world_stops_by_itself_after_seconds(tmp_path: Path) -> None:
    """With --seconds the program shuts Gru down and exits 0 on its own."""
    with Example(tmp_path, "hello_world", "--seconds", "0.5", "--interval", "0.05") as hello:
        assert hello.proc.wait(timeout=LIMIT) == 0, hello.stderr()[-2000:]
    assert "gru.shut_down" in hello.stderr()


@pytest.mark.timeout(60)
def test_heartbeat_runs_services_and_workflows_in_one_runtime(tmp_path: Path) -> None:
    """run(CheckBeat, Reporter): the workflow minion records heartbeats in the resource the
    reporter service reads, and SIGINT stops both cleanly."""
    with Example(
        tmp_path, "heartbeat", "--log-level", "warning", MINIONS_HEARTBEATS__INTERVAL="0.01"
    ) as beats:
        beats.until_line("report: 5 heartbeats")
        assert beats.interrupt() == 0, beats.stderr()[-2000:]
    recorded = [line for line in beats.lines if line.startswith("heartbeat ")]
    assert recorded[:5] == [f"heartbeat {n} recorded ({n} so far)" for n in range(1, 6)]
    assert integrity(tmp_path / ".minions" / "state.sqlite3") == "ok"

"""``minions workflows``: list, show, retry and cancel durable workflows, live and from the store.

A real system runs ``app.py`` (below) in a subprocess: its pipeline produces three jobs; job 1
succeeds, job 2 fails while a file named ``broken`` exists (kept for a retry: ``keep_failed``),
job 3 waits forever in its second step. The tests drive the ``minions`` command against it, then
against its state store file once it has stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .conftest import LIMIT, System, cli, write_project

APP = '''
import asyncio
import os
from dataclasses import dataclass, field

from minions import Minion, Pipeline, minion_step, run


@dataclass
class Job:
    n: int
    payload: str = ""


@dataclass
class Progress:
    done: list[str] = field(default_factory=list)


class Jobs(Pipeline[Job]):
    """Jobs 1, 2 and 3 at the first start only (an outside source that does not replay)."""

    def __init__(self) -> None:
        self._n = 0 if not os.path.exists("produced") else 3

    async def produce_event(self) -> Job:
        if self._n >= 3:
            open("produced", "w").close()
            await asyncio.Event().wait()
        self._n += 1
        return Job(self._n, f"job-{self._n}")


class Worker(Minion[Job, Progress]):
    jobs: Jobs

    @minion_step
    async def prepare(self) -> None:
        self.context.done.append("prepare")

    @minion_step
    async def work(self) -> None:
        n = self.event.n
        if n == 2 and os.path.exists("broken"):
            raise ValueError("job 2 is broken")
        if n == 3:
            print("holding 3", flush=True)
            await asyncio.Event().wait()
        print(f"done {n}", flush=True)


if __name__ == "__main__":
    run(Worker)
'''


def workflow_project(tmp_path: Path, store: str | None = None) -> Path:
    table = "[WorkflowStore]\nkeep_failed = true\n" + (f'path = "{store}"\n' if store else "")
    project = write_project(tmp_path / "proj", app=APP, **{"minions.toml": table})
    (project / "broken").write_text("")
    return project


def listed(project: Path, *args: str) -> dict[str, Any]:
    result = cli("workflows", "--json", "--project", str(project), *args)
    assert result.code == 0, result.err
    answer: dict[str, Any] = json.loads(result.out)
    return answer


def wait_listed(project: Path, check: Any) -> dict[str, Any]:
    """Ask until the listing satisfies ``check`` (the failed job is kept a moment after it
    failed, and nothing prints it)."""
    deadline = time.monotonic() + LIMIT
    while True:
        answer = listed(project)
        if check(answer["workflows"]):
            return answer
        assert time.monotonic() < deadline, f"never satisfied: {answer}"


def by_job(rows: list[dict[str, Any]], project: Path) -> dict[int, dict[str, Any]]:
    """Rows by job number, read from each workflow's checkpoint (``show``)."""
    found = {}
    for row in rows:
        shown = json.loads(cli("workflows", "show", row["workflow_id"], "--json",
                               "--project", str(project)).out)  # fmt: skip
        found[shown["event"]["n"]] = row
    return found


def test_a_running_systems_workflows_are_listed_shown_retried_and_cancelled(
    tmp_path: Path, start_system: type[System]
) -> None:
    """Live: the table shows each workflow's step, state, attempts and last error; ``show``
    decodes its checkpoint; a kept failed workflow is retried and succeeds; a running one is
    cancelled and counted as aborted; retrying a running one, a bad id and bad words are one
    line and a non-zero status."""
    project = workflow_project(tmp_path)
    system = start_system(project, "--metrics-port", "0")
    system.wait_for(r"done 1")
    system.wait_for(r"holding 3")
    answer = wait_listed(project, lambda rows: len(rows) == 2)
    assert answer["live"] is True
    jobs = by_job(answer["workflows"], project)
    held, failed = jobs[3], jobs[2]
    assert (held["state"], held["step"], held["step_index"], held["attempts"]) == (
        "running",
        "work",
        1,
        1,
    )
    assert (failed["state"], failed["last_error"]) == ("failed", "ValueError: job 2 is broken")
    assert held["minion"] == "Worker" and held["age_seconds"] < LIMIT * 2

    table = cli("workflows", "--project", str(project))
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0] == f"{project}  live"
    assert lines[2].split() == [
        "WORKFLOW", "ORCHESTRATION", "MINION", "STEP", "STATE", "AGE", "ATTEMPTS", "LAST",
        "ERROR",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith(failed["workflow_id"]))
    assert "2/2 work" in row and "failed" in row and row.endswith("ValueError: job 2 is broken")
    assert len(listed(project, "Worker")["workflows"]) == 2
    assert cli("workflows", "elsewhere", "--project", str(project)).out.endswith(
        "No workflows of 'elsewhere'.\n"
    )

    shown = cli("workflows", "show", failed["workflow_id"][-8:], "--project", str(project))
    assert shown.code == 0, shown.err
    assert "next step      2 of 2: work" in shown.out
    assert '"payload": "job-2"' in shown.out and '"prepare"' in shown.out
    assert "state          failed  (live)" in shown.out

    refused = cli("workflows", "retry", held["workflow_id"], "--project", str(project))
    assert refused.code == 1 and "nothing to retry" in refused.err
    assert refused.err.count("\n") == 1
    unknown = cli("workflows", "cancel", "ffffffffffff", "--project", str(project))
    assert unknown.code == 1 and "no workflow 'ffffffffffff'" in unknown.err
    assert cli("workflows", "retry", "--project", str(project)).code == 2

    (project / "broken").unlink()
    retried = cli("workflows", "retry", failed["workflow_id"], "--project", str(project))
    assert retried.code == 0, retried.err
    assert "resumed at step 'work' (attempt 2)" in retried.out
    system.wait_for(r"done 2")

    cancelled = cli("workflows", "cancel", held["workflow_id"], "--project", str(project))
    assert cancelled.code == 0, cancelled.err
    assert "cancelled in step 'work': counted as aborted" in cancelled.out
    assert listed(project)["workflows"] == []
    metrics = cli("status", "--metrics", "--project", str(project)).out
    aborted = [m for m in metrics.splitlines() if m.startswith("minions_workflows_aborted_total")]
    assert len(aborted) == 1 and aborted[0].endswith(" 1.0")
    failures = [m for m in metrics.splitlines() if m.startswith("minions_workflows_failed_total")]
    assert failures[0].endswith(" 1.0")


def test_a_stopped_systems_workflows_are_read_from_its_store(
    tmp_path: Path, start_system: type[System]
) -> None:
    """Down: the store named in minions.toml is read read-only (its bytes do not change):
    listed, shown as plain data; retry needs the system; cancel deletes under the store's
    lock. The next start resumes the interrupted workflow as attempt 2, and the kept failed
    one stays failed."""
    project = workflow_project(tmp_path, store="data/wf.sqlite3")
    system = start_system(project)
    system.wait_for(r"holding 3")
    wait_listed(project, lambda rows: len(rows) == 2)
    assert cli("stop", "--project", str(project)).code == 0
    system.wait_exit()

    store = project / "data" / "wf.sqlite3"
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    answer = listed(project)
    assert (answer["live"], answer["store"]) == (False, str(store))
    jobs = by_job(answer["workflows"], project)
    assert sorted(jobs) == [2, 3]
    assert (jobs[3]["state"], jobs[3]["step"], jobs[3]["attempts"]) == ("saved", "work", 1)
    assert (jobs[2]["state"], jobs[2]["last_error"]) == ("failed", "ValueError: job 2 is broken")
    assert jobs[3]["minion"].endswith("Worker")
    table = cli("workflows", "--project", str(project))
    assert table.out.splitlines()[0] == f"{project}  store {store}"
    shown = cli("workflows", "show", jobs[3]["workflow_id"], "--json", "--project", str(project))
    detail = json.loads(shown.out)
    assert detail["live"] is False
    assert (detail["event"], detail["context"]) == ({"n": 3, "payload": "job-3"},
                                                    {"done": ["prepare"]})  # fmt: skip
    assert (detail["event_type"], detail["context_type"], detail["format"]) == (
        "Job",
        "Progress",
        3,
    )
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before

    retry = cli("workflows", "retry", jobs[2]["workflow_id"], "--project", str(project))
    assert retry.code == 1 and "needs the system running" in retry.err
    missing = cli("workflows", "--store", str(tmp_path / "none.sqlite3"), "--project", str(project))
    assert missing.code == 1 and "no state store at" in missing.err
    cancel = cli("workflows", "cancel", jobs[2]["workflow_id"], "--project", str(project))
    assert cancel.code == 0 and "its checkpoint is deleted" in cancel.out
    assert [r["workflow_id"] for r in listed(project)["workflows"]] == [jobs[3]["workflow_id"]]

    (project / "broken").unlink()
    system = start_system(project)
    system.wait_for(r"holding 3")
    (resumed,) = listed(project)["workflows"]
    assert (resumed["workflow_id"], resumed["state"], resumed["attempts"]) == (
        jobs[3]["workflow_id"],
        "running",
        2,
    )


def test_a_store_file_is_read_while_its_system_writes(
    tmp_path: Path, start_system: type[System]
) -> None:
    """``--store`` reads the file of a running system without getting in its way: the listing
    shows what is saved, and the system goes on (a retry and its checkpoints after it). A
    cancel there is refused, since the system holds the store (its next checkpoint would bring
    the row back): it names the system and says to ask it."""
    project = workflow_project(tmp_path)
    system = start_system(project)
    system.wait_for(r"holding 3")
    rows = wait_listed(project, lambda rows: len(rows) == 2)["workflows"]
    failed = next(r for r in rows if r["state"] == "failed")
    path = str(project / ".minions" / "state.sqlite3")
    from_file = listed(project, "--store", path)
    assert from_file["live"] is False
    assert sorted(r["state"] for r in from_file["workflows"]) == ["failed", "saved"]
    refused = cli("workflows", "cancel", failed["workflow_id"], "--store", path)
    assert refused.code == 1 and f"pid {system.pid}" in refused.err, refused.err
    assert "ask that system: 'minions workflows cancel ID --project DIR'" in refused.err
    assert len(listed(project, "--store", path)["workflows"]) == 2
    (project / "broken").unlink()
    assert cli("workflows", "retry", failed["workflow_id"], "--project", str(project)).code == 0
    system.wait_for(r"done 2")

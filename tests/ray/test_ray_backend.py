"""The Ray backend against a real local Ray: replicas as Ray actors, reached through the same
typed proxies, supervised by Minions.

The Ray instance is the module's (see conftest.py): Minions finds this process connected and
uses that connection. One test runs a program that starts (and stops) a Ray of its own, one
that joins the module's by address.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from minions import ComponentState, RemoteError, Runtime, WorkflowStore

from ._targets import Filler, Notes, Pricer, reset_notes

pytestmark = pytest.mark.anyio

LIMIT = 60.0
ROOT = Path(__file__).resolve().parents[2]


async def test_calls_streams_and_callbacks_reach_replicas_on_ray(tmp_path: Path) -> None:
    """Dependents call Ray replicas through one proxy like any isolated resource: typed calls
    spread over both actors, a stream, a typed remote error, and calls from the actors back to
    this process's resources; status names each replica's node."""
    reset_notes(wanted=2)
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Pricer)
            pricer = rt.instances()["Pricer"]
            quotes = await asyncio.gather(*(pricer.price("ETH", n) for n in range(8)))
            assert [q["total"] for q in quotes] == [n * 3 for n in range(8)]
            assert {q["replica"] for q in quotes} == {0, 1}
            assert [i async for i in pricer.ticks(5)] == [0, 1, 2, 3, 4]
            with pytest.raises(ValueError, match="refused on Ray") as raised:
                await pricer.fail()
            assert isinstance(raised.value, RemoteError)
            await pricer.tell("one")
            await pricer.tell("two")
            await Notes.enough.wait()
            status = rt.status()["Pricer"]
    pids = {q["pid"] for q in quotes}
    assert len(pids) == 2 and os.getpid() not in pids
    assert [what for what, _ in Notes.seen] == ["one", "two"]
    assert status.state is ComponentState.RUNNING
    assert [r.pid for r in status.replicas] != [None, None]
    assert all((r.node or "").startswith("127.0.0.1/") for r in status.replicas)


async def test_a_killed_ray_actor_is_replaced_under_the_minions_policy(tmp_path: Path) -> None:
    """SIGKILL one replica's actor process: Ray reports its death, Minions restarts it in a new
    actor (counted against the replica's own intensity), and calls go on meanwhile."""
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Pricer)
            pricer = rt.instances()["Pricer"]
            before = rt.status()["Pricer"].replicas
            original = {r.pid for r in before}
            victim = before[0].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            while True:  # each call is answered by a live replica, until the replacement's
                pid = await pricer.where()
                assert pid != victim
                if pid not in original:
                    break
            after = rt.status()["Pricer"].replicas[0]
    assert after.pid == pid and after.state is ComponentState.RUNNING
    assert (after.restarts, after.crashes) == (1, 1)
    assert "Ray actor died" in (after.last_error or "")


async def test_a_workflow_minion_runs_its_steps_on_ray(tmp_path: Path) -> None:
    """A workflow minion with backend="ray": the store and checkpoints here, the steps in Ray
    actors, every workflow done with the context its steps left."""
    reset_notes(wanted=20)
    config: dict[str, Any] = {"WorkflowStore": {"path": str(tmp_path / "state.sqlite3")}}
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, config=config) as rt:
            await rt.start(Filler)
            await Notes.enough.wait()
            store = rt.instances()["WorkflowStore"]
            assert isinstance(store, WorkflowStore)
            (counters,) = store.services.counters.values()
            stats = await counters.wait_until(lambda s: s.finished == 20)
    assert stats.succeeded == 20
    assert sorted(what for what, _ in Notes.seen) == sorted(
        f"booked {n} {n * 10}" for n in range(20)
    )
    assert os.getpid() not in {pid for _, pid in Notes.seen}


def _program(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.ray._program"],
        cwd=ROOT,
        env={**os.environ, "MINIONS_PROJECT_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )


def test_a_program_joins_a_running_cluster_by_address(tmp_path: Path) -> None:
    """With $MINIONS_RAY_ADDRESS, a program's Ray replicas run on that cluster (here the
    tests'), and leave it running when the program ends."""
    import ray

    address = ray.get_runtime_context().gcs_address
    done = _program(tmp_path, MINIONS_RAY_ADDRESS=address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PRICED 15 by pid" in done.stdout
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2.0


def test_a_program_without_a_cluster_starts_a_local_ray_and_stops_it(tmp_path: Path) -> None:
    """Without an address, a program's Ray replicas run on a local Ray that Minions starts for
    it and stops at the end: nothing of it is left, not even its directory."""
    before = set(glob.glob("/tmp/minions-ray-*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.ray._program"],
        cwd=ROOT,
        env={**env, "MINIONS_PROJECT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PRICED 15 by pid" in done.stdout
    assert set(glob.glob("/tmp/minions-ray-*")) == before


async def test_ray_replicas_scale_up_and_down(tmp_path: Path) -> None:
    """Runtime.scale adds a Ray replica while the others serve, and drains the extra ones."""
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Pricer)
            pricer = rt.instances()["Pricer"]
            await rt.scale("Pricer", 3)
            three = rt.status()["Pricer"].replicas
            quotes = await asyncio.gather(*(pricer.price("BTC", n) for n in range(12)))
            await rt.scale("Pricer", 1)
            one = rt.status()["Pricer"].replicas
            assert (await pricer.price("BTC", 1))["pid"] == one[0].pid
    assert [r.state for r in three] == [ComponentState.RUNNING] * 3
    assert {q["replica"] for q in quotes} == {0, 1, 2}
    assert [r.index for r in one] == [0]

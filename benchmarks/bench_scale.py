"""Scale-out: what replicas buy on this machine, and what the Ray backend costs per call.

Every row is measured in one run, beside its baseline from the same run, as a ratio:

- CPU-bound calls: a pure-Python function of about 2 ms, called by 64 concurrent callers
  through one proxy. Calls per second with ``replicas=2``, as a ratio to ``replicas=1`` (target
  at least 1.8x on 2 cores; the limit is 2x), and to a ``ProcessPoolExecutor`` with 2 workers
  doing the same work for the same callers through ``loop.run_in_executor`` (what an async
  program would otherwise write; target at least 1.0x).
- Workflows per second of a workflow minion whose one step is 2 ms of CPU, ``replicas=2`` as a
  ratio to ``replicas=1`` (target at least 1.7x); the parent keeps the store (SQLite) and every
  checkpoint.
- Ray: the round trip of a proxied call into a ``backend="ray"`` replica, as a ratio to a bare
  Ray actor call on the same local Ray (target at most 1.2x). A local Ray listens on every
  interface, so this row runs in a private network namespace (``unshare -n``, as root); where
  none can be made, or Ray is missing, it says so.
- Replacing a replica: SIGKILL a child, until its replacement is READY (the zygote's warm spare),
  as a ratio to ``os.fork()`` until the child's first byte (target at most 2x).

Run: ``scripts/bench scale`` (or ``python benchmarks/bench_scale.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog

# Run as a script, this file's directory is on sys.path, not the project's; put the project's
# first so that its packages are found however the project is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_process  # noqa: E402

from isolation import Isolation, Zygote  # noqa: E402
from minions import Minion, Pipeline, Resource, Runtime, WorkflowStore, minion_step  # noqa: E402
from minions.core.identity import identity_of  # noqa: E402
from minions.isolated import ray_reaper  # noqa: E402
from minions.workflows.runner import orchestration_id  # noqa: E402

CALLS = 1200
CALLERS = 64
WORK_MS = 2.0
WORKFLOWS = 800
ROUNDS = 3


def burn(milliseconds: float) -> int:
    """Pure-Python CPU work for about ``milliseconds`` of this thread's CPU time."""
    deadline = time.thread_time() + milliseconds / 1000
    spins = 0
    while time.thread_time() < deadline:
        spins += 1
    return spins


class Cruncher(Resource, isolated=Isolation(replicas=1)):
    async def crunch(self, milliseconds: float) -> int:
        return burn(milliseconds)


@dataclass(frozen=True)
class Job:
    number: int


@dataclass
class JobContext:
    spins: int = 0


class Jobs(Pipeline[Job]):
    count: ClassVar[int] = WORKFLOWS

    def __init__(self) -> None:
        self._next = 0

    async def produce_event(self) -> Job:
        if self._next >= self.count:
            await asyncio.Event().wait()
        self._next += 1
        return Job(self._next - 1)


class Crunch(Minion[Job, JobContext], isolated=Isolation(replicas=1)):
    jobs: Jobs

    @minion_step
    async def work(self) -> None:
        self.context.spins = burn(WORK_MS)


# -- rows -------------------------------------------------------------------------------------


async def calls_per_second(project: Path, replicas: int) -> float:
    async with Runtime(project_dir=project, options={Cruncher: {"replicas": replicas}}) as rt:
        await rt.start(Cruncher)
        cruncher = rt.instances()["Cruncher"]
        await asyncio.gather(*(cruncher.crunch(1.0) for _ in range(4 * replicas)))
        best = 0.0
        per_caller = CALLS // CALLERS
        for _ in range(ROUNDS):

            async def caller() -> None:
                for _ in range(per_caller):
                    await cruncher.crunch(WORK_MS)

            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            best = max(best, per_caller * CALLERS / (time.perf_counter() - start))
        return best


async def pool_calls_per_second(workers: int) -> float:
    """The same calls from the same 64 concurrent callers, each awaiting
    ``loop.run_in_executor`` on a ``ProcessPoolExecutor``: what an async program would write."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, burn, 1.0) for _ in range(8)))
        best = 0.0
        per_caller = CALLS // CALLERS
        for _ in range(ROUNDS):

            async def caller() -> None:
                for _ in range(per_caller):
                    await loop.run_in_executor(pool, burn, WORK_MS)

            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            best = max(best, per_caller * CALLERS / (time.perf_counter() - start))
        return best


async def workflows_per_second(project: Path, replicas: int) -> float:
    config: dict[str, Any] = {"WorkflowStore": {"path": str(project / "state.sqlite3")}}
    options = {Crunch: {"replicas": replicas}}
    async with Runtime(project_dir=project, config=config, options=options) as rt:
        await rt.start(Crunch)
        store = rt.instances()["WorkflowStore"]
        assert isinstance(store, WorkflowStore)
        counters = store.counters(orchestration_id(identity_of(Crunch), identity_of(Jobs)))
        first = await counters.wait_until(lambda s: s.finished >= 50)
        began, done_before = time.perf_counter(), first.finished
        stats = await counters.wait_until(lambda s: s.finished >= WORKFLOWS)
        assert stats.succeeded == WORKFLOWS, stats
        elapsed = time.perf_counter() - began
        return (stats.finished - done_before) / elapsed


def replacement_row() -> tuple[float, float]:
    """(crash -> replacement READY with the spare, fork -> first byte), medians in seconds."""

    # The child's factory, named by the module the zygote finds it in.
    bench_process.SPEC = dataclasses.replace(bench_process.SPEC, factory="bench_process:Idle")

    async def measure() -> tuple[float, float]:
        zygote = Zygote.start(run_dir=Path(tempfile.mkdtemp(prefix="bench-scale-")))
        try:
            restarted = await bench_process._median(lambda: bench_process.crash_restarted(zygote))
            floor = await bench_process._median(bench_process.floor_fork_first_message)
            return restarted, floor
        finally:
            await zygote.aclose()

    return asyncio.run(measure())


def ray_row() -> str:
    """The Ray row, measured in a private network namespace by this script run again."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "not available: needs unshare and ip to make a private network namespace"
    command = f"ip link set lo up && exec {sys.executable} {__file__} --ray-row"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"not available: {reason[:160]}"
    return lines[-1].strip()


def _measure_ray() -> None:
    """Run inside the namespace: a local Ray, a Ray replica behind a proxy, a bare actor."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        import ray  # only now: its token authentication is read at import
    except ImportError:
        print('  Ray: not available: pip install "minions[ray]"')
        return
    from benchmarks._ray_targets import Echo, bare_echo_actor

    directory = tempfile.mkdtemp(prefix="mr-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        _temp_dir=directory,
        object_store_memory=80 * 1024 * 1024,
    )
    try:
        ours, bare = asyncio.run(_ray_round_trips(ray, Echo, bare_echo_actor))
    finally:
        ray.shutdown()
        ray_reaper.reap(directory, exclude=(os.getpid(),))
        shutil.rmtree(directory, ignore_errors=True)
    _row("Ray: proxied call round trip", ours * 1e6, "us", bare * 1e6, "bare Ray actor call")


async def _ray_round_trips(ray: Any, echo: type, bare_actor: Any) -> tuple[float, float]:
    async with Runtime(project_dir=tempfile.mkdtemp(prefix="bench-ray-")) as rt:
        await rt.start(echo)
        proxy = rt.instances()["Echo"]
        actor = bare_actor.remote()
        payload = "x" * 64
        for _ in range(200):
            await proxy.echo(payload)
            await actor.echo.remote(payload)
        ours, bare = [], []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(300):
                await proxy.echo(payload)
            ours.append((time.perf_counter() - start) / 300)
            start = time.perf_counter()
            for _ in range(300):
                await actor.echo.remote(payload)
            bare.append((time.perf_counter() - start) / 300)
        ray.kill(actor)
        return statistics.median(ours), statistics.median(bare)


def _row(name: str, value: float, unit: str, base: float, base_name: str) -> None:
    ratio = value / base if base else float("nan")
    print(
        f"  {name:<42} {value:9.1f} {unit:<4} {base_name} {base:9.1f} {unit:<4} ratio {ratio:5.2f}x"
    )


def main() -> None:
    # The runtime's progress is not what is measured: only warnings and errors are shown.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"bench_scale: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {WORK_MS:g} ms of "
        f"CPU per call or step, best of {ROUNDS} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = Path(tmp)
        one = asyncio.run(calls_per_second(base / "calls-1", 1))
        two = asyncio.run(calls_per_second(base / "calls-2", 2))
        pool = asyncio.run(pool_calls_per_second(2))
        _row("CPU-bound calls/s, replicas=2", two, "/s", one, "replicas=1")
        _row("CPU-bound calls/s, replicas=2", two, "/s", pool, "ProcessPool(2)")
        flows_one = asyncio.run(workflows_per_second(base / "flows-1", 1))
        flows_two = asyncio.run(workflows_per_second(base / "flows-2", 2))
        _row("workflows/s (2 ms step), replicas=2", flows_two, "/s", flows_one, "replicas=1")
    print(f"  {ray_row()}")
    restarted, floor = replacement_row()
    _row("crash -> replacement READY (spare)", restarted * 1e3, "ms", floor * 1e3, "fork floor")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ray-row"]:
        _measure_ray()
    else:
        main()

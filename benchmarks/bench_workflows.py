"""Durable workflows per second: Minions against the ``minions`` 0.0.2 wheel, same program.

The program: a pipeline emits small events as fast as it is allowed; a minion runs a two-step
workflow on each (step one copies the event into the context, step two derives from it), with
N workflows in flight (N = 1, 16, 256). Both runtimes checkpoint to SQLite:

- Minions: ``Gru`` with ``SQLiteStateStore`` (WAL, ``synchronous=FULL``: a checkpoint is on disk
  before its step runs), ``max_in_flight = N`` on the minion;
- the peer: the wheel's own ``Gru`` and default SQLite store, driven by
  ``benchmarks/peer/run_peer.py`` in its own venv (see that file for how it is driven and why;
  note its store returns before a row is written and runs ``synchronous=NORMAL``).

Each run uses a fresh temporary directory (and, for the peer, a fresh process), runs ``--warmup``
seconds unmeasured, then counts the workflows that finish in a ``--seconds`` window. Minions and
the peer alternate run by run, so load from elsewhere on the machine hits both alike; the median
of ``--repeat`` runs per level is reported.
Prints a table with the ratio per level, and the machine's durable-commit rate for context: at
one workflow in flight each workflow waits for two durable commits (its two checkpoints; its
delete rides in the next workflow's first commit), so half that rate bounds the first row.

Run: ``python benchmarks/bench_workflows.py [--seconds 3] [--repeat 3] [--levels 1 16 256]``
(``benchmarks/peer/setup_peer.sh`` creates the peer's venv; without it only Minions is run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minions import Gru, Minion, Pipeline, minion_step
from minions.core.logs import configure_logging
from minions.implementations import SQLiteStateStore

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".peer-venv" / "bin" / "python"
TARGETS = {1: 20.0, 16: 5.0, 256: 4.0}


@dataclass
class Tick:
    n: int


@dataclass
class TwoStepCtx:
    seen: int = 0
    doubled: int = 0


class TickPipeline(Pipeline[Tick]):
    produced = 0

    async def produce_event(self) -> Tick:
        TickPipeline.produced += 1
        return Tick(TickPipeline.produced)


class TwoStepMinion(Minion[Tick, TwoStepCtx]):
    @minion_step
    async def first(self) -> None:
        self.context.seen = self.event.n

    @minion_step
    async def second(self) -> None:
        self.context.doubled = self.context.seen * 2


def minion_for(in_flight: int) -> type[TwoStepMinion]:
    return type(f"TwoStep{in_flight}", (TwoStepMinion,), {"max_in_flight": in_flight})


async def measure_ours(in_flight: int, seconds: float, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="minions-bench-") as workdir:
        store = SQLiteStateStore(Path(workdir) / "state.sqlite3")
        gru = await Gru.create(state_store=store, logger=None, metrics=None, project_dir=workdir)
        try:
            result = await gru.start_orchestration(TickPipeline, minion_for(in_flight))
            if not result.success:
                raise SystemExit(f"Minions refused the workload: {result.reason}")
            oid = result.orchestration_id or ""
            # Fixed measuring windows: this is a throughput measurement, not a wait for an event.
            await asyncio.sleep(warmup)
            before, started = gru.workflow_statistics(oid).succeeded, time.perf_counter()
            await asyncio.sleep(seconds)
            after, elapsed = gru.workflow_statistics(oid).succeeded, time.perf_counter() - started
            stats = store.statistics()
        finally:
            await gru.shutdown()
    return {
        "in_flight": in_flight,
        "workflows": after - before,
        "seconds": round(elapsed, 3),
        "workflows_per_s": round((after - before) / elapsed, 1),
        "commits": stats.commits,
        "largest_batch": stats.largest_batch,
    }


def run_peer(level: int, seconds: float, warmup: float) -> tuple[float | None, str]:
    """One peer run at ``level`` in flight (its harness, in its venv); the rate and a label."""
    if not PEER_PYTHON.exists():
        return None, f"peer not set up: run {HERE / 'peer' / 'setup_peer.sh'} first"
    command = [
        str(PEER_PYTHON),
        str(HERE / "peer" / "run_peer.py"),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--repeat",
        "1",
        "--levels",
        str(level),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + warmup + 120, check=False
    )
    if done.returncode != 0:
        return None, f"peer run failed ({done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    return float(report["results"][0]["workflows_per_s"]), str(report["peer"])


def measure(
    levels: list[int], seconds: float, warmup: float, repeat: int, peer: bool
) -> tuple[dict[int, float], dict[int, float], str]:
    """Medians per level. Minions and the peer alternate, level by level and round by round,
    so a change of machine load mid-run touches both sides alike."""
    ours: dict[int, list[float]] = {level: [] for level in levels}
    theirs: dict[int, list[float]] = {level: [] for level in levels}
    label = "peer skipped (--no-peer)"
    for _ in range(repeat):
        for level in levels:
            ours[level].append(asyncio.run(measure_ours(level, seconds, warmup))["workflows_per_s"])
            if peer:
                rate, label = run_peer(level, seconds, warmup)
                if rate is not None:
                    theirs[level].append(rate)
    return (
        {level: statistics.median(rates) for level, rates in ours.items()},
        {level: statistics.median(rates) for level, rates in theirs.items() if rates},
        label,
    )


def commit_floor(seconds: float = 1.0) -> float:
    """Single-row durable transactions per second on this disk (WAL, synchronous=FULL)."""
    with tempfile.TemporaryDirectory(prefix="minions-floor-") as workdir:
        conn = sqlite3.connect(Path(workdir) / "floor.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        count, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            # Each row differs from the one it replaces: SQLite skips writing unchanged pages.
            row = (count % 1000, count.to_bytes(8, "little") + b"x" * 192)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", row)
            conn.execute("COMMIT")
            count += 1
        elapsed = time.perf_counter() - started
        conn.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per level (median)")
    parser.add_argument("--no-peer", action="store_true", help="measure Minions only")
    args = parser.parse_args()
    configure_logging(project_dir=None, level="warning")  # lifecycle lines would bury the table
    floor = commit_floor()
    ours, peer, peer_label = measure(
        args.levels, args.seconds, args.warmup, args.repeat, peer=not args.no_peer
    )
    print(
        f"Durable two-step workflows per second ({args.seconds:g} s windows, median of "
        f"{args.repeat}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    print(f"peer: {peer_label}")
    print(
        f"this disk: {floor:,.0f} single-row durable SQLite commits/s (WAL, synchronous=FULL), "
        f"so at most {floor / 2:,.0f} wf/s at 1 in flight (two commits per workflow)"
    )
    print(f"{'in flight':>9}  {'Minions wf/s':>13}  {'peer wf/s':>10}  {'ratio':>7}  {'target':>7}")
    for level in args.levels:
        theirs = peer.get(level)
        ratio = f"{ours[level] / theirs:6.1f}x" if theirs else "     -"
        target = f">={TARGETS[level]:g}x" if level in TARGETS else "-"
        shown = f"{theirs:10,.0f}" if theirs else f"{'-':>10}"
        print(f"{level:>9}  {ours[level]:13,.0f}  {shown}  {ratio:>7}  {target:>7}")


if __name__ == "__main__":
    main()

"""Drive the peer (`minions` 0.0.2 from PyPI) with the two-step workflow program; print JSON.

Run it with the peer's own interpreter (``benchmarks/peer/setup_peer.sh`` creates it)::

    benchmarks/.peer-venv/bin/python benchmarks/peer/run_peer.py [--seconds 3] [--levels 1 16 256]

Each level (workflows in flight) runs in a fresh process, because the wheel allows one ``Gru``
per process, inside a fresh temporary directory (the wheel puts ``minions.db`` in the current
directory). The program is driven only through the wheel's public API: ``Gru.create`` and
``Gru.start_minion(minion_modpath, minion_config_path, pipeline_modpath)``.

Settings: the wheel's default state store (its ``SQLiteStateStore``), metrics off (its default
would serve Prometheus on every interface), and a logger that only tallies the peer's
warnings and errors for the report (``--logger file`` selects the wheel's file logger). Note for
readers of the figures: the wheel's store returns from a save before the row is written (it
batches for 8-30 ms) and runs SQLite with ``synchronous=NORMAL``; Minions' store returns only
after an fsynced commit.

Output: one JSON object, e.g. ``{"peer": "minions 0.0.2", "results": [{"in_flight": 1,
"workflows_per_s": <median of --repeat runs>, "runs": [...]}, ...]}``; each run also tallies
the warnings, errors and unretrieved task exceptions the peer produced while it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The wheel requires a config path per minion; the workload's load_config ignores its content.
CONFIG_FILE = "minion.toml"
PEER_VERSION = "0.0.2"


def check_peer() -> None:
    try:
        version = importlib.metadata.version("minions")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != PEER_VERSION:
        sys.exit(
            f"run_peer.py needs the minions {PEER_VERSION} wheel, found {version!r} for "
            f"{sys.executable}. Run benchmarks/peer/setup_peer.sh, then "
            "benchmarks/.peer-venv/bin/python benchmarks/peer/run_peer.py"
        )


def counting_logger() -> Any:
    """A logger for the wheel that counts its warnings and errors by message (printing each
    would slow the measured run down); the counts go into the report."""
    from minions.interfaces import Logger

    class CountingLogger(Logger):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.counts: dict[str, int] = {}

        async def log(self, level: int, msg: str, **kwargs: Any) -> None:
            if level >= 30:
                detail = kwargs.get("error_message")
                key = f"{msg}: {detail}" if detail else msg
                self.counts[key[:200]] = self.counts.get(key[:200], 0) + 1

    return CountingLogger()


def peer_store(logger: Any) -> Any:
    """The wheel's own SQLiteStateStore, with two names its code uses but does not define.

    As published, 0.0.2's StateStore base calls ``self._safe_run_and_log`` (the helper is named
    ``_mn_safe_run_and_log``) and its SQLite store logs through ``self._logger`` (set as
    ``_mn_logger``), so every minion start fails. The aliases below restore what the code
    evidently meant, without changing how the store saves. Its Gru also never starts or stops
    the store (it looks for a ``_startup`` attribute that nothing defines), so ``measure``
    calls the store's own ``startup()`` and ``shutdown()`` hooks.
    """
    from minions.implementations import SQLiteStateStore

    class PatchedSQLiteStateStore(SQLiteStateStore):  # type: ignore[misc]
        _safe_run_and_log = SQLiteStateStore._mn_safe_run_and_log

        def __init__(self, db_path: str, logger: Any) -> None:
            super().__init__(db_path=db_path, logger=logger)
            self._logger = logger

    return PatchedSQLiteStateStore("minions.db", logger)


async def measure(in_flight: int, seconds: float, warmup: float, logger: str) -> dict[str, Any]:
    from minions import Gru
    from minions.implementations import FileLogger

    # The wheel imports the workload by module path, so it lives on sys.path, beside this file.
    peer_workload = importlib.import_module("peer_workload")

    # Exceptions of tasks nobody awaited (the wheel's batch flushes) are tallied, not printed.
    unretrieved: dict[str, int] = {}

    def on_task_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        key = f"{type(exc).__name__}: {exc}" if exc else str(context.get("message"))
        unretrieved[key[:200]] = unretrieved.get(key[:200], 0) + 1

    asyncio.get_running_loop().set_exception_handler(on_task_exception)
    chosen = counting_logger() if logger == "count" else FileLogger()
    store = peer_store(chosen)
    await store.startup()
    gru = await Gru.create(state_store=store, logger=chosen, metrics=None)
    peer_workload.gate.configure(in_flight)
    result = await gru.start_minion("peer_workload", CONFIG_FILE, "peer_workload")
    if not result.success:
        raise SystemExit(f"the peer refused to start the workload: {result.reason}")
    # Fixed measuring windows: this is a throughput measurement, not a wait for an event.
    await asyncio.sleep(warmup)
    done_before, started = peer_workload.gate.completed, time.perf_counter()
    await asyncio.sleep(seconds)
    done_after, elapsed = peer_workload.gate.completed, time.perf_counter() - started
    shutdown_error = None
    try:
        await gru.shutdown()
        await store.shutdown()
    except Exception as exc:  # the wheel's own failure: report it with the figures
        shutdown_error = f"{type(exc).__name__}: {exc}"
    return {
        "in_flight": in_flight,
        "workflows": done_after - done_before,
        "seconds": round(elapsed, 3),
        "workflows_per_s": round((done_after - done_before) / elapsed, 1),
        "peer_warnings_and_errors": getattr(chosen, "counts", "see logs/"),
        "peer_unretrieved_task_exceptions": unretrieved,
        "peer_shutdown_error": shutdown_error,
    }


def run_level(in_flight: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as workdir:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(in_flight),
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
            "--logger",
            args.logger,
        ]
        timeout = args.seconds + args.warmup + 60
        done = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
        )
    if done.returncode != 0:
        raise SystemExit(f"level {in_flight} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start per level")
    parser.add_argument(
        "--logger",
        choices=["count", "file"],
        default="count",
        help="count: tally the peer's warnings and errors; file: its default FileLogger",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per level; the median is reported"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_peer()
    if args.child is not None:
        sys.path.insert(0, str(HERE))
        Path(CONFIG_FILE).write_text("")
        print(json.dumps(asyncio.run(measure(args.child, args.seconds, args.warmup, args.logger))))
        sys.stdout.flush()
        # A failed peer shutdown can leave its aiosqlite thread behind; the figures are out.
        os._exit(0)
    results = []
    for level in args.levels:
        runs = [run_level(level, args) for _ in range(args.repeat)]
        rates = sorted(run["workflows_per_s"] for run in runs)
        results.append(
            {
                "in_flight": level,
                "workflows_per_s": statistics.median(rates),
                "runs_workflows_per_s": [run["workflows_per_s"] for run in runs],
                "runs": runs,
            }
        )
    report = {
        "peer": f"minions {PEER_VERSION} (PyPI wheel)",
        "workload": "two-step workflow per event, N workflows in flight",
        "state_store": "peer default SQLiteStateStore",
        "logger": args.logger,
        "metrics": "off",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

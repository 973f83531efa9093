"""Run hello world: ``python -m examples.hello_world [--seconds N] [--interval S]``.

Gru keeps its checkpoints in ``<project>/.minions/state.sqlite3`` (the project is
``$MINIONS_PROJECT_DIR`` or the current directory); Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from minions import Gru

from .hello import Greeter, Greetings


async def main(seconds: float | None) -> int:
    gru = await Gru.create()
    try:
        result = await gru.start_orchestration(Greetings, Greeter)
        if not result.success:
            print(f"could not start: {result.reason} ({result.suggestion})")
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        await gru.shutdown()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m examples.hello_world", description=__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between greetings")
    args = parser.parse_args()
    Greetings.interval = args.interval
    raise SystemExit(asyncio.run(main(args.seconds)))

"""Run the heartbeat system: ``python -m examples.heartbeat [--seconds N]``.

Checkpoints go to ``<project>/.minions/state.sqlite3`` (the project is ``$MINIONS_PROJECT_DIR``
or the current directory). Ctrl-C stops it cleanly; a heartbeat interrupted between its steps
resumes at its next step on the next run.
"""

from __future__ import annotations

import argparse

from minions import run

from .beats import CheckBeat, Reporter


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.heartbeat", description=__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    run(CheckBeat, Reporter, stop_after=args.seconds, log_level=args.log_level)


if __name__ == "__main__":
    main()

"""Run the trading bot: ``python -m examples.trading_bot [--seconds N]`` (or ``scripts/demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from minions import run

from .bot import OnChainStrategy, ThirdPartyStrategy

CONFIG = Path(__file__).with_name("minions.toml")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop gracefully after this many seconds"
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    run(
        OnChainStrategy,
        ThirdPartyStrategy,
        config=CONFIG,
        stop_after=args.seconds,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()

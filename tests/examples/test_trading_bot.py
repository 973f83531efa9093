"""The example trading bot runs, trades, restarts its flaky price feed, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bot(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "examples.trading_bot", *args],
        cwd=REPO,
        env={
            **os.environ,
            "MINIONS_PROJECT_DIR": str(tmp_path),
            "MINIONS_CHAINEVENTS__BLOCK_INTERVAL": "0.05",
            "MINIONS_ONCHAINSTRATEGY__MIN_AMOUNT": "0.5",
            "MINIONS_THIRDPARTYSTRATEGY__CRASH_RATE": "0",
            "MINIONS_PRICEFEED__FAILURE_RATE": "0",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _events(tmp_path: Path) -> list[dict[str, object]]:
    log_file = tmp_path / ".minions" / "logs" / "minions.log"
    return [json.loads(line) for line in log_file.read_text().splitlines()]


def test_demo_trades_and_stops_after_seconds(tmp_path: Path) -> None:
    """`scripts/demo --seconds N` runs the bot, logs trades, and exits 0 after a clean stop."""
    bot = _bot(tmp_path, "--seconds", "1.5")
    try:
        _, stderr = bot.communicate(timeout=30)
    finally:
        bot.kill()
    assert bot.returncode == 0, stderr
    events = _events(tmp_path)
    names = [e["event"] for e in events]
    assert "trade.submitted" in names
    trades = [e for e in events if e["event"] == "trade.submitted"]
    assert {e["component"] for e in trades} <= {"OnChainStrategy", "ThirdPartyStrategy"}
    stopped = [e["component"] for e in events if e["event"] == "component.stopped"]
    # Reverse dependency order: the strategies first, the resources after them.
    assert set(stopped[:2]) == {"OnChainStrategy", "ThirdPartyStrategy"}
    assert set(stopped) == {
        "ThirdPartyStrategy",
        "OnChainStrategy",
        "Wallet",
        "PriceFeed",
        "ChainEvents",
    }
    assert names[-1] == "runtime.stopped"


def test_price_feed_outage_restarts_the_feed_and_then_the_strategy(tmp_path: Path) -> None:
    """A crashing PriceFeed is restarted, and the strategy that depends on it after it."""
    bot = _bot(
        tmp_path,
        "--seconds",
        "2",
        MINIONS_PRICEFEED__FAILURE_RATE="0.5",
        MINIONS_PRICEFEED__TICK="0.05",
    )
    try:
        _, stderr = bot.communicate(timeout=30)
    finally:
        bot.kill()
    events = _events(tmp_path)
    crash = next(i for i, e in enumerate(events) if e["event"] == "component.crashed")
    assert events[crash]["component"] == "PriceFeed"
    after = [(e["event"], e.get("component")) for e in events[crash:]]
    stop_strategy = after.index(("component.stopped", "OnChainStrategy"))
    feed_back = after.index(("component.started", "PriceFeed"))
    strategy_back = after.index(("component.started", "OnChainStrategy"))
    assert stop_strategy < feed_back < strategy_back
    # At this failure rate the feed may exhaust its restart intensity; either way the exit
    # status says what happened.
    given_up = any(e["event"] == "component.given_up" for e in events)
    assert bot.returncode == (1 if given_up else 0), stderr


def test_a_segfaulting_isolated_strategy_is_restarted_alone(tmp_path: Path) -> None:
    """The third-party strategy segfaults in its child; the child is restarted and the
    in-process strategy keeps running, never stopped."""
    bot = _bot(tmp_path, "--seconds", "2", MINIONS_THIRDPARTYSTRATEGY__CRASH_RATE="0.2")
    try:
        _, stderr = bot.communicate(timeout=30)
    finally:
        bot.kill()
    events = _events(tmp_path)
    crashes = [e for e in events if e["event"] == "component.crashed"]
    assert crashes, "the strategy never crashed"
    assert {e["component"] for e in crashes} == {"ThirdPartyStrategy"}
    assert all("killed by SIGSEGV" in str(e["reason"]) for e in crashes)
    started = [e for e in events if e["event"] == "component.started"]
    pids = {e["pid"] for e in started if e["component"] == "ThirdPartyStrategy"}
    assert len(pids) >= 2, "no restart in a new child"
    stops = [e for e in events if e["event"] == "component.stopped"]
    assert [e["reason"] for e in stops if e["component"] == "OnChainStrategy"] == [
        "runtime stopping"
    ]
    given_up = any(e["event"] == "component.given_up" for e in events)
    assert bot.returncode == (1 if given_up else 0), stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_bot_gracefully(tmp_path: Path, signum: int) -> None:
    """Ctrl-C (or SIGTERM) stops every component in reverse order and exits 0."""
    bot = _bot(tmp_path)
    try:
        assert bot.stderr is not None
        for line in bot.stderr:
            if "runtime.started" in line:
                break
        else:
            pytest.fail("the bot never reported runtime.started")
        bot.send_signal(signum)
        _, stderr = bot.communicate(timeout=30)
    finally:
        bot.kill()
    assert bot.returncode == 0, stderr
    assert _events(tmp_path)[-1]["event"] == "runtime.stopped"

"""The dashboard in a real browser: headless Chromium, driven by Playwright, against a real
system running in a subprocess.

The system serves its own dashboard (``minions run --dashboard-port 0``): isolated and
in-process resources and minions, proxied calls, and a durable workflow, so every panel has
something to show. The test opens the address ``minions dashboard --url`` prints and checks
what a user sees and does: every component in the graph, a crash (SIGKILL of an isolated
child) in the timeline within a second, the restart button (after its confirmation) restarting
the component, a dismissed confirmation doing nothing. Every request the page makes must stay
on the dashboard's own address, and the page must raise no error and break no rule of its
content security policy. A screenshot is saved in the test's folder (its path printed).

The browser is the system's Chromium (Debian's ``chromium``, which ``scripts/test`` installs
when it can); Playwright's Python wheel carries its own driver, and no browser is downloaded.
Without Chromium or Playwright the test is skipped, saying which is missing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import LIMIT, System, cli, status_components, wait_all_running, write_project

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]

APP = '''
"""A small system with something for every panel of the dashboard."""
import asyncio
import os
import random
from dataclasses import dataclass

from minions import Minion, Pipeline, Resource, minion_step, run


class Prices(Resource, isolated=True):
    async def quote(self, pair: str) -> float:
        await asyncio.sleep(random.uniform(0.0005, 0.003))
        return 100.0 + random.random()


class Ledger(Resource):
    def __init__(self) -> None:
        self.entries = 0

    async def record(self, amount: float) -> int:
        self.entries += 1
        return self.entries


class Trader(Minion):
    def __init__(self, prices: Prices, ledger: Ledger) -> None:
        self._prices = prices
        self._ledger = ledger

    async def run(self) -> None:
        print("READY", flush=True)
        while True:
            await self._ledger.record(await self._prices.quote("ETH/USDC"))
            await asyncio.sleep(0.02)


class Vendor(Minion, isolated=True):
    """Someone else's strategy, in a child of its own."""

    def __init__(self, prices: Prices, ledger: Ledger) -> None:
        self._prices = prices
        self._ledger = ledger

    async def run(self) -> None:
        while True:
            await self._ledger.record(await self._prices.quote("BTC/USDC"))
            await asyncio.sleep(0.05)


@dataclass
class Order:
    size: float


@dataclass
class Fill:
    price: float = 0.0


class Orders(Pipeline[Order]):
    async def produce_event(self) -> Order:
        await asyncio.sleep(0.1)
        return Order(size=random.uniform(1, 5))


class Executor(Minion[Order, Fill]):
    orders: Orders

    @minion_step
    async def price(self) -> None:
        await asyncio.sleep(random.uniform(0.002, 0.01))
        self.context.price = 100.0

    @minion_step
    async def settle(self) -> None:
        await asyncio.sleep(random.uniform(0.01, 0.03))


if __name__ == "__main__":
    run(Trader, Vendor, Executor)
'''

#: Collects the page's content-security-policy violations, before any of its scripts runs.
WATCH_POLICY = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


ALL_RUNNING = (
    "[...document.querySelectorAll('#graph g.node')].every(n => n.dataset.state === 'running')"
)
VENDOR_CRASHED = (
    "document.querySelector('#events li[data-kind=crashed][data-component=Vendor]') !== null"
)
VENDOR_RUNNING = "document.querySelector('.card[data-name=Vendor]').dataset.state === 'running'"


def chromium() -> str:
    for path in (os.environ.get("MINIONS_CHROMIUM", ""), *CHROMIUM_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    pytest.skip(
        "no Chromium: install Debian's chromium package (scripts/test does it when run as root "
        "on a machine with apt-get), or set MINIONS_CHROMIUM to a Chromium binary"
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium for one test (its processes end with the test)."""
    executable = chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, chromium_sandbox=False, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def wait_until(page: Any, script: str, limit: float = LIMIT) -> float:
    """Evaluate ``script`` in the page until it is true; the seconds it took. (Playwright's
    wait_for_function compiles its predicate with eval, which the page's policy forbids.)"""
    began = time.monotonic()
    while not page.evaluate(script):
        elapsed = time.monotonic() - began
        assert elapsed < limit, f"not true within {limit} s: {script}"
        page.wait_for_timeout(10)
    return time.monotonic() - began


def test_the_dashboard_in_a_browser(
    tmp_path: Path, start_system: type[System], browser: Any
) -> None:
    """The graph shows every component; a crash is in the timeline within a second; the
    restart button restarts once confirmed; nothing is fetched from anywhere else."""
    from playwright.sync_api import expect

    project = write_project(tmp_path / "proj", app=APP)
    system = start_system(project, "--dashboard-port", "0")
    system.wait_for("READY")
    wait_all_running(project)
    address = cli("dashboard", "--url", "--project", str(project))
    assert address.code == 0, address.err
    url = address.out.strip()
    base = url.split("#", 1)[0].rstrip("/")

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
    requested: list[str] = []
    elsewhere: list[str] = []
    problems: list[str] = []
    context.on("request", lambda request: requested.append(request.url))

    def refuse(route: Any) -> None:
        elsewhere.append(route.request.url)
        route.abort("blockedbyclient")

    context.route(lambda address: not address.startswith(base + "/"), refuse)
    context.add_init_script(WATCH_POLICY)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))

    page.goto(url)
    expect(page.locator("#link")).to_have_text("live", timeout=LIMIT * 1000)
    assert page.url == base + "/"  # the token left the address bar

    # The graph: every component, by name, each running.
    names = set(status_components(project))
    assert names == {"Prices", "Ledger", "Trader", "Vendor", "Orders", "WorkflowStore", "Executor"}
    expect(page.locator("#graph g.node")).to_have_count(len(names), timeout=LIMIT * 1000)
    drawn = page.eval_on_selector_all("#graph g.node", "nodes => nodes.map(n => n.dataset.name)")
    assert set(drawn) == names
    wait_until(page, ALL_RUNNING)
    arrows = sum(len(c["dependencies"]) for c in status_components(project).values())
    assert page.locator("#graph path.edge").count() == arrows == 6  # one per dependency

    # A crash: the isolated Vendor's child is killed; the timeline shows it within a second.
    vendor = status_components(project)["Vendor"]
    assert isinstance(vendor["pid"], int)
    os.kill(vendor["pid"], signal.SIGKILL)
    seconds = wait_until(page, VENDOR_CRASHED)
    print(f"\nthe crash was in the page's timeline {seconds * 1000:.0f} ms after the kill")
    assert seconds < 1.0
    cause = page.locator('#events li[data-kind="crashed"][data-component="Vendor"] .why')
    expect(cause).to_contain_text("SIGKILL")
    wait_until(page, VENDOR_RUNNING)  # restarted by its policy
    restarted = wait_all_running(project)["Vendor"]
    assert restarted["restarts"] == 1

    # A dismissed confirmation does nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click('.card[data-name="Trader"] button[data-op="stop"]')
    assert status_components(project)["Trader"]["state"] == "running"

    # The restart button, confirmed: a new child, one more restart, the toast says so.
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click('.card[data-name="Vendor"] button[data-op="restart"]')
    expect(page.locator("#toast")).to_have_text("restart: Vendor is running", timeout=LIMIT * 1000)
    assert messages == ["Restart Vendor?"]
    after = status_components(project)["Vendor"]
    assert after["restarts"] == 2 and after["pid"] != restarted["pid"]
    expect(page.locator('.card[data-name="Vendor"] .facts')).to_have_attribute(
        "data-restarts", "2", timeout=LIMIT * 1000
    )
    restarting = page.locator('#events li[data-kind="restarting"][data-component="Vendor"]')
    expect(restarting.first).to_contain_text("restart requested", timeout=LIMIT * 1000)

    # The other panels have their data: proxied calls and the workflow.
    expect(page.locator("#calls table tbody tr").first).to_be_visible(timeout=LIMIT * 1000)
    expect(page.locator("#workflows .workflow .name").first).to_contain_text("Executor")
    page.wait_for_timeout(1500)  # one more tick or two, for a fuller screenshot
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")

    assert elsewhere == []
    assert requested and all(r.startswith(base + "/") for r in requested), requested
    assert page.evaluate("window.__violations") == []
    assert problems == []
    context.close()

"""``minions dashboard``: serve a running system's dashboard from the command's own process.

:func:`serve` checks that a system answers in the project folder, serves its dashboard on
``127.0.0.1`` (fed over the control socket), prints the address with its access token, and
runs until SIGINT or SIGTERM. If the system stops meanwhile, the page says so and follows it
again once a system runs in the folder. :func:`print_url` prints the address of the dashboard
a system serves itself (``run(..., dashboard_port=N)``), from ``.minions/run/dashboard.json``.
Problems are :class:`~minions.ops.client.ControlError`\\ s: one line, exit status 1.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TextIO

from ..client import AsyncControlClient, ControlError
from ..control import run_dir
from .access import Access, read_access_file
from .monitor import ANSWER_TIMEOUT, Monitor
from .server import DashboardServer

__all__ = ["print_url", "serve"]


def serve(project_dir: Path, port: int, out: TextIO) -> None:
    """Serve the dashboard of the system in ``project_dir`` until a signal stops it."""
    asyncio.run(_serve(project_dir, port, out))


async def _serve(project_dir: Path, port: int, out: TextIO) -> None:
    client = AsyncControlClient(project_dir)
    monitor = Monitor(client)
    server = DashboardServer(monitor, Access(), port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await client.request("ping")
        except TimeoutError:
            raise ControlError(
                f"the system in {project_dir} did not answer within {ANSWER_TIMEOUT:g} s; it "
                "may be busy or stuck (see 'minions logs')"
            ) from None
        try:
            await server.start()
        except OSError as exc:
            raise ControlError(
                f"cannot serve the dashboard on 127.0.0.1:{port}: {exc.strerror or exc}; "
                "choose another --port (0 picks a free one)"
            ) from None
        monitor.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"Dashboard of {project_dir}: {server.access.private_url}", file=out)
        print(
            "Only you can open it: the address carries its access token. Ctrl-C stops it.",
            file=out,
            flush=True,
        )
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.close()
        await monitor.close()
        client.close()


def print_url(project_dir: Path, out: TextIO) -> None:
    """Print the address (with its token) of the dashboard the system serves itself."""
    found = read_access_file(run_dir(project_dir))
    if found is None:
        raise ControlError(
            f"no system in {project_dir} serves a dashboard: start it with a dashboard port "
            "('minions run --dashboard-port 0 app.py', run(..., dashboard_port=0) or "
            "dashboard_port in [minions]), or serve one from here with 'minions dashboard'"
        )
    print(f"{found['url']}#token={found['token']}", file=out)

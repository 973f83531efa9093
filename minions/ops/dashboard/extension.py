"""A system serving its own dashboard: ``run(..., dashboard_port=N)``.

:class:`Dashboard` is an :class:`~minions.core.runtime.Extension`. Attached to a runtime, it
serves the dashboard on ``127.0.0.1:<port>`` from the system's own event loop, fed by the
runtime's :class:`~minions.ops.control.ControlServer` in-process (the same requests
``minions dashboard`` makes over the socket), so it needs that control server, attached before
it. It leaves its address and access token in ``.minions/run/dashboard.json`` for ``minions
dashboard --url``, logs ``dashboard.serving`` with the address (never the token: the log file
may be readable by others), and prints the address with its token on stderr when that is a
terminal. A port that cannot be had is logged as ``dashboard.unavailable`` and the system runs
on without it.
"""

from __future__ import annotations

import sys

import structlog

from ...core.errors import RuntimeStateError
from ...core.runtime import Runtime
from ..control import ControlServer, run_dir
from .access import Access, remove_access_file, write_access_file
from .channel import LocalChannel
from .monitor import Monitor
from .server import DashboardServer

__all__ = ["Dashboard"]

log = structlog.get_logger("minions")


class Dashboard:
    """Serves the dashboard of the runtime it is attached to (see the module docstring)::

        control = ControlServer()
        async with Runtime(extensions=[control, Dashboard(control, port=8765)]) as rt:
            ...

    ``port`` 0 picks a free port; :attr:`url` tells which once attached.
    """

    def __init__(self, control: ControlServer, port: int = 0) -> None:
        self.port = port
        self._control = control
        self._access = Access()
        self._monitor: Monitor | None = None
        self._server: DashboardServer | None = None
        self._runtime: Runtime | None = None

    def __repr__(self) -> str:
        return f"<Dashboard {self.url or 'not serving'}>"

    @property
    def url(self) -> str | None:
        """The dashboard's address without its token, while it is served."""
        return self._access.url if self._server is not None else None

    @property
    def private_url(self) -> str | None:
        """The address with the access token, while it is served."""
        return self._access.private_url if self._server is not None else None

    async def attach(self, runtime: Runtime) -> None:
        if self._control.runtime is not runtime:
            raise RuntimeStateError(
                "the Dashboard is fed by the runtime's ControlServer: attach that first, e.g. "
                "Runtime(extensions=[control, Dashboard(control)])"
            )
        self._runtime = runtime
        monitor = Monitor(LocalChannel(self._control))
        server = DashboardServer(monitor, self._access, self.port)
        try:
            await server.start()
        except OSError as exc:
            log.warning(
                "dashboard.unavailable",
                reason=f"cannot serve the dashboard on 127.0.0.1:{self.port} ({exc}); choose "
                "another dashboard_port (0 picks a free one), or serve it with 'minions "
                "dashboard --port PORT'",
            )
            return
        self.port = server.port
        monitor.start()
        self._monitor, self._server = monitor, server
        try:
            write_access_file(run_dir(runtime.project_dir), self._access)
        except OSError as exc:
            log.warning("dashboard.access_file_failed", reason=str(exc))
        log.info(
            "dashboard.serving",
            url=self._access.url,
            open="'minions dashboard --url' prints the address with its access token",
        )
        if sys.stderr.isatty():
            print(f"minions: dashboard at {self._access.private_url}", file=sys.stderr, flush=True)

    async def detach(self) -> None:
        server, self._server = self._server, None
        monitor, self._monitor = self._monitor, None
        if server is not None:
            await server.close()
        if monitor is not None:
            await monitor.close()
        if self._runtime is not None and server is not None:
            remove_access_file(run_dir(self._runtime.project_dir), self._access)

"""The Ray a runtime's Ray replicas run on: an existing cluster joined, or a local one started.

:class:`RayCluster` connects this process to Ray once, when the first replica with
``backend="ray"`` starts:

* if this process is already connected (the program called ``ray.init`` itself), that
  connection is used and left alone;
* with an address (``run(..., ray_address=...)``, ``ray_address`` in ``[minions]`` of
  ``minions.toml``, or ``$MINIONS_RAY_ADDRESS``), Minions joins that cluster, and disconnects
  at the end without stopping it;
* otherwise Minions starts a **local** Ray for this runtime and stops it at the end: its
  processes bound to 127.0.0.1, its dashboard off, token authentication on (every Ray port
  demands a secret token made for this instance — Ray's agents also listen on the machine's
  other interfaces, so the token is what keeps them closed), its files in a private temporary
  directory. A watchdog process (:mod:`minions.isolated.ray_reaper`) ends the instance if this
  process dies without stopping it.

Ray workers import the components' modules, so a local Ray is given the program's own import
paths (``sys.path`` outside the Python installation) through ``PYTHONPATH``; on a cluster, the
nodes need the program's code installed or shipped by Ray (see docs/scale-out.md).

Token authentication must be chosen before Ray is first imported: the Isolator turns it on in
the environment (``RAY_AUTH_MODE=token`` and a fresh ``RAY_AUTH_TOKEN``) before it imports the
Ray backend, when a local Ray may be started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
import structlog

from ..core.errors import StartupError
from . import ray_reaper

__all__ = ["LOCAL_HOST", "RayCluster"]

log = structlog.get_logger("minions")

LOCAL_HOST = "127.0.0.1"
#: The object store of a local instance: Minions moves only small msgpack messages through Ray.
_OBJECT_STORE_BYTES = 80 * 1024 * 1024
_NAMESPACE = "minions"


class RayCluster:
    """This runtime's connection to Ray (see the module docstring)."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._owned: str | None = None  # "local" (started here) or "joined"; None: not ours
        self._directory: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._lock = asyncio.Lock()
        self.host = LOCAL_HOST  # where the driver's end of each secure channel listens

    def __repr__(self) -> str:
        where = self._address or ("local" if self._owned == "local" else "this process's")
        return f"<RayCluster {where}>"

    async def connect(self) -> None:
        """Connect once (see the module docstring); a StartupError says why it failed."""
        async with self._lock:
            if ray.is_initialized():
                self.host = _driver_address()
                return
            if self._address is not None:
                await self._join(self._address)
            else:
                await self._start_local()

    async def _join(self, address: str) -> None:
        try:
            await asyncio.to_thread(
                ray.init,
                address=address,
                namespace=_NAMESPACE,
                log_to_driver=False,
                include_dashboard=False,
            )
        except Exception as exc:
            raise StartupError(
                "ray", f"cannot join the Ray cluster at {address}: {type(exc).__name__}: {exc}"
            ) from exc
        self._owned = "joined"
        self.host = _driver_address()
        log.info("ray.joined", address=address, host=self.host)

    async def _start_local(self) -> None:
        if os.environ.get("RAY_AUTH_MODE") != "token":
            raise StartupError(
                "ray",
                "cannot start a local Ray: Ray was imported before Minions could turn its token "
                "authentication on, and without it a local Ray's ports are open to the network. "
                "Import ray after minions, start Ray yourself (ray.init), or give a cluster's "
                "address (ray_address)",
            )
        directory = Path(tempfile.mkdtemp(prefix="minions-ray-", dir="/tmp"))
        self._directory = directory
        self._start_watchdog(directory)
        try:
            await asyncio.to_thread(
                ray.init,
                include_dashboard=False,
                _node_ip_address=LOCAL_HOST,
                log_to_driver=False,
                namespace=_NAMESPACE,
                _temp_dir=str(directory),
                object_store_memory=_OBJECT_STORE_BYTES,
                runtime_env={"env_vars": {"PYTHONPATH": _program_path()}},
            )
        except Exception as exc:
            await self._stop_local()
            raise StartupError(
                "ray", f"cannot start a local Ray: {type(exc).__name__}: {exc}"
            ) from exc
        self._owned = "local"
        self.host = LOCAL_HOST
        log.info("ray.started", directory=str(directory))

    def _start_watchdog(self, directory: Path) -> None:
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", ray_reaper.__file__, str(directory), str(os.getpid())],
                stdin=read,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a signal to this process group does not reach it
                close_fds=True,
            )
        finally:
            os.close(read)
        self._lifeline = write

    async def close(self) -> None:
        """Disconnect; stop the local Ray this runtime started."""
        async with self._lock:
            if self._owned == "joined":
                await asyncio.to_thread(ray.shutdown)
            elif self._owned == "local":
                await self._stop_local()
            self._owned = None

    async def _stop_local(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(ray.shutdown)
        directory = self._directory
        if directory is not None:
            ray_reaper.reap(str(directory), exclude=(os.getpid(),))
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.write(self._lifeline, ray_reaper.DISARM)
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.wait)
            self._watchdog = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            self._directory = None
        log.info("ray.stopped")


def _driver_address() -> str:
    """The address of this process's node, where Ray actors can reach it."""
    address: Any = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return str(address)


def _program_path() -> str:
    """The program's own import paths (``sys.path`` entries outside the installation)."""
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or any(path.startswith(root) for root in installed):
            continue
        if path not in paths:
            paths.append(path)
    return os.pathsep.join(paths)

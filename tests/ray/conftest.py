"""A real local Ray for the Ray backend's tests: one per test module, always shut down.

Ray's processes listen on every network interface even when told 127.0.0.1, so these tests
run only inside a private network namespace, where there is nothing but loopback:
``scripts/test`` runs the suite in one (``unshare -n``) when the machine allows it. Elsewhere,
and where Ray is not installed, they are skipped with the reason.

The suite-wide check that a test leaves no process behind is narrowed here to what the tests
start themselves: the Ray instance's own processes (and the workers it keeps) live for the
whole module, and are reaped when it ends, before any other test runs.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import secrets
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from minions.isolated import ray_reaper
from tests.conftest import LEAK_GRACE_SECONDS

ROOT = Path(__file__).resolve().parents[2]


_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def _private_network() -> bool:
    """Whether loopback is the only network interface up in this process's network namespace
    (a fresh namespace may hold other devices, down)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            for _, name in socket.if_nameindex():
                request = struct.pack("16sH14x", name.encode(), 0)
                flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
                if name != "lo" and flags & _IFF_UP:
                    return False
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[set[int]]:
    """Start Ray in this process (2 CPUs, 127.0.0.1, no dashboard, token authentication);
    yields the pids of its node processes. Shut down and reaped at the end of the module."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip('Ray is not installed: pip install "minions[ray]" to run the Ray tests')
    if not _private_network():
        pytest.skip(
            "a local Ray listens on every network interface, so its tests run only in a private "
            "network namespace: run them with scripts/test (unshare -n, as root)"
        )
    # Token authentication is read when ray is imported; the workers import the test modules.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    import ray  # only now: the environment above must be set when Ray is imported

    before = {p.pid for p in psutil.Process().children()}
    directory = tempfile.mkdtemp(prefix="mr-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        namespace="minions-tests",
        _temp_dir=directory,
        object_store_memory=80 * 1024 * 1024,
    )
    try:
        yield {p.pid for p in psutil.Process().children()} - before
    finally:
        ray.shutdown()
        ray_reaper.reap(directory, exclude=(os.getpid(),))
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leftover_processes(ray_instance: set[int]) -> Iterator[None]:
    """Fail the test if a process it started outlives it (Ray's own processes aside)."""
    yield
    ray_owned: set[int] = set()
    for pid in ray_instance:
        try:
            ray_owned |= {p.pid for p in psutil.Process(pid).children(recursive=True)} | {pid}
        except psutil.NoSuchProcess:
            continue
    leftover = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in ray_owned and child.status() != psutil.STATUS_ZOMBIE:
                leftover.append(child)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(leftover, timeout=LEAK_GRACE_SECONDS)
    for proc in alive:
        proc.kill()
    if alive:
        pytest.fail(f"test left {len(alive)} process(es) running: {[p.pid for p in alive]}")

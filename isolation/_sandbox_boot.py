"""Inside a sandbox zygote: enter the sandbox, load the component's code, fork its children.

``python -I -m isolation._sandbox_boot FD PARENT`` is started by ``_sandbox_zygote`` for one
sandboxed component: a fresh interpreter, its environment reduced to the variables the sandbox
allows, so that nothing of the runtime's memory — environment, configuration, credentials —
was ever in it. On the SEQPACKET socket ``FD`` it reads its *boot job* (sent in pieces, see
``send_boot_job``), then, in this order:

1. dies with its parent (``PARENT``), closes every descriptor it was not given;
2. imports the library modules the job names (Minions' own, from the Python installation or
   the project's editable install): trusted code, loaded before the sandbox so that it needs
   no rule;
3. enters the sandbox (``_sandbox.enforce.enter_zygote``): from here on everything is held;
4. answers host names from the parent's table, imports the program's modules from their exact
   files, runs the job's ``preload`` entry (which loads the component's module, and a one-file
   script's code) and prepares the remote interfaces of the classes the children will serve;
5. checks that loading the code left no process or thread behind, and answers ``ready`` — or
   ``boot_failed`` with the error, and exits;
6. runs the zygote loop: every child it forks first takes its own layer of the sandbox.

Everything that loaded the component's code runs inside the sandbox, so a hostile module can
do no more while it is imported than the sandbox allows; and it could have changed this
process as it liked, which is why the runtime trusts nothing this zygote says (see
``_zygote``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import socket
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information

from ._channel import LIFECYCLE
from ._errors import ErrorReport
from ._fork import close_fds_except
from ._interface import remote_interface
from ._lifeline import die_with_parent
from ._protocol import unpack_untrusted
from ._sandbox import enforce
from ._sandbox.imports import install_module_files
from ._sandbox.plan import SandboxPlan
from ._sandbox.resolver import install_resolver
from ._spec import resolve
from ._zygote_loop import MAX_MESSAGE_BYTES, ZygoteLoop, pack, warm_codecs

__all__ = ["BOOT_PIECE_BYTES", "main", "send_boot_job"]

#: The boot job travels in pieces of this size (SEQPACKET messages are bounded).
BOOT_PIECE_BYTES = 32 * 1024
#: Largest boot job accepted.
_MAX_BOOT_BYTES = 16 * 1024 * 1024


def send_boot_job(channel: socket.socket, job: Mapping[str, Any]) -> None:
    """Send ``job`` to a sandbox zygote: a header with its size, then the pieces."""
    data: bytes = msgpack.packb(job)
    channel.send(msgpack.packb({"size": len(data)}))
    for start in range(0, len(data), BOOT_PIECE_BYTES):
        channel.send(data[start : start + BOOT_PIECE_BYTES])


def _read_boot_job(channel: socket.socket) -> dict[str, Any]:
    header = unpack_untrusted(channel.recv(MAX_MESSAGE_BYTES))
    size = header.get("size") if isinstance(header, dict) else None
    if type(size) is not int or not 0 < size <= _MAX_BOOT_BYTES:
        raise ValueError(f"malformed boot job header: {header!r}")
    pieces = bytearray()
    while len(pieces) < size:
        piece = channel.recv(BOOT_PIECE_BYTES)
        if not piece:
            raise EOFError("the runtime closed the channel during the boot job")
        pieces += piece
    job = unpack_untrusted(bytes(pieces))
    if not isinstance(job, dict):
        raise ValueError("malformed boot job")
    return job


def _check_quiet(modules: str) -> None:
    """Refuse code that started a process or a thread while it was being loaded."""
    try:
        started = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        started = None
    if started is not None:
        raise RuntimeError(
            f"loading {modules} started a process inside the sandbox; a sandboxed component "
            "may not start processes (move that code out of the module's top level)"
        )
    if threading.active_count() > 1:
        raise RuntimeError(
            f"loading {modules} started a thread; the sandbox zygote must stay single-threaded "
            "to fork its children (start threads in startup() or run() instead)"
        )


def _boot(job: Mapping[str, Any]) -> SandboxPlan:
    plan = SandboxPlan.from_data(job["plan"])
    for name in job["trusted_modules"]:
        importlib.import_module(name)
    warm_codecs()
    enforce.enter_zygote(plan)
    install_resolver(plan.hosts)
    sys.path[:] = [str(path) for path in job["sys_path"]]
    sys.argv = [str(job.get("argv0", ""))]
    install_module_files(job["modules"])
    if job.get("preload"):
        resolve(job["preload"], what="preload entry")(job.get("preload_args"))
    for name in job["warm"]:
        remote_interface(resolve(name, what="class"), LIFECYCLE)
    _check_quiet(f"the code of {plan.component}")
    gc.freeze()  # the children share these pages; the collector must not write to them
    return plan


def main() -> int:
    channel_fd, parent = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)
    channel = socket.socket(fileno=channel_fd)
    close_fds_except({0, 1, 2, channel_fd})
    try:
        _boot(_read_boot_job(channel))
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        with contextlib.suppress(OSError):
            channel.send(pack({"op": "boot_failed", "error": ErrorReport.of(exc).to_data()}))
        return 1
    channel.send(pack({"op": "ready"}))
    return ZygoteLoop(channel, spare=True, child_setup=enforce.enter_child, warm=False).run()


if __name__ == "__main__":  # pragma: no cover - runs in the sandbox zygote
    code = 1
    try:
        code = main()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)

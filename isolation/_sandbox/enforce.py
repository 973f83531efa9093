"""The steps that put a process into its sandbox, in the order they must happen.

A sandbox is one process tree: the *sandbox zygote*, a fresh interpreter started for one
component, and the children it forks. Three moments:

1. :func:`enter_zygote`, in the sandbox zygote, while it is single-threaded and before any code
   of the component is imported: resource limits (open files, file size, no core dumps), the
   environment reduced to the allowed variables, not dumpable (nobody of the same user may
   ptrace it or read its memory through ``/proc``), every capability dropped (a root process
   keeps its uid but loses its powers: no overriding file modes, no raising limits back, no raw
   sockets), the Landlock layer (files, TCP ports, signal and abstract-socket scoping), then the
   zygote's seccomp filter. Everything forked later inherits all of it.
2. :func:`enter_child`, in each child right after the fork, still single-threaded: a Landlock
   layer of its own that only scopes signals and abstract sockets — so it cannot signal its
   zygote or its siblings either — and the child's seccomp filter (no processes; signals to
   itself only).
3. :func:`seal_channel`, once the child's channel to its parent is connected: the channel's
   seccomp filter (no new Unix socket, no change to a resource limit).

Landlock before ABI 8 holds only the thread that restricts itself (and what it creates later),
which is why steps 1 and 2 run before any thread exists; seccomp filters are installed on every
thread at once (``TSYNC``), which is why step 3 may run after ZeroMQ started its I/O thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import tempfile
from typing import Any, Final

from . import landlock, seccomp
from .plan import SandboxPlan

__all__ = ["current_plan", "enter_child", "enter_zygote", "seal_channel"]

_PR_SET_DUMPABLE: Final = 4
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAPBSET_DROP: Final = 24
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522
_LAST_CAPABILITY: Final = 63  # the bounding set's drops stop at the first EINVAL below this

_libc = ctypes.CDLL(None, use_errno=True)
try:
    _prctl: Any = _libc.prctl
    _prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    _prctl.restype = ctypes.c_int
except AttributeError:  # not Linux: the module imports; a sandbox is refused before any use
    _prctl = None

#: The plan of the sandbox this process is in (None: not in one).
_plan: SandboxPlan | None = None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def current_plan() -> SandboxPlan | None:
    """The sandbox this process is in, if any."""
    return _plan


def _linux() -> Any:
    if _prctl is None:
        raise OSError(errno.ENOSYS, "a sandbox needs Linux")
    return _prctl


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def _drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    for capability in range(_LAST_CAPABILITY + 1):
        if _linux()(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            # EINVAL past the kernel's last capability; EPERM without CAP_SETPCAP (not root),
            # when there is nothing to drop from it anyway.
            break
    with contextlib.suppress(OSError):
        _call(_linux()(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _call(_libc.capset(ctypes.byref(header), data), "capset")


def _landlock_layer(plan: SandboxPlan) -> None:
    abi = plan.landlock_abi
    enforced = plan.enforced
    fs = landlock.fs_rights(abi) if "filesystem" in enforced else 0
    net = (
        landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP
        if "network" in enforced and abi >= 4
        else 0
    )
    scoped = (
        landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET if "signals" in enforced else 0
    )
    if not fs | net | scoped:
        return
    with landlock.Ruleset(fs=fs, net=net, scoped=scoped) as ruleset:
        if fs:
            for path in plan.read_dirs:
                ruleset.allow_path(path, landlock.FS_READ)
            for path in plan.read_files:
                ruleset.allow_path(path, landlock.FS_READ_FILE)
            for path in plan.write_dirs:
                ruleset.allow_path(path, landlock.FS_WRITE)
            for path in plan.read_write_files:
                ruleset.allow_path(path, landlock.FS_READ_FILE | landlock.FS_WRITE_FILE)
        if net:
            for port in plan.tcp_ports:
                ruleset.allow_port(port, landlock.NET_CONNECT_TCP)
        ruleset.restrict_self()


def _uses_seccomp(plan: SandboxPlan) -> bool:
    return bool({"syscalls", "network"} & plan.enforced)


def enter_zygote(plan: SandboxPlan) -> None:
    """Step 1 (see the module docstring): this process and all it forks enter the sandbox."""
    global _plan
    _limit(resource.RLIMIT_NOFILE, plan.max_open_files)
    _limit(resource.RLIMIT_FSIZE, plan.max_file_bytes)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ.clear()
    os.environ.update(plan.environment)
    tempfile.tempdir = None  # found again from TMPDIR, the sandbox's own scratch directory
    _call(_linux()(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    # No privilege gained through exec (setuid files, file capabilities) from here on; Landlock
    # requires it of a process without CAP_SYS_ADMIN, which is about to be dropped.
    _call(_linux()(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _drop_capabilities()
    _landlock_layer(plan)
    if _uses_seccomp(plan):
        seccomp.install(seccomp.zygote_filter(tcp=plan.network))
    _plan = plan


def enter_child() -> None:
    """Step 2: a freshly forked child of the sandbox zygote takes its own layer and filter."""
    plan = _plan
    if plan is None:
        raise RuntimeError("enter_child() outside a sandbox: enter_zygote() never ran here")
    _call(_linux()(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    if "signals" in plan.enforced:
        with landlock.Ruleset(
            scoped=landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET
        ) as ruleset:
            ruleset.restrict_self()
    if "syscalls" in plan.enforced:
        seccomp.install(seccomp.child_filter(os.getpid()))


def seal_channel() -> None:
    """Step 3: the channel is connected; no new Unix socket, no resource limit changed."""
    plan = _plan
    if plan is None:
        raise RuntimeError("seal_channel() outside a sandbox: enter_zygote() never ran here")
    if "syscalls" in plan.enforced:
        seccomp.install(seccomp.channel_filter())

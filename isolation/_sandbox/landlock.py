"""Landlock through ctypes: rulesets of filesystem and TCP-port rights, and scoping.

Landlock (Linux 5.13+) lets an unprivileged process restrict itself, and everything it later
forks, to the files and ports it lists; signals and abstract Unix sockets can be *scoped* to
the processes of the same domain (ABI 6, Linux 6.12). Each ``restrict_self`` adds a layer: a
process is held by every layer it and its ancestors added. Written from the kernel's UAPI
(``include/uapi/linux/landlock.h``) and its documentation.

Before ABI 8 a layer applies to the calling thread only (and to threads and processes it
creates afterwards): it must be added while the process has a single thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

__all__ = [
    "FS_READ",
    "FS_READ_FILE",
    "FS_WRITE",
    "NET_BIND_TCP",
    "NET_CONNECT_TCP",
    "SCOPE_ABSTRACT_UNIX_SOCKET",
    "SCOPE_SIGNAL",
    "Ruleset",
    "abi_version",
    "fs_rights",
]

_SYS_CREATE_RULESET: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1 << 0
_RULE_PATH_BENEATH: Final = 1
_RULE_NET_PORT: Final = 2

FS_EXECUTE: Final = 1 << 0
FS_WRITE_FILE: Final = 1 << 1
FS_READ_FILE: Final = 1 << 2
FS_READ_DIR: Final = 1 << 3
FS_REMOVE_DIR: Final = 1 << 4
FS_REMOVE_FILE: Final = 1 << 5
FS_MAKE_CHAR: Final = 1 << 6
FS_MAKE_DIR: Final = 1 << 7
FS_MAKE_REG: Final = 1 << 8
FS_MAKE_SOCK: Final = 1 << 9
FS_MAKE_FIFO: Final = 1 << 10
FS_MAKE_BLOCK: Final = 1 << 11
FS_MAKE_SYM: Final = 1 << 12
FS_REFER: Final = 1 << 13  # ABI 2
FS_TRUNCATE: Final = 1 << 14  # ABI 3
FS_IOCTL_DEV: Final = 1 << 15  # ABI 5
NET_BIND_TCP: Final = 1 << 0  # ABI 4
NET_CONNECT_TCP: Final = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
SCOPE_SIGNAL: Final = 1 << 1  # ABI 6

#: Reading: files and directory listings.
FS_READ: Final = FS_READ_FILE | FS_READ_DIR
#: Writing within a directory: everything but executing and making devices, sockets or pipes.
FS_WRITE: Final = (
    FS_READ
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)
#: Rights that only mean something on a directory; a rule for a file must leave them out.
_DIR_ONLY: Final = (
    FS_READ_DIR
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_CHAR
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_BLOCK
    | FS_MAKE_SYM
    | FS_REFER
)


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of this ABI can refuse."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (or it is disabled)."""
    result = _syscall(
        ctypes.c_long(_SYS_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    if result < 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        _check(result, "landlock_create_ruleset(VERSION)")
    return int(result)


class Ruleset:
    """One Landlock layer being built: handled rights, then rules, then ``restrict_self``."""

    def __init__(self, *, fs: int = 0, net: int = 0, scoped: int = 0) -> None:
        attr = _RulesetAttr(fs, net, scoped)
        size = ctypes.sizeof(attr) if scoped else 16  # kernels before ABI 6 know two fields
        self._fs = fs
        self._fd = _check(
            _syscall(
                ctypes.c_long(_SYS_CREATE_RULESET),
                ctypes.byref(attr),
                ctypes.c_size_t(size),
                ctypes.c_uint32(0),
            ),
            "landlock_create_ruleset",
        )

    def __enter__(self) -> Ruleset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def allow_path(self, path: str, rights: int) -> None:
        """Allow ``rights`` on ``path`` and everything beneath it (a file: on that file)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= ~_DIR_ONLY
            attr = _PathBeneathAttr(rights & self._fs, fd)
            _check(
                _syscall(
                    ctypes.c_long(_SYS_ADD_RULE),
                    ctypes.c_int(self._fd),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    ctypes.byref(attr),
                    ctypes.c_uint32(0),
                ),
                f"landlock_add_rule({path})",
            )
        finally:
            os.close(fd)

    def allow_port(self, port: int, rights: int) -> None:
        attr = _NetPortAttr(rights, port)
        _check(
            _syscall(
                ctypes.c_long(_SYS_ADD_RULE),
                ctypes.c_int(self._fd),
                ctypes.c_int(_RULE_NET_PORT),
                ctypes.byref(attr),
                ctypes.c_uint32(0),
            ),
            f"landlock_add_rule(port {port})",
        )

    def restrict_self(self) -> None:
        """Enforce this layer on the calling thread and what it creates from now on."""
        _check(
            _syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(self._fd), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )

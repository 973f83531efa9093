"""seccomp filters through ctypes: which system calls a sandboxed process may make.

A filter is a classic-BPF program the kernel runs on every system call of the process (and of
everything it forks); it sees the call's number and arguments (never memory they point to) and
answers allow, fail with an errno, or kill. Filters only ever add up: a process is held by every
filter installed in it and its ancestors. Written from the kernel's documentation
(``Documentation/userspace-api/seccomp_filter.rst``) for x86_64, the only architecture whose
system call numbers this module knows; :data:`SUPPORTED_MACHINES` says so, and the planner
refuses a sandbox elsewhere.

Three filters, installed at three moments (see ``enforce``):

- :func:`zygote_filter`, before any of the component's code runs: no new programs, no tracing,
  no kernel modules, mounts, namespaces, BPF, io_uring, keyrings, handles that bypass paths, no
  clock or host changes, no SysV IPC, no leaving the process group, no listening socket; sockets
  only of the Unix family, plus TCP when the sandbox may reach the network;
- :func:`child_filter`, in each child right after it is forked: no processes (threads only), and
  signals only to itself;
- :func:`channel_filter`, once the child's channel to its parent is connected: no new Unix
  sockets (Landlock does not govern connecting to a socket's path before ABI 9) and no changes
  to resource limits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Any, Final

__all__ = [
    "SUPPORTED_MACHINES",
    "available",
    "channel_filter",
    "child_filter",
    "install",
    "zygote_filter",
]

SUPPORTED_MACHINES: Final = ("x86_64",)

# Classic BPF instructions (linux/bpf_common.h).
_LD_W_ABS: Final = 0x20
_JEQ_K: Final = 0x15
_JGE_K: Final = 0x35
_JSET_K: Final = 0x45
_AND_K: Final = 0x54
_RET_K: Final = 0x06

_AUDIT_ARCH_X86_64: Final = 0xC000003E
_X32_SYSCALL_BIT: Final = 0x40000000
_RET_KILL_PROCESS: Final = 0x80000000
_RET_ERRNO: Final = 0x00050000
_RET_ALLOW: Final = 0x7FFF0000

_SYS_SECCOMP: Final = 317
_SET_MODE_FILTER: Final = 1
_FILTER_FLAG_TSYNC: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

# struct seccomp_data: nr, arch, instruction_pointer, args[6] (little-endian 64-bit each).
_NR: Final = 0
_ARCH: Final = 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index


def _arg_high(index: int) -> int:
    return 20 + 8 * index


#: x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
NR: Final[dict[str, int]] = {
    "ioctl": 16,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "socket": 41,
    "connect": 42,
    "listen": 50,
    "socketpair": 53,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "kill": 62,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "ptrace": 101,
    "syslog": 103,
    "setpgid": 109,
    "setsid": 112,
    "setrlimit": 160,
    "uselib": 134,
    "personality": 135,
    "mknod": 133,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "tkill": 200,
    "lookup_dcookie": 212,
    "semtimedop": 220,
    "clock_settime": 227,
    "tgkill": 234,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "migrate_pages": 256,
    "mknodat": 259,
    "unshare": 272,
    "move_pages": 279,
    "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "prlimit64": 302,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "clone3": 435,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
}

#: The calls a busy process makes most, allowed first so that they pass in a few instructions
#: (a filter runs on every system call): read, write, close, poll, fstat, lseek, mmap, munmap,
#: brk, rt_sigprocmask, sendto, recvfrom, sendmsg, recvmsg, getpid, gettid, futex,
#: epoll_wait, clock_gettime, epoll_pwait, ppoll, newfstatat, getrandom, epoll_pwait2.
_HOT: Final = (
    0, 1, 3, 7, 5, 8, 9, 11, 12, 14, 44, 45, 46, 47, 39, 186, 202, 232, 228, 281, 271, 262, 318,
    441,
)  # fmt: skip

#: Denied in every sandboxed process, with EPERM.
_DENIED: Final = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "pidfd_getfd", "kcmp", "process_madvise", "name_to_handle_at", "open_by_handle_at",
    "syslog", "uselib", "personality", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "swapon", "swapoff", "reboot", "iopl", "ioperm", "quotactl",
    "quotactl_fd", "lookup_dcookie", "vhangup", "sethostname", "setdomainname",
    "fanotify_init", "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv",
    "msgctl", "semget", "semop", "semctl", "semtimedop", "setsid", "setpgid", "listen",
    "mknod", "mknodat", "migrate_pages", "move_pages",
)  # fmt: skip

_AF_UNIX: Final = 1
_AF_INET: Final = 2
_AF_INET6: Final = 10
_SOCK_STREAM: Final = 1
_SOCK_SEQPACKET: Final = 5
_IPPROTO_TCP: Final = 6
_CLONE_THREAD: Final = 0x00010000
#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NEW_NAMESPACES: Final = 0x7E020000
_TIOCSTI: Final = 0x5412
_TIOCLINUX: Final = 0x541C


class _Program:
    """A tiny assembler: instructions with symbolic forward jump targets."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int | str, int | str, int] | str] = []

    def op(self, code: int, k: int = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self._items.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self._items.append(name)

    def ret(self, action: int) -> None:
        self.op(_RET_K, action)

    def load(self, offset: int) -> None:
        self.op(_LD_W_ABS, offset)

    def assemble(self) -> bytes:
        labels: dict[str, int] = {}
        position = 0
        for item in self._items:
            if isinstance(item, str):
                labels[item] = position
            else:
                position += 1
        out: list[bytes] = []
        position = 0
        for item in self._items:
            if isinstance(item, str):
                continue
            code, jt, jf, k = item

            def offset(target: int | str, at: int = position) -> int:
                if isinstance(target, int):
                    return target
                distance = labels[target] - at - 1
                if not 0 <= distance < 256:
                    raise ValueError(f"seccomp jump to {target!r} out of range")
                return distance

            out.append(struct.pack("<HBBI", code, offset(jt), offset(jf), k & 0xFFFFFFFF))
            position += 1
        return b"".join(out)


def _errno(code: int) -> int:
    return _RET_ERRNO | (code & 0xFFFF)


def _start(program: _Program) -> None:
    """Kill a call made through another ABI (i386 int 0x80, x32): their numbers differ."""
    program.load(_ARCH)
    program.op(_JEQ_K, _AUDIT_ARCH_X86_64, jt=1, jf=0)
    program.ret(_RET_KILL_PROCESS)
    program.load(_NR)
    program.op(_JGE_K, _X32_SYSCALL_BIT, jt="kill", jf=0)


def _end(program: _Program) -> None:
    program.label("allow")
    program.ret(_RET_ALLOW)
    program.label("deny")
    program.ret(_errno(errno.EPERM))
    program.label("kill")
    program.ret(_RET_KILL_PROCESS)


def zygote_filter(*, tcp: bool) -> bytes:
    """The filter of everything in the sandbox (see the module docstring); ``tcp``: the
    sandbox may open TCP connections (to the ports Landlock allows)."""
    p = _Program()
    _start(p)
    for number in _HOT:
        p.op(_JEQ_K, number, jt="allow")
    for name in _DENIED:
        p.op(_JEQ_K, NR[name], jt="deny")
    # clone3 passes its flags in memory, which a filter cannot read: ENOSYS makes the C library
    # fall back to clone, whose flags it can.
    p.op(_JEQ_K, NR["clone3"], jt="enosys")
    p.op(_JEQ_K, NR["clone"], jt="clone")
    p.op(_JEQ_K, NR["socket"], jt="socket")
    p.op(_JEQ_K, NR["socketpair"], jt="socketpair")
    p.op(_JEQ_K, NR["ioctl"], jt="ioctl", jf="allow")
    p.label("clone")
    p.load(_arg_low(0))
    p.op(_JSET_K, _CLONE_NEW_NAMESPACES, jt="deny", jf="allow")
    p.label("ioctl")  # no typing into the terminal of whoever started the system
    p.load(_arg_low(1))
    p.op(_JEQ_K, _TIOCSTI, jt="deny")
    p.op(_JEQ_K, _TIOCLINUX, jt="deny", jf="allow")
    p.label("socketpair")  # connected pairs only: a datagram pair could send to any path
    p.load(_arg_low(0))
    p.op(_JEQ_K, _AF_UNIX, jt=0, jf="no_family")
    p.load(_arg_low(1))
    p.op(_AND_K, 0xF)  # without SOCK_NONBLOCK | SOCK_CLOEXEC
    p.op(_JEQ_K, _SOCK_STREAM, jt="allow")
    p.op(_JEQ_K, _SOCK_SEQPACKET, jt="allow", jf="no_family")
    p.label("socket")
    p.load(_arg_low(0))
    p.op(_JEQ_K, _AF_UNIX, jt="allow")
    if tcp:
        p.op(_JEQ_K, _AF_INET, jt="inet")
        p.op(_JEQ_K, _AF_INET6, jt="inet", jf="no_family")
        p.label("inet")  # TCP only: Landlock governs TCP ports, not UDP, MPTCP or SCTP
        p.load(_arg_low(1))
        p.op(_AND_K, 0xF)
        p.op(_JEQ_K, _SOCK_STREAM, jt=0, jf="no_family")
        p.load(_arg_low(2))
        p.op(_JEQ_K, 0, jt="allow")
        p.op(_JEQ_K, _IPPROTO_TCP, jt="allow", jf="no_family")
    p.label("no_family")
    p.ret(_errno(errno.EAFNOSUPPORT))
    p.label("enosys")
    p.ret(_errno(errno.ENOSYS))
    _end(p)
    return p.assemble()


def child_filter(pid: int) -> bytes:
    """A child's own filter: threads but no processes; signals to itself (``pid``) only."""
    p = _Program()
    _start(p)
    p.op(_JEQ_K, NR["fork"], jt="deny")
    p.op(_JEQ_K, NR["vfork"], jt="deny")
    p.op(_JEQ_K, NR["tkill"], jt="deny")
    p.op(_JEQ_K, NR["pidfd_open"], jt="deny")
    p.op(_JEQ_K, NR["pidfd_send_signal"], jt="deny")
    p.op(_JEQ_K, NR["clone"], jt="clone")
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        p.op(_JEQ_K, NR[name], jt="signal")
    p.ret(_RET_ALLOW)
    p.label("clone")
    p.load(_arg_low(0))
    p.op(_JSET_K, _CLONE_THREAD, jt="allow", jf="deny")
    p.label("signal")  # the target process is the first argument of all four
    p.load(_arg_low(0))
    p.op(_JEQ_K, pid, jt="allow", jf="deny")
    _end(p)
    return p.assemble()


def channel_filter() -> bytes:
    """Once the channel is connected: no new Unix socket, no change to a resource limit."""
    p = _Program()
    _start(p)
    p.op(_JEQ_K, NR["socketpair"], jt="refuse")
    p.op(_JEQ_K, NR["setrlimit"], jt="deny")
    p.op(_JEQ_K, NR["prlimit64"], jt="prlimit")
    p.op(_JEQ_K, NR["socket"], jt=0, jf="allow")
    p.load(_arg_low(0))
    p.op(_JEQ_K, _AF_UNIX, jt="refuse", jf="allow")
    p.label("prlimit")  # reading a limit (new_limit NULL) stays allowed: getrlimit uses it
    p.load(_arg_low(2))
    p.op(_JEQ_K, 0, jt=0, jf="deny")
    p.load(_arg_high(2))
    p.op(_JEQ_K, 0, jt="allow", jf="deny")
    p.label("refuse")
    p.ret(_errno(errno.EACCES))
    _end(p)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
try:
    _prctl: Any = _libc.prctl
    _prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    _prctl.restype = ctypes.c_int
except AttributeError:  # not Linux: the module imports; nothing here is ever installed
    _prctl = None


def install(program: bytes) -> None:
    """Install ``program`` on every thread of this process (``no_new_privs`` is set first)."""
    if _prctl is None:
        raise OSError(errno.ENOSYS, "seccomp filters need Linux")
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    result = _libc.syscall(
        ctypes.c_long(_SYS_SECCOMP),
        ctypes.c_uint(_SET_MODE_FILTER),
        ctypes.c_uint(_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result != 0:
        err = ctypes.get_errno()
        if result > 0:  # TSYNC: the id of a thread that could not be synchronised
            raise OSError(errno.EBUSY, f"seccomp: thread {result} has another filter")
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")


def available() -> bool:
    """Whether this kernel installs seccomp filters (asked without installing one)."""
    # SECCOMP_GET_ACTION_AVAIL (2) succeeds for a known action on a kernel with filters.
    action = ctypes.c_uint32(_RET_ERRNO)
    result = _libc.syscall(
        ctypes.c_long(_SYS_SECCOMP), ctypes.c_uint(2), ctypes.c_uint(0), ctypes.byref(action)
    )
    return bool(result == 0)

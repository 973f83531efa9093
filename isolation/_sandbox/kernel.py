"""What this kernel offers a sandbox, detected once, and what each part of a sandbox needs.

:func:`probe_kernel` asks the kernel (Landlock's ABI version, whether seccomp filters install,
the machine) and returns a :class:`KernelSupport`. Everything that decides whether a sandbox can
be enforced takes a ``KernelSupport`` as an argument: that is the seam through which tests (and
``Zygote``'s ``kernel=`` parameter) describe another kernel — one without Landlock, say — without
touching this one.
"""

from __future__ import annotations

import functools
import platform
import sys
from dataclasses import dataclass

from . import landlock, seccomp

__all__ = ["KernelSupport", "probe_kernel"]

#: Landlock ABI versions and the first Linux release with each, for messages.
_LINUX_WITH_ABI = {1: "5.13", 2: "5.19", 3: "6.2", 4: "6.7", 5: "6.10", 6: "6.12", 7: "6.15"}
_LANDLOCK_HINT = (
    "a kernel built with CONFIG_SECURITY_LANDLOCK=y and 'landlock' in its lsm= boot parameter"
)


@dataclass(frozen=True)
class KernelSupport:
    """What the kernel offers: ``landlock_abi`` (0: no Landlock), whether seccomp filters can
    be installed, and the machine (seccomp filters are written for x86_64)."""

    landlock_abi: int
    seccomp: bool
    machine: str

    def missing(self, part: str, *, tcp_ports: bool) -> str | None:
        """Why ``part`` of a sandbox cannot be enforced here, or None if it can.

        ``tcp_ports``: the sandbox lists endpoints (Landlock must then filter TCP ports).
        """
        if part == "filesystem":
            return self._landlock(3, "for its read and write lists (and to stop truncation)")
        if part == "signals":
            return self._landlock(6, "to keep its signals inside the sandbox")
        filters = self._filters()
        if part == "syscalls":
            return filters
        if part == "network":
            if filters:
                return filters
            if tcp_ports:
                return self._landlock(4, "to allow TCP connections to the listed ports only")
            return None
        raise ValueError(f"unknown sandbox part {part!r}")

    def _landlock(self, abi: int, purpose: str) -> str | None:
        if self.landlock_abi >= abi:
            return None
        if self.landlock_abi:
            have = f"Landlock ABI {self.landlock_abi} (a newer kernel offers more)"
        else:
            have = f"no Landlock (it needs {_LANDLOCK_HINT})"
        return (
            f"Landlock ABI {abi} (Linux {_LINUX_WITH_ABI[abi]}) is needed {purpose}, and this "
            f"kernel offers {have}"
        )

    def _filters(self) -> str | None:
        if self.machine not in seccomp.SUPPORTED_MACHINES:
            return (
                f"seccomp filters are written for {', '.join(seccomp.SUPPORTED_MACHINES)} "
                f"only, and this machine is {self.machine}"
            )
        if not self.seccomp:
            return "this kernel does not install seccomp filters (it needs CONFIG_SECCOMP_FILTER)"
        return None


@functools.cache
def probe_kernel() -> KernelSupport:
    """Ask this kernel what it offers (once per process)."""
    if sys.platform != "linux":  # the system call numbers below are Linux's
        return KernelSupport(landlock_abi=0, seccomp=False, machine=platform.machine())
    return KernelSupport(
        landlock_abi=landlock.abi_version(),
        seccomp=seccomp.available(),
        machine=platform.machine(),
    )

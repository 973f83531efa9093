"""From a :class:`~isolation.Sandbox` to the exact rules for one component, or a refusal.

:func:`plan_sandbox` runs in the parent, before anything of the component is started. It asks
the :class:`~isolation._sandbox.kernel.KernelSupport` for each part of the sandbox; a part the
kernel cannot enforce refuses the start (:class:`~isolation.SandboxUnavailable`, naming what is
missing and how to relax ``require`` knowingly) unless ``require`` leaves it out, in which case
it is listed in :attr:`SandboxPlan.unenforced` for the caller to log — never a silent
downgrade. Then it turns the settings into paths and ports:

- read (files and listings beneath): the Python installation (prefixes, standard library,
  site-packages), the system's shared libraries and time zones, the ``read`` list; with network
  endpoints also the certificate stores and resolver files;
- read (that file only): the program's own module files (``code_files``), which the sandbox
  imports by their exact path (see ``imports``): neither their directory nor its other files
  (``.env``, ``minions.toml``, the private ``.minions/``) become readable;
- read and write: the ``write`` directories (created, owner-only); ``/dev/null``;
- TCP connect: the ports of the ``network`` endpoints.

No path may contain a ``protected`` directory (the system's private one), nor lie inside one
unless it is inside an ``allowed_inside`` directory (a scratch area).

The plan is plain data (:meth:`SandboxPlan.to_data`): it travels to the sandbox's own process,
which applies it (see ``enforce``).
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SandboxUnavailable
from .._limits import SANDBOX_PARTS, Sandbox
from .kernel import KernelSupport

__all__ = ["SandboxPlan", "installation_dirs", "plan_sandbox"]

_MIB = 1024 * 1024
#: Shared libraries (loaded lazily by extension modules), locales, time zones.
_SYSTEM_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random")
#: What TLS and name lookups read, given to a sandbox that may reach the network.
_NETWORK_PATHS = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/services",
    "/etc/protocols",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/hosts",
)
_READ_WRITE_FILES = ("/dev/null",)


@dataclass(frozen=True)
class SandboxPlan:
    """The rules of one component's sandbox, as the sandbox's process applies them."""

    component: str
    enforced: frozenset[str]
    landlock_abi: int
    read_dirs: tuple[str, ...] = ()
    read_files: tuple[str, ...] = ()
    write_dirs: tuple[str, ...] = ()
    read_write_files: tuple[str, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    max_open_files: int = 256
    max_file_bytes: int = 64 * _MIB
    unenforced: tuple[str, ...] = ()

    @property
    def network(self) -> bool:
        """Whether the sandbox may open TCP connections at all."""
        return bool(self.tcp_ports) or "network" not in self.enforced

    def to_data(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "enforced": sorted(self.enforced),
            "landlock_abi": self.landlock_abi,
            "read_dirs": list(self.read_dirs),
            "read_files": list(self.read_files),
            "write_dirs": list(self.write_dirs),
            "read_write_files": list(self.read_write_files),
            "tcp_ports": list(self.tcp_ports),
            "hosts": {name: list(addresses) for name, addresses in self.hosts.items()},
            "environment": dict(self.environment),
            "max_open_files": self.max_open_files,
            "max_file_bytes": self.max_file_bytes,
            "unenforced": list(self.unenforced),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SandboxPlan:
        return cls(
            component=str(data["component"]),
            enforced=frozenset(data["enforced"]),
            landlock_abi=int(data["landlock_abi"]),
            read_dirs=tuple(data["read_dirs"]),
            read_files=tuple(data["read_files"]),
            write_dirs=tuple(data["write_dirs"]),
            read_write_files=tuple(data["read_write_files"]),
            tcp_ports=tuple(int(port) for port in data["tcp_ports"]),
            hosts={str(k): tuple(v) for k, v in data["hosts"].items()},
            environment={str(k): str(v) for k, v in data["environment"].items()},
            max_open_files=int(data["max_open_files"]),
            max_file_bytes=int(data["max_file_bytes"]),
            unenforced=tuple(data["unenforced"]),
        )


def installation_dirs() -> set[str]:
    """The directories of the running Python installation (what any sandbox may read)."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_path(key)
        if path:
            dirs.add(path)
    dirs.update(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.USER_SITE and site.USER_SITE in sys.path:
        dirs.add(site.USER_SITE)
    return {os.path.realpath(path) for path in dirs if os.path.isdir(path)}


def plan_sandbox(
    component: str,
    sandbox: Sandbox,
    *,
    kernel: KernelSupport,
    base_dir: Path,
    environ: Mapping[str, str],
    code_files: Iterable[str] = (),
    hosts: Mapping[str, tuple[str, ...]] | None = None,
    protected: Iterable[Path] = (),
    allowed_inside: Iterable[Path] = (),
) -> SandboxPlan:
    """The rules for ``component``'s sandbox, or :class:`SandboxUnavailable` saying why not.

    ``base_dir`` is where relative paths start (the project folder); ``environ`` where the
    allowed variables are read; ``hosts`` the addresses of the endpoints' names, resolved by
    the caller. Write directories are created here.
    """
    enforced, unenforced = _parts(component, sandbox, kernel)
    guard = _Guard(component, protected, allowed_inside)
    read_dirs = {path for path in (*installation_dirs(), *_existing(_SYSTEM_DIRS))}
    for path in read_dirs:
        guard.check(path, "the Python installation or the system's libraries include")
    read_files = set(_existing(_SYSTEM_FILES))
    for entry in sandbox.read:
        path = _resolve(component, base_dir, entry, "read")
        if not os.path.exists(path):
            raise SandboxUnavailable(
                f"cannot sandbox {component}: Sandbox(read=[...]) names {entry!r}, and "
                f"{path} does not exist"
            )
        guard.check(path, f"Sandbox(read=[{entry!r}]) gives it")
        (read_dirs if os.path.isdir(path) else read_files).add(path)
    write_dirs = []
    for entry in sandbox.write:
        path = _resolve(component, base_dir, entry, "write")
        guard.check(path, f"Sandbox(write=[{entry!r}]) gives it")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot sandbox {component}: cannot create its write directory {path}: {exc}"
            ) from exc
        if not os.path.isdir(path):
            raise SandboxUnavailable(
                f"cannot sandbox {component}: Sandbox(write=[{entry!r}]) is not a directory"
            )
        write_dirs.append(path)
    endpoints = sandbox.endpoints
    if endpoints:
        for path in _existing(_NETWORK_PATHS):
            (read_dirs if os.path.isdir(path) else read_files).add(path)
    for path in code_files:
        real = os.path.realpath(path)
        if not any(_beneath(real, directory) for directory in read_dirs):
            read_files.add(real)
    environment = {name: environ[name] for name in sandbox.env if name in environ}
    if write_dirs:
        environment["TMPDIR"] = write_dirs[0]  # tempfile's directory: its own scratch space
    return SandboxPlan(
        component=component,
        enforced=enforced,
        landlock_abi=kernel.landlock_abi,
        read_dirs=tuple(sorted(read_dirs)),
        read_files=tuple(sorted(read_files)),
        write_dirs=tuple(write_dirs),
        read_write_files=_existing(_READ_WRITE_FILES),
        tcp_ports=tuple(sorted({port for _, port in endpoints})),
        hosts=dict(hosts or {}),
        environment=environment,
        max_open_files=sandbox.max_open_files,
        max_file_bytes=sandbox.max_file_mb * _MIB,
        unenforced=tuple(unenforced),
    )


def _parts(
    component: str, sandbox: Sandbox, kernel: KernelSupport
) -> tuple[frozenset[str], list[str]]:
    required = frozenset(SANDBOX_PARTS if sandbox.require is None else sandbox.require)
    missing = {
        part: reason
        for part in sorted(SANDBOX_PARTS)
        if (reason := kernel.missing(part, tcp_ports=bool(sandbox.endpoints))) is not None
    }
    refused = sorted(set(missing) & required)
    if refused:
        reasons = "; ".join(f"{part}: {missing[part]}" for part in refused)
        relaxed = sorted(required - set(refused))
        shown = "{" + ", ".join(repr(part) for part in relaxed) + "}" if relaxed else "set()"
        raise SandboxUnavailable(
            f"cannot sandbox {component}: this kernel cannot enforce its "
            f"{', '.join(refused)} part{'s' if len(refused) > 1 else ''} ({reasons}). Run it "
            f"on a kernel that can, or, to run it without {_and(refused)} restrictions "
            f"knowingly, pass Sandbox(require={shown}, ...)"
        )
    unenforced = [f"{part}: {reason}" for part, reason in missing.items()]
    return frozenset(SANDBOX_PARTS - set(missing)), unenforced


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


class _Guard:
    """Refuses paths that would open the system's private directory to the sandbox."""

    def __init__(
        self, component: str, protected: Iterable[Path], allowed_inside: Iterable[Path]
    ) -> None:
        self._component = component
        self._protected = [os.path.realpath(path) for path in protected]
        self._allowed = [os.path.realpath(path) for path in allowed_inside]

    def check(self, path: str, what: str) -> None:
        for private in self._protected:
            inside = _beneath(path, private) and not any(
                _beneath(path, allowed) for allowed in self._allowed
            )
            if _beneath(private, path) or inside:
                raise SandboxUnavailable(
                    f"cannot sandbox {self._component}: {what} {path}, which would open the "
                    f"system's private directory {private} (its sockets, logs, state and "
                    "control credential) to the sandbox; name a directory that does not "
                    "contain it (a scratch directory inside it is fine)"
                )


def _resolve(component: str, base_dir: Path, entry: str, setting: str) -> str:
    path = Path(os.path.expanduser(entry))
    if not path.is_absolute():
        path = base_dir / path
    return os.path.realpath(path)


def _existing(paths: Iterable[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for path in paths:
        if os.path.exists(path):
            found[os.path.realpath(path)] = None
    return tuple(found)


def _beneath(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")

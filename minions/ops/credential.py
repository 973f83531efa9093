"""Who may operate a running system: the control socket's credential and the check of its peer.

Two checks, each sufficient against a different caller, both applied to every request:

- **A credential.** When the control socket opens, the system writes a random secret to
  ``<project>/.minions/run/control.token``, owner-only (0600) in its private directory, and keeps
  only its SHA-256 digest in memory. The ``minions`` command reads the file and sends the
  secret with each request. The zygotes, and so every isolated child, were forked before the
  secret existed, and the process keeps no copy of it afterwards: no child finds it in its
  memory, and a sandboxed child cannot read the file (nor anything under ``.minions/``).
- **The peer's credentials.** Where ZeroMQ exposes them (Linux: ``SO_PEERCRED``, which libzmq
  appends to an ``ipc://`` peer's address as ``:uid:gid:pid``), a request is refused when the
  peer runs as another user (root excepted), or when it is an isolated child or a descendant of
  one: a process whose chain of parents reaches one of the runtime's zygotes. A child that is
  not sandboxed runs as the same user and could read the credential's file; this is what
  refuses it.

What stays possible is said in docs/sandboxing.md: a child that is not sandboxed runs as your
user, so it can still signal the runtime or have a process outside the system's tree (one it
started, that outlived it) make the request; only a sandbox contains code that is hostile.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..core.private import private_file

__all__ = ["TOKEN_NAME", "Credential", "PeerCredentials", "descends_from", "peer_credentials"]

TOKEN_NAME = "control.token"
#: How many parents are followed when checking where a peer descends from.
_MAX_ANCESTRY = 64


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii", "replace")).digest()


class Credential:
    """The secret of one control socket: written to a file, only its digest kept here."""

    def __init__(self, path: Path, digest: bytes) -> None:
        self.path = path
        self._digest = digest

    def __repr__(self) -> str:
        return f"<Credential {self.path}>"

    @classmethod
    def create(cls, directory: Path) -> Credential:
        """Write a fresh secret to ``directory / TOKEN_NAME`` (0600), replacing an old one."""
        path = private_file(directory / TOKEN_NAME)
        secret = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, f"{secret}\n".encode("ascii"))
        finally:
            os.close(fd)
        return cls(path, _digest(secret))

    def matches(self, presented: object) -> bool:
        """Whether ``presented`` (from a request) is the secret."""
        if not isinstance(presented, str) or len(presented) > 256:
            return False
        return hmac.compare_digest(_digest(presented), self._digest)

    def remove(self) -> None:
        """Delete the file, unless it now holds another system's secret."""
        with contextlib.suppress(OSError):
            if self.matches(self.path.read_text(encoding="ascii").strip()):
                self.path.unlink()

    @staticmethod
    def read(directory: Path) -> str:
        """The secret in ``directory``, for a client; raises OSError when it cannot be read."""
        return (directory / TOKEN_NAME).read_text(encoding="ascii").strip()


@dataclass(frozen=True)
class PeerCredentials:
    """Who is at the other end of a Unix socket, as the kernel saw it connect."""

    pid: int
    uid: int
    gid: int


def peer_credentials(peer_address: str | None) -> PeerCredentials | None:
    """Read ``:uid:gid:pid`` from the end of libzmq's ``Peer-Address`` of an ``ipc://`` peer;
    ``None`` where libzmq does not add them."""
    if not peer_address:
        return None
    fields = peer_address.rsplit(":", 3)
    if len(fields) != 4:
        return None
    try:
        uid, gid, pid = (int(field) for field in fields[1:])
    except ValueError:
        return None
    return PeerCredentials(pid, uid, gid) if pid > 0 else None


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: read after its last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def descends_from(pid: int, roots: Collection[int]) -> bool:
    """Whether ``pid`` is one of ``roots`` or a descendant of one (by its chain of parents)."""
    current: int | None = pid
    for _ in range(_MAX_ANCESTRY):
        if current is None or current <= 1:
            return False
        if current in roots:
            return True
        current = _parent(current)
    return True  # a chain this deep is not an operator's shell: refuse

"""The project's private directory, ``.minions/``: made owner-only, refused when others could
tamper with it.

Everything a running system keeps for itself lives under ``<project>/.minions/``: the sockets of
its children and of its control socket (``run/``), its logs, its state store, the credential of
the control socket. Another local user who can rename, replace or write there could answer
``minions status`` with forged data, bind a child's socket before the child does and receive its
handshake, or read the system's state. So:

- :func:`private_dir` creates each missing directory from the project down owner-only (0700),
  tightens one of ours that is looser, and **refuses** (:class:`PrivateDirectoryError`) one
  that is a symbolic link or belongs to another user, and any directory on the path from ``/``
  that someone else could change: owned by a user other than us or root, or writable by others
  (or by a group with other members) without the sticky bit;
- :func:`private_file` creates a file owner-only (0600) whatever the umask, and tightens one of
  ours that is looser.

The checks run once per directory when it is first needed; they are cheap (one ``lstat`` per
path component).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from pathlib import Path

from .errors import PrivateDirectoryError

__all__ = ["PRIVATE_DIR_NAME", "private_dir", "private_file"]

PRIVATE_DIR_NAME = ".minions"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def private_dir(path: Path, *, root: Path) -> Path:
    """Create ``path`` (inside ``root``, the project folder) and its missing parents below
    ``root`` owner-only, check it and everything above it, and return it."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root))
    if path != root and root not in path.parents:
        raise ValueError(f"{path} is not inside the project folder {root}")
    try:
        root.mkdir(parents=True, exist_ok=True)  # the project folder itself is the user's
    except OSError as exc:
        raise PrivateDirectoryError(f"cannot create the project folder {root}: {exc}") from exc
    _check_ancestors(root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        _make_owned(current)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` owner-only (0600) if it is missing; tighten it if it is ours and looser.

    The directory must exist. Returns ``path``; raises OSError when the file cannot be opened
    for writing.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, _FILE_MODE)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o700)
    finally:
        os.close(fd)
    return path


def _make_owned(directory: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, _DIR_MODE)
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise PrivateDirectoryError(f"cannot create {directory}: {exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise PrivateDirectoryError(
            f"{directory} is a symbolic link; Minions keeps its sockets, logs and state there "
            "and will not follow a link someone could point elsewhere. Remove the link (the "
            "directory is created again, private)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise PrivateDirectoryError(f"{directory} exists and is not a directory; remove it")
    if info.st_uid != os.geteuid():
        raise PrivateDirectoryError(
            f"{directory} belongs to {_user(info.st_uid)}, not to {_user(os.geteuid())} who runs "
            "this system; that user could read its state or impersonate it. Remove the "
            "directory (or run the system as its owner)"
        )
    if stat.S_IMODE(info.st_mode) != _DIR_MODE:
        os.chmod(directory, _DIR_MODE)  # ours, and made under a loose umask: tighten it


def _check_ancestors(root: Path) -> None:
    """Refuse when a directory from ``/`` down to ``root`` could be changed by someone else."""
    for directory in (*reversed(root.parents), root):
        try:
            info = os.stat(directory)  # follows links: what counts is where they lead
        except OSError as exc:
            raise PrivateDirectoryError(f"cannot use the project folder {root}: {exc}") from exc
        problem = _unsafe(info)
        if problem:
            raise PrivateDirectoryError(
                f"cannot keep this system's private files under {root}: {directory} {problem}, "
                f"who could then replace {root / PRIVATE_DIR_NAME} (and with it the sockets, "
                "logs and state of this system). Move the project, or fix the directory's "
                "owner or permissions (chmod o-w,g-w, or the sticky bit as on /tmp)"
            )


def _unsafe(info: os.stat_result) -> str:
    me = os.geteuid()
    if info.st_uid not in (me, 0):
        return f"belongs to {_user(info.st_uid)}"
    mode = info.st_mode
    if mode & stat.S_ISVTX:
        return ""  # like /tmp: others may add entries but not rename or remove ours
    if mode & stat.S_IWOTH:
        return "is writable by every user"
    if mode & stat.S_IWGRP and _group_has_others(info.st_gid, info.st_uid):
        return f"is writable by the members of group {_group(info.st_gid)}"
    return ""


def _group_has_others(gid: int, owner: int) -> bool:
    """Whether users other than ``owner`` may belong to group ``gid`` (a user's private group,
    with no listed members, does not count)."""
    try:
        members = grp.getgrgid(gid).gr_mem
        owner_entry = pwd.getpwuid(owner)
    except KeyError:
        return True
    if owner_entry.pw_gid != gid:
        return True
    return any(member != owner_entry.pw_name for member in members)


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

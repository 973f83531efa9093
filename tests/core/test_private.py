"""The project's private directory: created owner-only whatever the umask, files 0600, and
refused with a clear error when another user owns it or could change a directory on its path."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog

from minions.core.errors import PrivateDirectoryError
from minions.core.logs import configure_logging
from minions.core.private import private_dir, private_file
from minions.workflows.sqlite.store import SQLiteStateStore

pytestmark = pytest.mark.anyio

OTHER_UID = 54321


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """configure_logging changes this process's logging: put it back for the tests after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        structlog.configure(**saved)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    return project


def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")


async def test_logs_and_state_are_owner_only_under_a_permissive_umask(project: Path) -> None:
    """Under umask 000 the private directories are still 0700, the log file, the state file
    and its WAL files 0600."""
    with umask(0):
        log_file = configure_logging(project_dir=project)
        store = SQLiteStateStore(project / ".minions" / "state.sqlite3")
        try:
            with anyio.fail_after(10):
                await store.save_context("wf", "orch", b"x")
            files = {path.name: mode(path) for path in (project / ".minions").glob("state*")}
        finally:
            await store.aclose()
    assert log_file is not None
    assert mode(project / ".minions") == mode(project / ".minions" / "logs") == 0o700
    assert mode(log_file) == 0o600
    assert files.keys() >= {"state.sqlite3", "state.sqlite3-wal"}
    assert set(files.values()) == {0o600}


def test_a_loose_directory_of_ours_is_tightened(project: Path) -> None:
    (project / ".minions").mkdir(mode=0o777)
    os.chmod(project / ".minions", 0o777)
    private_dir(project / ".minions" / "run", root=project)
    assert mode(project / ".minions") == mode(project / ".minions" / "run") == 0o700


def test_a_loose_file_of_ours_is_tightened(project: Path) -> None:
    path = project / "notes"
    path.write_text("x")
    os.chmod(path, 0o644)
    private_file(path)
    assert mode(path) == 0o600
    assert path.read_text() == "x"


def test_a_directory_of_another_user_is_refused(project: Path) -> None:
    as_root()
    (project / ".minions").mkdir()
    os.chown(project / ".minions", OTHER_UID, OTHER_UID)
    with pytest.raises(PrivateDirectoryError, match=rf"\.minions belongs to uid {OTHER_UID}"):
        private_dir(project / ".minions" / "run", root=project)


def test_a_project_inside_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    as_root()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    (theirs / "project").mkdir()
    with pytest.raises(PrivateDirectoryError, match=rf"theirs belongs to uid {OTHER_UID}"):
        configure_logging(project_dir=theirs / "project")


def test_a_world_writable_directory_on_the_path_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "project").mkdir()
    with pytest.raises(PrivateDirectoryError, match="shared is writable by every user"):
        private_dir(shared / "project" / ".minions", root=shared / "project")
    assert not (shared / "project" / ".minions").exists()


def test_a_sticky_world_writable_directory_is_fine(tmp_path: Path) -> None:
    """Like /tmp: others may add entries there, but not rename or remove ours."""
    shared = tmp_path / "sticky"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (shared / "project").mkdir()
    private_dir(shared / "project" / ".minions", root=shared / "project")
    assert mode(shared / "project" / ".minions") == 0o700


def test_a_symbolic_link_is_refused(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (project / ".minions").symlink_to(elsewhere)
    with pytest.raises(PrivateDirectoryError, match=r"\.minions is a symbolic link"):
        configure_logging(project_dir=project)

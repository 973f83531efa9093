"""Sandbox settings, the decision whether this kernel can enforce them (through the detection
layer's own seam, ``KernelSupport``: other kernels are described, not mocked), and a sandbox
zygote forking a child that answers calls."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from isolation import (
    SANDBOX_PARTS,
    ChildSpec,
    ChildStartError,
    Isolation,
    Sandbox,
    SandboxUnavailable,
    Zygote,
    spawn,
)
from isolation._sandbox.imports import program_modules
from isolation._sandbox.kernel import KernelSupport, probe_kernel
from isolation._sandbox.plan import SandboxPlan, installation_dirs, plan_sandbox
from isolation._sandbox_zygote import start_sandbox_zygote
from isolation._zygote_loop import pack

from ._targets import Echo

pytestmark = pytest.mark.anyio

THIS_KERNEL = probe_kernel()
NO_LANDLOCK = KernelSupport(landlock_abi=0, seccomp=True, machine="x86_64")
OLD_LANDLOCK = KernelSupport(landlock_abi=3, seccomp=True, machine="x86_64")
NO_SECCOMP = KernelSupport(landlock_abi=7, seccomp=False, machine="x86_64")
ARM = KernelSupport(landlock_abi=7, seccomp=True, machine="aarch64")


def plan(sandbox: Sandbox, kernel: KernelSupport, tmp_path: Path, **kwargs: Any) -> SandboxPlan:
    return plan_sandbox("Vendor", sandbox, kernel=kernel, base_dir=tmp_path, environ={}, **kwargs)


def test_a_kernel_without_landlock_is_refused_naming_the_part_and_the_way_out(
    tmp_path: Path,
) -> None:
    """No Landlock: the filesystem and signal parts cannot be enforced. The refusal names
    them, what the kernel lacks, and the require=... that would run it without them."""
    with pytest.raises(SandboxUnavailable) as refused:
        plan(Sandbox(), NO_LANDLOCK, tmp_path)
    message = str(refused.value)
    assert message.startswith("cannot sandbox Vendor: this kernel cannot enforce its ")
    assert "filesystem, signals parts" in message
    assert "Landlock ABI 3 (Linux 6.2) is needed for its read and write lists" in message
    assert "this kernel offers no Landlock" in message
    assert "CONFIG_SECURITY_LANDLOCK" in message
    assert "without filesystem and signals restrictions knowingly" in message
    assert "Sandbox(require={'network', 'syscalls'}, ...)" in message


@pytest.mark.parametrize(
    ("kernel", "sandbox", "complaint"),
    [
        (
            OLD_LANDLOCK,
            Sandbox(),
            r"signals: Landlock ABI 6 \(Linux 6\.12\).*offers Landlock ABI 3",
        ),
        (OLD_LANDLOCK, Sandbox(network=["example.com:443"], require={"network"}), "ABI 4"),
        (NO_SECCOMP, Sandbox(), "does not install seccomp filters"),
        (ARM, Sandbox(), "written for x86_64 only, and this machine is aarch64"),
    ],
)
def test_each_missing_part_is_named(
    tmp_path: Path, kernel: KernelSupport, sandbox: Sandbox, complaint: str
) -> None:
    with pytest.raises(SandboxUnavailable, match=complaint):
        plan(sandbox, kernel, tmp_path)


def test_a_relaxed_requirement_runs_what_the_kernel_offers_and_says_what_it_does_not(
    tmp_path: Path,
) -> None:
    """Left out of require, a part the kernel cannot enforce is reported, never hidden."""
    relaxed = plan(Sandbox(require={"network", "syscalls"}), NO_LANDLOCK, tmp_path)
    assert relaxed.enforced == {"network", "syscalls"}
    assert [line.split(":")[0] for line in relaxed.unenforced] == ["filesystem", "signals"]


@pytest.mark.skipif(THIS_KERNEL.landlock_abi < 6, reason="this kernel cannot enforce a sandbox")
def test_this_kernel_enforces_every_part(tmp_path: Path) -> None:
    full = plan(Sandbox(network=["127.0.0.1:443"]), THIS_KERNEL, tmp_path)
    assert full.enforced == SANDBOX_PARTS
    assert full.tcp_ports == (443,)


def test_paths_are_checked_and_write_directories_made(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable, match=r"names './missing'.* does not exist"):
        plan(Sandbox(read=["./missing"]), THIS_KERNEL, tmp_path)
    made = plan(Sandbox(write=["scratch/vendor"]), THIS_KERNEL, tmp_path)
    assert made.write_dirs == (str(tmp_path / "scratch" / "vendor"),)
    assert (tmp_path / "scratch" / "vendor").stat().st_mode & 0o777 == 0o700
    assert made.environment == {"TMPDIR": str(tmp_path / "scratch" / "vendor")}


@pytest.mark.parametrize("entry", [".", "./.minions", "./.minions/logs"])
def test_the_private_directory_is_never_given(tmp_path: Path, entry: str) -> None:
    private = tmp_path / ".minions"
    (private / "logs").mkdir(parents=True)
    (private / "scratch" / "v").mkdir(parents=True)
    with pytest.raises(SandboxUnavailable, match="would open the system's private directory"):
        plan(Sandbox(read=[entry]), THIS_KERNEL, tmp_path, protected=[private])
    fine = plan(
        Sandbox(write=["./.minions/scratch/v"]),
        THIS_KERNEL,
        tmp_path,
        protected=[private],
        allowed_inside=[private / "scratch"],
    )
    assert fine.write_dirs == (str(private / "scratch" / "v"),)


def test_only_the_allowed_environment_is_passed(tmp_path: Path) -> None:
    planned = plan_sandbox(
        "Vendor",
        Sandbox(env=["TZ", "ABSENT"]),
        kernel=THIS_KERNEL,
        base_dir=tmp_path,
        environ={"TZ": "UTC", "API_KEY": "secret"},
    )
    assert planned.environment == {"TZ": "UTC"}


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"network": True}, r"network=True\) is not offered"),
        ({"network": ["no-port"]}, "must be 'host:port'"),
        ({"network": ["h:70000"]}, "must be 'host:port'"),
        ({"read": "/etc"}, "must be a list of paths"),
        ({"env": ["NOT A NAME"]}, "not a variable name"),
        ({"require": {"disks"}}, "unknown part"),
        ({"max_open_files": 0}, "max_open_files"),
    ],
)
def test_bad_settings_are_refused_where_they_are_written(
    settings: dict[str, object], complaint: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=complaint):
        Sandbox(**settings)  # type: ignore[arg-type]


def test_settings_from_data() -> None:
    assert Sandbox.coerce(True, where="x") == Sandbox()
    assert Sandbox.coerce(False, where="x") is None
    assert Sandbox.coerce({"env": ["TZ"]}, where="x") == Sandbox(env=["TZ"])
    with pytest.raises(ValueError, match=r"\[x\]: unknown sandbox setting\(s\) networks"):
        Sandbox.coerce({"networks": []}, where="[x]")
    assert Isolation(sandbox=True).sandbox == Sandbox()


def _boot() -> dict[str, Any]:
    return {
        "trusted_modules": [],
        "modules": program_modules(sorted(installation_dirs())),
        "sys_path": list(sys.path),
        "preload": None,
        "warm": ["tests.isolation._targets:Echo"],
    }


async def test_the_refusal_happens_before_anything_starts(tmp_path: Path) -> None:
    """Through the runtime's own path, a kernel described without Landlock refuses the start
    with the same message, and no process is left (the suite checks)."""
    with anyio.fail_after(20), pytest.raises(SandboxUnavailable, match="this kernel offers no"):
        await start_sandbox_zygote(
            "Vendor", Sandbox(), run_dir=tmp_path / "run", base_dir=tmp_path, boot=_boot(),
            kernel=NO_LANDLOCK,
        )  # fmt: skip
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


@pytest.mark.skipif(THIS_KERNEL.landlock_abi < 6, reason="this kernel cannot enforce a sandbox")
async def test_a_sandbox_zygote_forks_children_that_answer(open_fds: None, tmp_path: Path) -> None:
    """A fresh interpreter enters the sandbox, loads the component's module by its file, and
    forks a child that serves calls; restarts fork again from it."""
    spec = ChildSpec("Echo", "tests.isolation._targets:Echo", isolation=Isolation(sandbox=True))
    files = [v for v in _boot()["modules"].values() if isinstance(v, str)]
    with anyio.fail_after(40):
        zygote = await start_sandbox_zygote(
            "Echo", Sandbox(), run_dir=tmp_path / "run", base_dir=tmp_path, boot=_boot(),
            code_files=files,
        )  # fmt: skip
        try:
            for _ in range(2):
                child = await spawn(zygote, spec, {}, on_output=lambda *line: None)
                echo = child.proxy(Echo)
                assert await echo.echo("through the sandbox") == "through the sandbox"
                assert await echo.pid() == child.pid != os.getpid()
                assert (await child.stop()).reason == "stopped"
        finally:
            await zygote.aclose()


async def test_an_untrusted_zygote_cannot_hand_the_runtime_another_process(
    open_fds: None, tmp_path: Path
) -> None:
    """A sandbox zygote runs the component's code, so the runtime trusts nothing it says: one
    that reports another process (here, the runtime itself) as the child it forked is killed,
    and the runtime never holds, let alone signals, that process."""
    # Plays the zygote; started in a millisecond, and reaped by the Zygote object.
    player = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: ASYNC220
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    (tmp_path / "private").mkdir()
    zygote = Zygote(player.pid, ours, tmp_path / "private", process=player, name="Liar")
    try:
        with anyio.fail_after(20):
            forking = asyncio.ensure_future(zygote.fork("x:y", {}, [], "Liar"))
            await asyncio.to_thread(theirs.recv, 65536)  # the fork request
            theirs.send(pack({"op": "forked", "id": 0, "pid": os.getpid()}))
            with pytest.raises(
                ChildStartError, match=r"reported process \d+, which is not its child"
            ):
                await forking
            assert await asyncio.to_thread(player.wait) == -signal.SIGKILL
    finally:
        theirs.close()
        await zygote.aclose()

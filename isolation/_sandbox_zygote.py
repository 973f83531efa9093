"""Starting a sandbox zygote: the process every child of one sandboxed component is forked from.

The runtime's own zygote is a fork of the runtime, so its children hold a copy of the runtime's
memory: its environment, its configuration, whatever secrets the program had loaded. That is
fine for code that is only careless, not for code that may be hostile. A sandboxed component
gets a zygote of its own instead, started by :func:`start_sandbox_zygote` as a **fresh
interpreter** (``python -I -m isolation._sandbox_boot``) with only the environment variables its
sandbox allows. It enters the sandbox before it loads any of the component's code, then forks
the component's children (and restarts) like any zygote, each child taking one more layer of
the sandbox: a restart costs a fork, as for any isolated component, and the interpreter's start
is paid once, when the component first starts.

Before anything is started, :func:`~isolation._sandbox.plan.plan_sandbox` decides whether the
kernel can enforce the sandbox (a refusal is a :class:`~isolation.SandboxUnavailable`), and the
endpoints' host names are resolved here, in the parent. The zygote's own output is forwarded
like a child's; if it fails to start, the error it reports (or the end of its stderr) is in the
:class:`~isolation.ChildStartError`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import ChildStartError, ErrorReport, SandboxUnavailable
from ._limits import Sandbox
from ._output import OutputPump, OutputSink, default_output_sink
from ._sandbox.kernel import KernelSupport, probe_kernel
from ._sandbox.plan import SandboxPlan, plan_sandbox
from ._sandbox_boot import send_boot_job
from ._zygote import Zygote, _BootFailed, _make_private_dir

__all__ = ["resolve_endpoints", "start_sandbox_zygote"]

BOOT_MODULE = "isolation._sandbox_boot"


async def resolve_endpoints(
    component: str, endpoints: Iterable[tuple[str, int]]
) -> dict[str, tuple[str, ...]]:
    """The addresses of the endpoints' host names (addresses given as digits need none)."""
    loop = asyncio.get_running_loop()
    hosts: dict[str, tuple[str, ...]] = {}
    for host, port in endpoints:
        if host in hosts:
            continue
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot sandbox {component}: its endpoint {host}:{port} does not resolve "
                f"({exc}); fix the name in Sandbox(network=[...]) or the resolver"
            ) from exc
        hosts[host] = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    return hosts


async def start_sandbox_zygote(
    component: str,
    sandbox: Sandbox,
    *,
    run_dir: Path,
    base_dir: Path,
    boot: Mapping[str, Any],
    code_files: Iterable[str] = (),
    protected: Iterable[Path] = (),
    allowed_inside: Iterable[Path] = (),
    environ: Mapping[str, str] | None = None,
    start_timeout: float = 30.0,
    kernel: KernelSupport | None = None,
    on_output: OutputSink | None = None,
    on_unenforced: Any = None,
) -> Zygote:
    """Start the sandbox zygote of ``component`` and return it once it is ready to fork.

    ``boot`` is the rest of its boot job: ``trusted_modules`` (imported before the sandbox),
    ``modules`` (name -> file of the program's modules), ``sys_path``, ``preload`` and
    ``preload_args`` (a ``"module:function"`` run inside the sandbox to load the component's
    code), ``warm`` (classes whose interfaces to prepare). ``kernel`` describes the kernel (by
    default this one, probed); ``on_unenforced(messages)`` hears about parts of the sandbox left
    out of ``require`` that this kernel cannot enforce. Raises :class:`SandboxUnavailable` when
    the sandbox cannot be enforced, :class:`ChildStartError` when the zygote fails to start.
    """
    hosts = await resolve_endpoints(component, sandbox.endpoints)
    plan = plan_sandbox(
        component,
        sandbox,
        kernel=kernel or probe_kernel(),
        base_dir=base_dir,
        environ=os.environ if environ is None else environ,
        code_files=code_files,
        hosts=hosts,
        protected=protected,
        allowed_inside=allowed_inside,
    )
    if plan.unenforced and on_unenforced is not None:
        on_unenforced(list(plan.unenforced))
    private_dir = _make_private_dir(run_dir)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        # Starting it takes about a millisecond (vfork and exec); the loop waits for its boot.
        process = subprocess.Popen(  # noqa: ASYNC220
            _command(theirs.fileno()),
            pass_fds=(theirs.fileno(),),
            env=dict(plan.environment),
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            close_fds=True,
            process_group=0,  # its own process group (killed whole when it ends), same session
        )
    except OSError as exc:
        for fd in (out_read, err_read):
            os.close(fd)
        ours.close()
        raise ChildStartError(f"cannot start the sandbox of {component}: {exc}") from exc
    finally:
        theirs.close()
        os.close(out_write)
        os.close(err_write)
    sink = on_output or default_output_sink
    pumps = [  # the component's own lines, from its sandbox zygote's streams
        OutputPump(out_read, component, "sandbox stdout", sink),
        OutputPump(err_read, component, "sandbox stderr", sink),
    ]
    zygote = Zygote(process.pid, ours, private_dir, process=process, name=component)
    zygote.adopt_pumps(pumps)
    try:
        await _boot(zygote, ours, plan, boot, start_timeout, pumps[1])
    except BaseException:
        await zygote.aclose()
        raise
    return zygote


def _command(fd: int) -> list[str]:
    # -I: no environment variables of Python's, no user site, not the current directory on
    # sys.path; -X utf8: text is UTF-8 without a locale from the environment.
    return [sys.executable, "-I", "-X", "utf8", "-m", BOOT_MODULE, str(fd), str(os.getpid())]


async def _boot(
    zygote: Zygote,
    channel: socket.socket,
    plan: SandboxPlan,
    boot: Mapping[str, Any],
    seconds: float,
    stderr: OutputPump,
) -> None:
    job = {**boot, "plan": plan.to_data()}
    try:
        channel.settimeout(seconds)  # the zygote reads its job first thing; never wait forever
        await asyncio.get_running_loop().run_in_executor(None, send_boot_job, channel, job)
        await asyncio.wait_for(asyncio.shield(zygote.expect_boot()), seconds)
    except _BootFailed as failed:
        report = ErrorReport.from_data(failed.report)
        error = ChildStartError(
            f"the sandbox of {plan.component} failed to start: {report.type}: {report.message}"
        )
        if report.traceback:
            error.add_note(f"Remote traceback (sandbox of {plan.component}):\n{report.traceback}")
        raise error from None
    except (TimeoutError, OSError) as exc:
        await stderr.drained(0.5)
        error = ChildStartError(
            f"the sandbox of {plan.component} did not start within {seconds:g} s"
            if isinstance(exc, TimeoutError)
            else f"the sandbox of {plan.component} ended while starting ({exc})"
        )
        _add_tail(error, stderr.tail)
        raise error from None


def _add_tail(error: Exception, tail: Sequence[str]) -> None:
    if tail:
        error.add_note("Last lines on its stderr:\n" + "\n".join(tail))

"""Sandboxed components: their settings, and the sandbox zygote each one runs in.

A component is sandboxed by ``isolated=Isolation(sandbox=...)`` on its class, by
``options={Vendor: {"sandbox": ...}}`` in ``run(...)``, or by the ``[minions.sandbox]`` table of
``minions.toml`` (``Vendor = true``, or a table of :class:`~isolation.Sandbox` settings) — the
last two let an operator sandbox a class without editing it. :func:`isolation_with_sandbox`
merges the setting into the component's :class:`~isolation.Isolation`.

Its children are forked by a sandbox zygote of its own (``isolation._sandbox_zygote``): a fresh
interpreter that enters the sandbox before it loads any of the component's code.
:func:`start_sandbox` builds what that zygote needs from the child's :class:`ChildSpec`: the
program's modules by file (it imports them by their exact path), the component's and its
services' modules to load, and — for a class defined in the program file (``__main__``) — that
file, which is executed under another name, as a redeploy does, so that its ``run(...)`` and
its ``if __name__ == "__main__":`` block do not start a second system (see ``code.preload``).
The project's ``.minions/`` is never given to a sandbox, except what lies in ``.minions/scratch``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from isolation import ChildSpec, Isolation, Sandbox, Zygote
from isolation._sandbox.imports import program_modules
from isolation._sandbox.kernel import KernelSupport
from isolation._sandbox.plan import installation_dirs
from isolation._sandbox_zygote import start_sandbox_zygote

from ..core.errors import ComponentOptionsError
from ..core.graph import Node
from ..core.private import PRIVATE_DIR_NAME

__all__ = ["PRELOAD", "SCRATCH_DIR", "isolation_with_sandbox", "start_sandbox"]

log = structlog.get_logger("minions")

PRELOAD = "minions.isolated.code:preload"
#: Where write directories inside the private directory may be: ``.minions/scratch/...``.
SCRATCH_DIR = "scratch"
#: Library modules a sandbox zygote imports before it enters the sandbox.
_TRUSTED_MODULES = ("minions", "minions.isolated.code", "minions.isolated.component")
#: Least time a sandbox zygote is given to start (an interpreter, then the program's imports).
_MIN_BOOT_SECONDS = 30.0


def isolation_with_sandbox(node: Node, isolation: Isolation, sandbox: object) -> Isolation:
    """``isolation`` with the ``sandbox=`` option applied (``None``: left as it is)."""
    if sandbox is None:
        return isolation
    try:
        coerced = Sandbox.coerce(sandbox, where=f"{node.name}: sandbox")
    except (TypeError, ValueError) as exc:
        raise ComponentOptionsError(str(exc)) from None
    return dataclasses.replace(isolation, sandbox=coerced)


def _class_names(spec: ChildSpec) -> list[str]:
    payload = spec.payload if isinstance(spec.payload, dict) else {}
    component = payload.get("component")
    names = [component] if isinstance(component, str) else []
    return [*names, *spec.services.values()]


def _boot_job(spec: ChildSpec) -> tuple[dict[str, Any], list[str]]:
    """The sandbox zygote's boot job for ``spec``'s component, and the files it must read."""
    classes = _class_names(spec)
    modules = sorted({name.partition(":")[0] for name in classes})
    main_file = main_package = None
    if "__main__" in modules:
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        main_package = getattr(main, "__package__", None)
        modules.remove("__main__")
    files = program_modules(sorted(installation_dirs()))
    code_files = [path for path in files.values() if isinstance(path, str)]
    if isinstance(main_file, str):
        code_files.append(main_file)
    job = {
        "trusted_modules": list(_TRUSTED_MODULES),
        "modules": files,
        "sys_path": [path for path in sys.path if isinstance(path, str)],
        "argv0": main_file or "",
        "preload": PRELOAD,
        "preload_args": {"main": main_file, "main_package": main_package, "modules": modules},
        "warm": classes,
    }
    return job, code_files


async def start_sandbox(
    spec: ChildSpec,
    *,
    project_dir: Path,
    run_dir: Path,
    on_output: Callable[[str, str, str], None],
    kernel: KernelSupport | None = None,
) -> Zygote:
    """Start the sandbox zygote of ``spec``'s component (see the module docstring)."""
    sandbox = spec.isolation.sandbox
    assert isinstance(sandbox, Sandbox)
    private = project_dir / PRIVATE_DIR_NAME
    job, code_files = _boot_job(spec)

    def unenforced(parts: list[str]) -> None:
        log.warning(
            "sandbox.unenforced",
            component=spec.component,
            reason="parts left out of Sandbox(require=...) this kernel cannot enforce",
            parts=parts,
        )

    return await start_sandbox_zygote(
        spec.component,
        sandbox,
        run_dir=run_dir,
        base_dir=project_dir,
        boot=job,
        code_files=code_files,
        protected=[private],
        allowed_inside=[private / SCRATCH_DIR],
        start_timeout=max(_MIN_BOOT_SECONDS, spec.isolation.start_timeout),
        kernel=kernel,
        on_output=on_output,
        on_unenforced=unenforced,
    )

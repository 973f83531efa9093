"""Fresh code for a redeployed component: its module executed anew in the child.

Redeploying (``Runtime.redeploy``) starts the next incarnations with *fresh code*. A child is a
fork of the warm zygote, which holds the code as it was imported when the system started, so
the payload carries a ``fresh`` entry (:func:`fresh_source`): the component's module and source
file. The child executes that file anew before it builds the component (:func:`fresh_class`) —
into the module's own namespace for an importable module (like ``importlib.reload``, but always
from the source: a byte-code cache can be stale when a file is edited twice within its
timestamp's resolution), or into a new module for a component defined in the program file
(``__main__``), named so that its ``if __name__ == "__main__":`` block does not run. Only that
module is executed again; the modules it imports, and the types the rest of the system shares
with it, stay as they are. While it runs, :func:`reexecuting` is true, so that a top-level
``run(...)`` call in the module does not start a second system inside the child.

Before anything stops, a redeploy loads the new code once in a throwaway child of the zygote
(:func:`check_in_child`): the module executed anew, the class found again and still a
component of the same kind, with dependencies the system can give it and, for a workflow
minion, the same steps. New code that fails this
(a syntax error, an exception at import, a class that is gone or no longer a valid component)
fails the redeploy with that error, and the running child is left as it was.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.component import Component, component_kind
from ..core.errors import RuntimeStateError
from ..core.graph import declared_dependencies
from ..workflows.steps import step_names

__all__ = [
    "CHECK_FACTORY",
    "REDEPLOYED_MAIN",
    "check_in_child",
    "check_payload",
    "fresh_class",
    "fresh_source",
    "preload",
    "reexecuting",
]

#: The factory of the throwaway child that checks a redeploy's new code.
CHECK_FACTORY = "minions.isolated.code:check_in_child"

#: The module name a program file's code is executed under when it is redeployed.
REDEPLOYED_MAIN = "__minions_main__"

_reexecuting = False


def reexecuting() -> bool:
    """Whether this process is executing a redeployed module's code again right now."""
    return _reexecuting


def fresh_source(cls: type) -> dict[str, str]:
    """Where a redeployed child finds ``cls``'s code again; a clear error if it cannot."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        raise RuntimeStateError(
            f"cannot redeploy {cls.__qualname__}: its module {cls.__module__!r} was not loaded "
            f"from a .py file ({path or 'no file'}); restart it instead"
        )
    return {"module": cls.__module__, "file": os.path.abspath(path)}


def fresh_class(component: str, fresh: Mapping[str, str]) -> Any:
    """Execute the component's module from its source file again; return the new class."""
    module_name, qualname = component.split(":")
    path = fresh["file"]
    if module_name == "__main__":
        old_main = sys.modules.get("__main__")
        module = _program_module(path, getattr(old_main, "__package__", None))
    else:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    _execute(module, path, f"the new code of {qualname}")
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(
                f"{qualname} is no longer defined in {path}; it cannot be redeployed"
            ) from None
    return target


def check_payload(cls: type[Component], component: str) -> dict[str, Any]:
    """What :func:`check_in_child` needs to check the new code of ``cls`` (named
    ``"module:qualname"`` as ``component``)."""
    return {
        "component": component,
        "fresh": fresh_source(cls),
        "kind": component_kind(cls),
        "dependencies": sorted(dep.name for dep in declared_dependencies(cls)),
        "steps": list(step_names(cls)),
    }


class _Checked:
    """What the check child serves: nothing; its ``run()`` ends at once, and so does the child."""

    async def run(self) -> None:
        return None


def check_in_child(proxies: Mapping[str, Any], payload: Mapping[str, Any]) -> object:
    """The factory of a redeploy's check child: load the new code as the real child will, and
    raise what would make it fail to start."""
    new = fresh_class(payload["component"], payload["fresh"])
    qualname = payload["component"].split(":")[1]
    if not (isinstance(new, type) and issubclass(new, Component)):
        raise ImportError(f"{qualname} is no longer a component class in the new code: {new!r}")
    if component_kind(new) != payload["kind"]:
        raise ImportError(
            f"{qualname} is a {component_kind(new)} in the new code, but runs as a "
            f"{payload['kind']}; restart the program to change what it is"
        )
    added = sorted({dep.name for dep in declared_dependencies(new)} - set(payload["dependencies"]))
    if added:
        raise ImportError(
            f"{qualname} declares new dependencies in the new code ({', '.join(added)}); a "
            "redeploy keeps the system's wiring: restart the program to add dependencies"
        )
    steps = list(step_names(new))
    if steps != payload["steps"]:
        raise ImportError(
            f"the steps of {qualname} changed in the new code ({', '.join(steps) or 'none'}; "
            f"running: {', '.join(payload['steps']) or 'none'}); keep the steps' names and "
            "order for a redeploy, and change them with a restart of the program once the "
            "workflows have drained"
        )
    return _Checked()


def preload(args: Mapping[str, Any]) -> None:
    """Load a sandboxed component's code in its sandbox zygote (see
    :mod:`minions.isolated.sandboxes`): the program file, when the component or a service it
    calls is defined there, then the modules named.

    The program file is executed under another name, as for a redeploy, and registered as
    ``__main__`` too, so that ``"__main__:Class"`` names resolve; its top-level ``run(...)``
    returns at once (:func:`reexecuting`).
    """
    main = args.get("main")
    if isinstance(main, str):
        module = _program_module(main, args.get("main_package"))
        _execute(module, main, "the program file")
        sys.modules["__main__"] = module
    for name in args.get("modules", ()):
        importlib.import_module(name)


def _program_module(path: str, package: object) -> types.ModuleType:
    """A new module for a program file's code, named so that its main block does not run."""
    module = types.ModuleType(REDEPLOYED_MAIN)
    module.__file__ = path
    module.__package__ = package if isinstance(package, str) else None
    # Registered so that its classes' string annotations resolve in their module.
    sys.modules[REDEPLOYED_MAIN] = module
    return module


def _execute(module: types.ModuleType, path: str, what: str) -> None:
    try:
        with open(path, "rb") as f:
            source = importlib.util.decode_source(f.read())
        code = compile(source, path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise ImportError(f"cannot load {what} from {path}: {type(exc).__name__}: {exc}") from exc
    with _reexecution():
        exec(code, module.__dict__)


@contextlib.contextmanager
def _reexecution() -> Iterator[None]:
    global _reexecuting
    _reexecuting = True
    try:
        yield
    finally:
        _reexecuting = False

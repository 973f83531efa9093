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

from ..core.errors import RuntimeStateError

__all__ = ["REDEPLOYED_MAIN", "fresh_class", "fresh_source", "reexecuting"]

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
        module = types.ModuleType(REDEPLOYED_MAIN)
        module.__file__ = path
        module.__package__ = getattr(old_main, "__package__", None)
        # Registered so that the new classes' string annotations resolve in their module.
        sys.modules[REDEPLOYED_MAIN] = module
    else:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    try:
        with open(path, "rb") as f:
            source = importlib.util.decode_source(f.read())
        code = compile(source, path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise ImportError(
            f"cannot load the new code of {qualname} from {path}: {type(exc).__name__}: {exc}"
        ) from exc
    with _reexecution():
        exec(code, module.__dict__)
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(
                f"{qualname} is no longer defined in {path}; it cannot be redeployed"
            ) from None
    return target


@contextlib.contextmanager
def _reexecution() -> Iterator[None]:
    global _reexecuting
    _reexecuting = True
    try:
        yield
    finally:
        _reexecuting = False

"""A sandboxed process imports the program's modules from their exact files.

Python finds a module on ``sys.path`` by listing directories. In a sandbox that would mean
letting it list (and, to import, read) the program's folder, where ``.env``, ``minions.toml``
and the system's private ``.minions/`` also live. Instead the parent names each module of the
program it has loaded, with its file (``modules``: name -> path, or ``None`` for a namespace
package with its directories), and :func:`install_module_files` puts a finder first on
``sys.meta_path`` that loads exactly those files; the sandbox may read those files and nothing
else of the folder (see ``plan``). A module the parent never loaded is not found this way, and
the sandbox cannot list the folder to find it: name its directory in ``Sandbox(read=...)``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

__all__ = ["ModuleFiles", "install_module_files", "program_modules"]

#: A module's file, or the directories of a namespace package.
Location = str | Sequence[str]


class ModuleFiles(importlib.abc.MetaPathFinder):
    """Finds the named modules at the given files (see the module docstring)."""

    def __init__(self, modules: Mapping[str, Location]) -> None:
        self._modules = dict(modules)

    def __repr__(self) -> str:
        return f"<ModuleFiles {len(self._modules)} modules>"

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        location = self._modules.get(fullname)
        if location is None:
            return None
        if not isinstance(location, str):
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = list(location)
            return spec
        package = os.path.basename(location).startswith("__init__.")
        return importlib.util.spec_from_file_location(
            fullname,
            location,
            submodule_search_locations=[os.path.dirname(location)] if package else None,
        )


def install_module_files(modules: Mapping[str, Location]) -> None:
    """Put a :class:`ModuleFiles` for ``modules`` first on ``sys.meta_path``."""
    sys.meta_path.insert(0, ModuleFiles(modules))


def program_modules(excluded_dirs: Sequence[str]) -> dict[str, Location]:
    """The modules loaded in this process whose files are outside ``excluded_dirs`` (the
    Python installation): name -> file, or the directories of a namespace package."""
    excluded = tuple(directory.rstrip("/") + "/" for directory in excluded_dirs)
    modules: dict[str, Location] = {}
    for name, module in list(sys.modules.items()):
        if name == "__main__" or not isinstance(module, ModuleType):
            continue
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            real = os.path.realpath(file)
            if not real.startswith(excluded) and os.path.isfile(real):
                modules[name] = real
            continue
        spec = getattr(module, "__spec__", None)
        locations = getattr(spec, "submodule_search_locations", None)
        if spec is not None and spec.origin in (None, "namespace") and locations:
            paths = [os.path.realpath(path) for path in locations]
            if not all(path.startswith(excluded) for path in (p + "/" for p in paths)):
                modules[name] = paths
    return modules

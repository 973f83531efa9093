"""Where a project declares identities, read from its files without running them.

Shared by ``minions stamp`` (:mod:`.stamp`) and ``minions doctor ids`` (:mod:`.doctor`):

* **Component classes** in Python sources, found by parsing (``ast``), never importing: a class
  whose bases name exactly one of ``Minion``, ``Pipeline`` or ``Resource`` (``Minion[E, C]``
  and ``minions.Minion`` count) is a component of that kind, and its identity is the string
  given to the matching decorator (``@minion_id``, ``@pipeline_id``, ``@resource_id``) — a
  literal, or a module-level string constant named there. Subclasses of your own component
  classes are not recognised: their bases name your class, not ours.
* **Config files** (``.toml``, ``.json``, ``.yaml``, ``.yml``) and their ``_minions_config_id``
  (``minions.core.config_identity``).

Paths: a file is taken as given; a directory is searched recursively, skipping hidden folders,
caches, virtual environments and build output (:data:`SKIPPED_DIRS`), and — found in a
directory only — tool files that are not component configs (:data:`NOT_CONFIGS`, e.g.
``pyproject.toml``, whose top level other tools validate). A path that does not exist or has
another type is a :class:`IdentityToolError`.
"""

from __future__ import annotations

import ast
import os
import tempfile
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.config_identity import CONFIG_SUFFIXES
from ..core.errors import MinionsError

__all__ = [
    "DECORATORS",
    "NOT_CONFIGS",
    "SKIPPED_DIRS",
    "ComponentClass",
    "IdentityToolError",
    "SourceFile",
    "config_files",
    "python_files",
    "read_source",
    "split_paths",
    "write_atomically",
]

#: The decorator that pins each kind's identity.
DECORATORS = {"minion": "minion_id", "pipeline": "pipeline_id", "resource": "resource_id"}
_KINDS = {"Minion": "minion", "Pipeline": "pipeline", "Resource": "resource"}

SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        "build",
        "dist",
        "htmlcov",
        "node_modules",
        "site-packages",
        "venv",
    }
)
#: Files found in a directory that belong to tools, not to components (named explicitly, they
#: are processed like any other).
NOT_CONFIGS = frozenset(
    {
        "pyproject.toml",
        "ruff.toml",
        "mypy.toml",
        "uv.toml",
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "mkdocs.yml",
        "mkdocs.yaml",
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
    }
)


class IdentityToolError(MinionsError):
    """A path cannot be stamped or inspected (missing, of another type, unreadable)."""


def split_paths(paths: Iterable[Path], command: str) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into roots to search for components and for config files: a directory
    is both, a ``.py`` file the first, a config file the second."""
    sources: list[Path] = []
    configs: list[Path] = []
    for path in paths:
        if path.is_dir():
            sources.append(path)
            configs.append(path)
        elif not path.exists():
            raise IdentityToolError(f"{command}: {path} does not exist")
        elif path.suffix == ".py":
            sources.append(path)
        elif path.suffix.lower() in CONFIG_SUFFIXES:
            configs.append(path)
        else:
            raise IdentityToolError(
                f"{command}: cannot handle {path}: expected a directory, a .py file or a "
                f"config file ({', '.join(CONFIG_SUFFIXES)})"
            )
    return sources, configs


def python_files(roots: Iterable[Path], command: str) -> list[Path]:
    """The ``.py`` files of ``roots``: files as given, directories searched (sorted)."""
    return _files(roots, command, (".py",), "a .py file", skip_names=frozenset())


def config_files(roots: Iterable[Path], command: str) -> list[Path]:
    """The config files of ``roots``: files as given, directories searched (sorted)."""
    return _files(roots, command, CONFIG_SUFFIXES, "a config file", skip_names=NOT_CONFIGS)


def _files(
    roots: Iterable[Path],
    command: str,
    suffixes: tuple[str, ...],
    wanted: str,
    skip_names: frozenset[str],
) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        if root.is_file():
            if root.suffix.lower() not in suffixes:
                raise IdentityToolError(
                    f"{command}: {root} is not {wanted} ({', '.join(suffixes)})"
                )
            found.append(root)
            continue
        if not root.is_dir():
            raise IdentityToolError(f"{command}: {root} does not exist")
        within: list[Path] = []
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not _skipped(d))
            for name in names:
                if name.lower().endswith(suffixes) and name not in skip_names:
                    within.append(Path(directory) / name)
        found.extend(sorted(within))
    return list(dict.fromkeys(found))  # a file named twice is handled once


def _skipped(directory: str) -> bool:
    return directory.startswith(".") or directory in SKIPPED_DIRS


# -- Python sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentClass:
    """A component class found in a source file."""

    name: str
    kind: str
    #: The ``class`` line, and the line a decorator goes on (the first decorator's, or the
    #: ``class`` line), 1-based; ``indent`` is that line's leading whitespace.
    lineno: int
    insert_at: int
    indent: str
    #: Whether the class has its kind's decorator, the line of that decorator, and the id it
    #: gives when that can be read statically (a literal or a module-level constant).
    decorated: bool
    decorator_line: int | None
    component_id: str | None


@dataclass(frozen=True)
class SourceFile:
    """A parsed Python source: its text, how it is written, and its component classes."""

    path: Path
    text: str
    encoding: str
    newline: str
    tree: ast.Module
    components: tuple[ComponentClass, ...]

    def bound_names(self) -> set[str]:
        """Names the module binds at its top level (imports, definitions, assignments)."""
        names: set[str] = set()
        for node in self.tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
        return names


def read_source(path: Path) -> SourceFile:
    """Parse ``path``; :class:`IdentityToolError` if it cannot be read or is not Python."""
    try:
        raw = path.read_bytes()
        with path.open("rb") as f:
            encoding, _ = tokenize.detect_encoding(f.readline)
        text = raw.decode(encoding)
        tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise IdentityToolError(f"cannot read {path}: {_one_line(exc)}") from exc
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    return SourceFile(
        path, text, encoding, newline, tree, tuple(_components(tree, lines, _constants(tree)))
    )


def _components(
    tree: ast.Module, lines: list[str], constants: dict[str, str]
) -> Iterable[ComponentClass]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        kinds = {_KINDS[n] for base in node.bases if (n := _name(base)) in _KINDS}
        if len(kinds) != 1:
            continue
        kind = kinds.pop()
        decorator = next(
            (d for d in node.decorator_list if _decorator_name(d) == DECORATORS[kind]), None
        )
        insert_at = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        line = lines[insert_at - 1] if insert_at <= len(lines) else ""
        yield ComponentClass(
            name=node.name,
            kind=kind,
            lineno=node.lineno,
            insert_at=insert_at,
            indent=line[: len(line) - len(line.lstrip())],
            decorated=decorator is not None,
            decorator_line=decorator.lineno if decorator is not None else None,
            component_id=_decorator_id(decorator, constants) if decorator is not None else None,
        )


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _name(node.value)
    return None


def _decorator_name(node: ast.expr) -> str | None:
    return _name(node.func) if isinstance(node, ast.Call) else _name(node)


def _decorator_id(node: ast.expr, constants: dict[str, str]) -> str | None:
    if not isinstance(node, ast.Call) or len(node.args) != 1 or node.keywords:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` and ``NAME: str = "text"``."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            found[target.id] = value.value
    return found


# -- writing --------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path``'s content with ``data``: written beside it, then renamed over it, so a
    crash leaves the old file or the new one, never half of one. The file keeps its mode."""
    mode = path.stat().st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

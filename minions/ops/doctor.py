"""``minions doctor ids [PATHS]``: check a project's durable identities before deploying it.

It reads (never changes, never imports) the Python sources and config files under ``PATHS``
(default: the project folder), found as :mod:`.identity_source` describes, and reports each
problem on one line, ``PATH:LINE: CODE: MESSAGE`` (``PATH: CODE: MESSAGE`` for config files),
sorted by path and line:

========================  ==================================================================
code                      meaning
========================  ==================================================================
missing-component-id      a component class has no ``@minion_id``/``@pipeline_id``/
                          ``@resource_id``: its identity is its module path and name, which a
                          rename or move changes (``minions stamp component-ids`` fixes it)
invalid-component-id      the id is not a canonical lowercase UUID, or cannot be read
                          without running the code (not a literal or module-level constant)
duplicate-component-id    two classes of one kind share an id: they would share checkpoints
                          (two resources, one instance)
missing-config-id         a config file has no ``_minions_config_id``: its identity is its
                          path (``minions stamp config-ids`` fixes it)
invalid-config-id         ``_minions_config_id`` is not a canonical lowercase UUID string
duplicate-config-id       two config files share an id
unreadable-file           a file that does not parse (Python, TOML, JSON)
========================  ==================================================================

With no problem it prints ``No identity issues found.`` and exits 0; otherwise it exits 1.
``@minion_id`` itself accepts any non-empty string, so a running program never breaks on an id
this command reports: the check is for what ``stamp`` writes, a UUID that cannot collide.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.config_identity import CONFIG_ID_KEY, read_config_id
from ..core.identity import uuid_problem
from .identity_source import (
    DECORATORS,
    IdentityToolError,
    config_files,
    python_files,
    read_source,
    split_paths,
)

__all__ = ["Issue", "add_arguments", "inspect", "main"]


@dataclass(frozen=True, order=True)
class Issue:
    """One identity problem."""

    path: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class _Declared:
    #: What must be unique, as the message names it: "resource component id <id>", ...
    label: str
    path: str
    line: int
    shown: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATHS",
        help="files or directories to check (default: the project folder)",
    )


def main(paths: list[Path]) -> int:
    issues = inspect(paths)
    if not issues:
        print("No identity issues found.")
        return 0
    for issue in issues:
        print(issue)
    return 1


def inspect(paths: list[Path]) -> list[Issue]:
    """The identity problems of ``paths``, sorted by path, line and code."""
    source_roots, config_roots = split_paths(paths, "doctor ids")
    issues: list[Issue] = []
    components: list[_Declared] = []
    configs: list[_Declared] = []
    for path in python_files(source_roots, "doctor ids"):
        _check_source(path, issues, components)
    for path in config_files(config_roots, "doctor ids"):
        _check_config(path, issues, configs)
    issues += _duplicates(components, "duplicate-component-id")
    issues += _duplicates(configs, "duplicate-config-id")
    return sorted(issues)


def _check_source(path: Path, issues: list[Issue], declared: list[_Declared]) -> None:
    try:
        source = read_source(path)
    except IdentityToolError as exc:
        issues.append(Issue(str(path), 0, "unreadable-file", str(exc)))
        return
    for c in source.components:
        decorator = DECORATORS[c.kind]
        if not c.decorated:
            issues.append(
                Issue(
                    str(path), c.lineno, "missing-component-id", f"{c.name} is missing @{decorator}"
                )
            )
            continue
        line = c.decorator_line or c.lineno
        if c.component_id is None:
            issues.append(
                Issue(
                    str(path),
                    line,
                    "invalid-component-id",
                    f"{c.name}'s @{decorator} id cannot be read without running the code; write "
                    "it as a string literal (or a module-level string constant)",
                )
            )
            continue
        problem = uuid_problem(c.component_id)
        if problem is not None:
            issues.append(
                Issue(
                    str(path),
                    line,
                    "invalid-component-id",
                    f"{c.name} has invalid component id: {problem} (expected a canonical "
                    "lowercase UUID, as 'minions stamp component-ids' writes)",
                )
            )
            continue
        label = f"{c.kind} component id {c.component_id}"
        declared.append(_Declared(label, str(path), line, f"{path}:{line}"))


def _check_config(path: Path, issues: list[Issue], declared: list[_Declared]) -> None:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
        found = read_config_id(text, path.suffix)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        issues.append(Issue(str(path), 0, "unreadable-file", f"cannot read {path}: {detail}"))
        return
    if not found.mapping:
        return  # a JSON array or YAML list: data, not a config object
    if not found.present:
        issues.append(Issue(str(path), 0, "missing-config-id", f"missing {CONFIG_ID_KEY}"))
        return
    problem = uuid_problem(found.value)
    if problem is not None:
        issues.append(
            Issue(str(path), 0, "invalid-config-id", f"invalid {CONFIG_ID_KEY}: {problem}")
        )
        return
    declared.append(_Declared(f"config id {found.value}", str(path), 0, str(path)))


def _duplicates(declared: list[_Declared], code: str) -> list[Issue]:
    groups: dict[str, list[_Declared]] = defaultdict(list)
    for item in declared:
        groups[item.label].append(item)
    issues: list[Issue] = []
    for label, items in groups.items():
        if len(items) > 1:
            where = ", ".join(item.shown for item in items)
            issues += [Issue(i.path, i.line, code, f"duplicate {label}: {where}") for i in items]
    return issues

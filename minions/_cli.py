"""The ``minions`` command line (also ``python -m minions``).

``minions run app.py`` runs a program file as ``__main__``, exactly like ``python app.py``.
``minions run package.module:attr`` imports ``attr`` and runs it: a component class, a list or
tuple of them, or a function that calls ``run(...)`` itself.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._component import Component
from ._run import run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minions", description="Run and operate Minions systems.")
    parser.add_argument("--version", action="version", version=f"minions {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_cmd = commands.add_parser("run", help="run a system: a program file or package.module:attr")
    run_cmd.add_argument("target", help="app.py, or package.module:attr")
    run_cmd.add_argument("--config", help="the config file (default: ./minions.toml if present)")
    run_cmd.add_argument("--seconds", type=float, help="stop gracefully after this many seconds")
    run_cmd.add_argument("--log-level", default="info")
    run_cmd.add_argument("args", nargs=argparse.REMAINDER, help="arguments for a program file")
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    target: str = args.target
    if target.endswith(".py") or os.path.sep in target:
        path = Path(target)
        if not path.is_file():
            print(f"minions: no such program file: {target}", file=sys.stderr)
            return 2
        sys.argv = [str(path), *args.args]
        sys.path.insert(0, str(path.resolve().parent))
        runpy.run_path(str(path), run_name="__main__")
        return 0
    module_name, _, attr = target.partition(":")
    if not attr:
        print(f"minions: {target!r} is neither a .py file nor package.module:attr", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        print(f"minions: cannot load {target}: {exc}", file=sys.stderr)
        return 2
    if isinstance(obj, type) and issubclass(obj, Component):
        components: list[type[Component]] = [obj]
    elif isinstance(obj, list | tuple) and all(
        isinstance(c, type) and issubclass(c, Component) for c in obj
    ):
        components = list(obj)
    elif callable(obj):
        obj()
        return 0
    else:
        print(
            f"minions: {target} is not a component class, a list of them, or a function",
            file=sys.stderr,
        )
        return 2
    run(*components, config=args.config, stop_after=args.seconds, log_level=args.log_level)
    return 0

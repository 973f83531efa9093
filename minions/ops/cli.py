"""The ``minions`` command line (also ``python -m minions``).

``minions run app.py`` runs a program file as ``__main__``, exactly like ``python app.py``.
``minions run package.module:attr`` imports ``attr`` and runs it: a component class, a list or
tuple of them, or a function that calls ``run(...)`` itself.

The other commands operate the system running in a project folder — the current directory,
``--project DIR``, or ``$MINIONS_PROJECT_DIR`` — through its control socket
(``minions.ops.control``): ``status`` (``--json``, ``--metrics``), ``top``, ``restart NAME``,
``stop [NAME]``, ``redeploy NAME``, ``scale NAME N``, ``dashboard [--port N]`` (a live web page
of the system, :mod:`.dashboard`; ``--url`` prints the address of the one the system serves
itself); ``logs [NAME] [-f]`` reads the structured log file (across its rotated files). A
problem (no system, a stale socket, an unknown component, a refused or failed operation) is one
line on stderr and exit status 1; a usage error is exit status 2; ``status`` exits with 3 when a
component has failed. Every status is in :mod:`.exits`.

``minions run``'s options reach the program through the environment variables that
:mod:`.settings` reads, so they apply the same whether the target is a program file that calls
``run(...)`` itself or a ``package.module:attr``. A definition error raised while the program
is loaded (a class that cannot be a component) is one line on stderr and exit status 78, as
``run(...)`` reports one found at start.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import runpy
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.component import Component
from ..core.errors import DefinitionError
from ..core.logs import LOG_FILE_NAME, LOG_LEVELS, log_dir
from ..core.runtime import default_project_dir
from ..workflows.state_store import StateStoreError
from . import doctor, stamp, tune, workflow_command
from .client import ControlClient, ControlError, NoSystemError
from .dashboard import command as dashboard_command
from .exits import EXIT_COMPONENT_FAILED, EXIT_DEFINITION, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from .identity_source import IdentityToolError
from .lock import ProjectBusyError
from .log_reader import LogReader
from .run import run
from .saved_workflows import StoreReadError
from .settings import (
    CONFIG_ENV,
    DASHBOARD_PORT_ENV,
    LOG_LEVEL_ENV,
    METRICS_PORT_ENV,
    STOP_AFTER_ENV,
)
from .top import render_status, run_top

STATUS_TIMEOUT = 5.0
OPERATION_TIMEOUT = 120.0
#: What a command reports as one line on stderr, with exit status 1.
_PROBLEMS = (
    ControlError,
    IdentityToolError,
    StoreReadError,
    ProjectBusyError,
    StateStoreError,
)


def main(argv: Sequence[str] | None = None, *, prog: str = "minions") -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    ``prog`` is how usage and help name the command (``python -m minions`` passes its own).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "run":
        return _run(args)
    try:
        code: int = COMMANDS[args.command](args)
    except _PROBLEMS as exc:
        print(f"minions: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except workflow_command.UsageProblem as exc:
        print(f"minions: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (``minions logs | head``): nothing more to show, nothing to say.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    return code


def _parser(prog: str = "minions") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run and operate Minions systems.")
    version = importlib.metadata.version("minions")
    parser.add_argument("--version", action="version", version=f"minions {version}")
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument(
        "--project",
        metavar="DIR",
        help="the project folder (default: $MINIONS_PROJECT_DIR, else the current directory)",
    )
    timed = argparse.ArgumentParser(add_help=False)
    timed.add_argument("--timeout", type=float, metavar="SECONDS", help="how long to wait")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run_cmd = commands.add_parser(
        "run", parents=[project], help="run a system: a program file or package.module:attr"
    )
    run_cmd.add_argument("target", help="app.py, or package.module:attr")
    run_cmd.add_argument("--config", help="the config file (default: ./minions.toml if present)")
    run_cmd.add_argument("--seconds", type=_seconds, help="stop gracefully after this many seconds")
    run_cmd.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="the lowest level logged (default: info)",
    )
    run_cmd.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port)",
    )
    run_cmd.add_argument(
        "--dashboard-port",
        type=int,
        metavar="PORT",
        help="serve the dashboard on 127.0.0.1:PORT (0 picks a free port)",
    )
    run_cmd.add_argument("args", nargs=argparse.REMAINDER, help="arguments for a program file")

    status = commands.add_parser(
        "status", parents=[project, timed], help="show the components of the running system"
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the status as JSON")
    shown.add_argument("--metrics", action="store_true", help="print the Prometheus metrics")

    top = commands.add_parser("top", parents=[project, timed], help="a live view of the status")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, help="stop after this many refreshes")

    for name, text in (
        ("restart", "restart a component; what depends on it restarts after it"),
        ("redeploy", "restart an isolated component with its code imported anew"),
    ):
        command = commands.add_parser(name, parents=[project, timed], help=text)
        command.add_argument("name", metavar="NAME", help="the component")
    scale = commands.add_parser(
        "scale",
        parents=[project, timed],
        help="run N replicas of a replicated component: start new ones, or drain the last ones",
    )
    scale.add_argument("name", metavar="NAME", help="the component")
    scale.add_argument(
        "replicas", metavar="N", type=_replica_count, help='a count of 1 or more, or "cores"'
    )
    stop = commands.add_parser(
        "stop", parents=[project, timed], help="stop a component and its dependents, or all"
    )
    stop.add_argument("name", metavar="NAME", nargs="?", help="the component (default: all)")

    logs = commands.add_parser("logs", parents=[project], help="show the structured log")
    logs.add_argument("name", metavar="NAME", nargs="?", help="only this component's events")
    logs.add_argument("-f", "--follow", action="store_true", help="keep showing new events")
    logs.add_argument(
        "-n", "--lines", type=int, help="show the last N events (default: all; 10 with -f)"
    )
    logs.add_argument("--json", action="store_true", help="print the JSON lines as they are")

    dashboard = commands.add_parser(
        "dashboard", parents=[project], help="serve a live web page of the running system"
    )
    dashboard.add_argument(
        "--port",
        type=_port_number,
        default=0,
        help="serve it on 127.0.0.1:PORT (default: a free port)",
    )
    dashboard.add_argument(
        "--url",
        action="store_true",
        help="print the address of the dashboard the system serves itself, and exit",
    )

    workflows = commands.add_parser(
        "workflows",
        parents=[project, timed],
        help="durable workflows: list them, or show, retry or cancel one",
        description="The workflows in flight and saved (the running system's, else the "
        "store's), or one workflow: 'show ID', 'retry ID', 'cancel ID'.",
    )
    workflow_command.add_arguments(workflows)

    stamp_cmd = commands.add_parser(
        "stamp", help="write durable ids into sources and config files (see 'doctor ids')"
    )
    stamp_targets = stamp_cmd.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target, text in (
        ("component-ids", "put @minion_id/@pipeline_id/@resource_id(UUID) on component classes"),
        ("config-ids", "put a _minions_config_id UUID into TOML, JSON and YAML config files"),
        ("all", "both: component ids in .py files, config ids in config files"),
    ):
        stamp.add_arguments(
            stamp_targets.add_parser(target, parents=[project], help=text, description=text)
        )
    tune_cmd = commands.add_parser("tune", help="measure settings on this machine: 'tune sqlite'")
    tune_targets = tune_cmd.add_subparsers(dest="target", metavar="TARGET", required=True)
    text = "benchmark the SQLite state store's settings here and recommend some"
    tune.add_arguments(tune_targets.add_parser("sqlite", help=text, description=text))
    doctor_cmd = commands.add_parser("doctor", help="check a project: 'doctor ids'")
    doctor_targets = doctor_cmd.add_subparsers(dest="target", metavar="TARGET", required=True)
    text = "report missing, invalid and duplicate component and config ids (exit 1 if any)"
    doctor.add_arguments(
        doctor_targets.add_parser("ids", parents=[project], help=text, description=text)
    )
    return parser


# -- run ---------------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more; got {text!r}")
    return value


def _port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 0 to 65535 (0 picks a free port); got {text!r}"
        )
    return port


def _run(args: argparse.Namespace) -> int:
    if args.project:
        os.environ["MINIONS_PROJECT_DIR"] = str(Path(args.project).resolve())
    # Read by run(), however the target calls it: a program file calls it itself.
    for variable, value in (
        (CONFIG_ENV, None if args.config is None else str(Path(args.config).resolve())),
        (STOP_AFTER_ENV, args.seconds),
        (LOG_LEVEL_ENV, args.log_level),
        (METRICS_PORT_ENV, args.metrics_port),
        (DASHBOARD_PORT_ENV, args.dashboard_port),
    ):
        if value is not None:
            os.environ[variable] = str(value)
    try:
        return _run_target(args)
    except DefinitionError as exc:
        # Raised while the program was loaded, when one of its classes was defined.
        print(f"minions: {exc}", file=sys.stderr)
        return EXIT_DEFINITION


def _run_target(args: argparse.Namespace) -> int:
    target: str = args.target
    if target.endswith(".py") or os.path.sep in target:
        path = Path(target)
        if not path.is_file():
            print(f"minions: no such program file: {target}", file=sys.stderr)
            return EXIT_USAGE
        sys.argv = [str(path), *args.args]
        sys.path.insert(0, str(path.resolve().parent))
        runpy.run_path(str(path), run_name="__main__")
        return EXIT_OK
    module_name, _, attr = target.partition(":")
    if not attr:
        print(f"minions: {target!r} is neither a .py file nor package.module:attr", file=sys.stderr)
        return EXIT_USAGE
    sys.path.insert(0, os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        print(f"minions: cannot load {target}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(obj, type) and issubclass(obj, Component):
        components: list[type[Component]] = [obj]
    elif isinstance(obj, list | tuple) and all(
        isinstance(c, type) and issubclass(c, Component) for c in obj
    ):
        components = list(obj)
    elif callable(obj):
        obj()
        return EXIT_OK
    else:
        print(
            f"minions: {target} is not a component class, a list of them, or a function",
            file=sys.stderr,
        )
        return EXIT_USAGE
    run(*components)
    return EXIT_OK


# -- operating a running system ----------------------------------------------------------------


def _project(args: argparse.Namespace) -> Path:
    return Path(args.project).resolve() if args.project else default_project_dir()


def _client(args: argparse.Namespace, default_timeout: float) -> ControlClient:
    timeout = args.timeout if args.timeout is not None else default_timeout
    return ControlClient(_project(args), timeout=timeout)


def _status(args: argparse.Namespace) -> int:
    client = _client(args, STATUS_TIMEOUT)
    if args.metrics:
        sys.stdout.write(client.request("metrics"))
        return 0
    status = client.request("status")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status, _width()))
    return EXIT_COMPONENT_FAILED if failed_components(status) else EXIT_OK


def failed_components(status: dict[str, Any]) -> list[str]:
    """The components of a ``status`` answer that have failed: given up, or crashed and not
    restarted (what makes ``run()`` exit with status 1 when the system stops)."""
    return [
        str(row.get("name"))
        for row in status.get("components", [])
        if row.get("state") == "failed" or row.get("ended_by_crash")
    ]


def _top(args: argparse.Namespace) -> int:
    client = _client(args, STATUS_TIMEOUT)
    if args.iterations is not None and args.iterations < 1:
        raise ControlError("--iterations must be at least 1")
    run_top(
        lambda: client.request("status"),
        sys.stdout,
        interval=args.interval,
        iterations=args.iterations,
        width=_width,
    )
    return 0


def _restart(args: argparse.Namespace) -> int:
    row = _client(args, OPERATION_TIMEOUT).request("restart", args.name)
    print(f"restarted {_describe(row)}")
    return 0


def _redeploy(args: argparse.Namespace) -> int:
    row = _client(args, OPERATION_TIMEOUT).request("redeploy", args.name)
    print(f"redeployed {_describe(row)}")
    return 0


def _replica_count(text: str) -> int | str:
    if text == "cores":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f'expected a count of 1 or more, or "cores"; got {text!r}')
    return count


def _scale(args: argparse.Namespace) -> int:
    row = _client(args, OPERATION_TIMEOUT).request("scale", args.name, replicas=args.replicas)
    replicas = row.get("replicas") or []
    running = sum(1 for r in replicas if r["state"] == "running")
    print(f"scaled {row['name']}: {running} of {len(replicas)} replicas running")
    return 0


def _stop(args: argparse.Namespace) -> int:
    client = _client(args, OPERATION_TIMEOUT)
    if args.name is None:
        client.request("stop")
        print(f"stopped the system in {client.project_dir}")
    else:
        row = client.request("stop", args.name)
        print(f"stopped {_describe(row)}")
    return 0


def _describe(row: dict[str, Any]) -> str:
    text = f"{row['name']}: {row['state']}"
    if row.get("pid") is not None:
        text += f", pid {row['pid']}"
    return text


def _logs(args: argparse.Namespace) -> int:
    project = _project(args)
    path = log_dir(project) / LOG_FILE_NAME
    reader = LogReader(path, args.name, raw=args.json)
    if not reader.files():
        raise ControlError(
            f"no log file at {path}: a system writes it when it runs in {project} "
            "(or pass --project DIR)"
        )
    if args.name is not None:
        known = reader.components() | _running_components(project)
        if args.name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ControlError(f"no component {args.name!r} in {project}; known: {names}")
    lines = args.lines if args.lines is not None else (10 if args.follow else None)
    shown, end = reader.tail(lines)
    for line in shown:
        print(line)
    sys.stdout.flush()
    if args.follow:
        reader.follow(end, sys.stdout)
    return 0


def _running_components(project: Path) -> set[str]:
    try:
        status = ControlClient(project, timeout=STATUS_TIMEOUT).request("status")
    except NoSystemError:
        return set()
    return {c["name"] for c in status["components"]}


def _width() -> int | None:
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _dashboard(args: argparse.Namespace) -> int:
    if args.url:
        dashboard_command.print_url(_project(args), sys.stdout)
    else:
        dashboard_command.serve(_project(args), args.port, sys.stdout)
    return EXIT_OK


def _paths(args: argparse.Namespace) -> list[Path]:
    return list(args.paths) or [_project(args)]


def _workflows(args: argparse.Namespace) -> int:
    timeout = args.timeout if args.timeout is not None else OPERATION_TIMEOUT
    return workflow_command.main(args, _project(args), timeout)


def _stamp(args: argparse.Namespace) -> int:
    return stamp.main(args.target, _paths(args), dry_run=args.dry_run)


def _tune(args: argparse.Namespace) -> int:
    return tune.main(args)


def _doctor(args: argparse.Namespace) -> int:
    return doctor.main(_paths(args))


COMMANDS = {
    "status": _status,
    "top": _top,
    "restart": _restart,
    "redeploy": _redeploy,
    "scale": _scale,
    "stop": _stop,
    "logs": _logs,
    "dashboard": _dashboard,
    "workflows": _workflows,
    "stamp": _stamp,
    "tune": _tune,
    "doctor": _doctor,
}

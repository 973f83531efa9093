"""The settings of one ``run(...)``: where each comes from, resolved and checked in one place.

Every setting of ``run(...)`` can be given four ways; the first one present wins:

1. an environment variable — what ``minions run``'s options (``--seconds``, ``--log-level``,
   ``--config``, ``--metrics-port``, ``--dashboard-port``) set, so they reach a program file
   that calls ``run(...)`` itself;
2. the argument of ``run(...)``;
3. the ``[minions]`` table of the config file (not for ``config`` itself);
4. the default.

==================  ===========================  ==================  ==========================
``run()`` argument  environment variable         ``[minions]`` key   default
==================  ===========================  ==================  ==========================
``config``          ``MINIONS_CONFIG``           —                   ``<project>/minions.toml``
``log_level``       ``MINIONS_LOG_LEVEL``        ``log_level``       ``"info"``
``stop_after``      ``MINIONS_STOP_AFTER``       —                   none: run until stopped
``metrics_port``    ``MINIONS_METRICS_PORT``     ``metrics_port``    none: metrics off
``dashboard_port``  ``MINIONS_DASHBOARD_PORT``   ``dashboard_port``  none: no dashboard
``log_max_bytes``   ``MINIONS_LOG_MAX_BYTES``    ``log_max_bytes``   10 MiB (0: never rotate)
``log_backups``     ``MINIONS_LOG_BACKUPS``      ``log_backups``     10 rotated files kept
``ray_address``     ``MINIONS_RAY_ADDRESS``      ``ray_address``     none: a local Ray if needed
==================  ===========================  ==================  ==========================

The ``[minions]`` table may also hold a ``[minions.replicas]`` table of replica counts by
component name (read by the runtime, see docs/scale-out.md) and a ``[minions.sandbox]`` table
of sandboxes by component name (read by the runtime, see docs/sandboxing.md).

A bad value is a :class:`~minions.ConfigError` that names where it came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import ConfigSource
from ..core.errors import ConfigError
from ..core.logs import DEFAULT_LOG_BACKUPS, DEFAULT_LOG_MAX_BYTES, LOG_LEVELS

__all__ = [
    "CONFIG_ENV",
    "CONFIG_TABLE",
    "DASHBOARD_PORT_ENV",
    "LOG_BACKUPS_ENV",
    "LOG_LEVEL_ENV",
    "LOG_MAX_BYTES_ENV",
    "METRICS_PORT_ENV",
    "RAY_ADDRESS_ENV",
    "SETTINGS",
    "SETTING_NAMES",
    "STOP_AFTER_ENV",
    "RunSettings",
    "Setting",
    "resolve_settings",
]

CONFIG_ENV = "MINIONS_CONFIG"
LOG_LEVEL_ENV = "MINIONS_LOG_LEVEL"
STOP_AFTER_ENV = "MINIONS_STOP_AFTER"
METRICS_PORT_ENV = "MINIONS_METRICS_PORT"
DASHBOARD_PORT_ENV = "MINIONS_DASHBOARD_PORT"
LOG_MAX_BYTES_ENV = "MINIONS_LOG_MAX_BYTES"
LOG_BACKUPS_ENV = "MINIONS_LOG_BACKUPS"
RAY_ADDRESS_ENV = "MINIONS_RAY_ADDRESS"
#: The table of the config file that holds the system's own settings.
CONFIG_TABLE = "minions"
#: Tables inside [minions] that others read: replica counts and sandboxes, read by the runtime.
_SUBTABLES = ("replicas", "sandbox")

ConfigArg = str | os.PathLike[str] | Mapping[str, Any] | None


@dataclass(frozen=True)
class RunSettings:
    """What one ``run(...)`` runs with, every source applied (see the module docstring)."""

    config: ConfigArg
    config_source: ConfigSource
    log_level: str
    stop_after: float | None
    metrics_port: int | None
    log_max_bytes: int
    log_backups: int
    ray_address: str | None = None
    dashboard_port: int | None = None


@dataclass(frozen=True)
class Setting:
    """One setting of ``run(...)``: its argument's name (a field of :class:`RunSettings`), its
    environment variable, how a value is checked (``parse(value, where_it_came_from)``), its
    default, and whether the ``[minions]`` table may set it."""

    name: str
    env: str
    parse: Callable[[object, str], Any]
    default: Any
    in_table: bool = True


def resolve_settings(
    *,
    project_dir: Path,
    environ: Mapping[str, str],
    config: ConfigArg = None,
    **given: Any,
) -> RunSettings:
    """Resolve the settings of a ``run(...)`` called with ``config`` and the other settings
    ``given`` by name (``None``: not given)."""
    unknown_args = sorted(set(given) - set(SETTING_NAMES))
    if unknown_args:
        raise TypeError(f"unknown run() setting(s): {', '.join(unknown_args)}")
    if environ.get(CONFIG_ENV):
        config = environ[CONFIG_ENV]
    source = ConfigSource.load(config, project_dir)
    table = source.tables.get(CONFIG_TABLE, {})
    keys = [s.name for s in SETTINGS if s.in_table]
    unknown = sorted(set(table) - set(keys) - set(_SUBTABLES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in the [{CONFIG_TABLE}] table of "
            f"{source.origin}; it may hold: {', '.join(keys)} and the "
            f"[{CONFIG_TABLE}.replicas] and [{CONFIG_TABLE}.sandbox] tables"
        )
    where = f"in [{CONFIG_TABLE}] of {source.origin}"

    def pick(setting: Setting) -> Any:
        name, env = setting.name, setting.env
        if environ.get(env):
            return setting.parse(environ[env], f"${env}")
        if given.get(name) is not None:
            return setting.parse(given[name], f"run({name}=...)")
        if setting.in_table and name in table:
            return setting.parse(table[name], f"{name} {where}")
        return setting.default

    return RunSettings(config=config, config_source=source, **{s.name: pick(s) for s in SETTINGS})


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _level(value: object, origin: str) -> str:
    level = value.strip().lower() if isinstance(value, str) else None
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"{origin} must be a log level, one of {', '.join(LOG_LEVELS)}; got {value!r}"
        )
    return level


def _seconds(value: object, origin: str) -> float:
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{origin} must be a number of seconds, 0 or more; got {value!r}")
    return seconds


def _port(value: object, origin: str) -> int:
    port = _integer(value)
    if port is None or not 0 <= port <= 65535:
        raise ConfigError(
            f"{origin} must be a port number from 0 to 65535 (0 picks a free port), got {value!r}"
        )
    return port


def _size(value: object, origin: str) -> int:
    size = _integer(value)
    if size is None or size < 0:
        raise ConfigError(
            f"{origin} must be a size in bytes (e.g. 10485760 for 10 MiB; 0 never rotates the "
            f"log file), got {value!r}"
        )
    return size


def _address(value: object, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{origin} must be the address of a Ray cluster, e.g. 'ray://head:10001' or "
            f"'10.0.0.5:6379'; got {value!r}"
        )
    return value.strip()


def _count(value: object, origin: str) -> int:
    count = _integer(value)
    if count is None or count < 1:
        raise ConfigError(
            f"{origin} must be how many rotated log files to keep, 1 or more; got {value!r}"
        )
    return count


#: Every setting of ``run(...)`` but ``config``, in the order of the module docstring's table.
SETTINGS = (
    Setting("log_level", LOG_LEVEL_ENV, _level, "info"),
    Setting("stop_after", STOP_AFTER_ENV, _seconds, None, in_table=False),
    Setting("metrics_port", METRICS_PORT_ENV, _port, None),
    Setting("dashboard_port", DASHBOARD_PORT_ENV, _port, None),
    Setting("log_max_bytes", LOG_MAX_BYTES_ENV, _size, DEFAULT_LOG_MAX_BYTES),
    Setting("log_backups", LOG_BACKUPS_ENV, _count, DEFAULT_LOG_BACKUPS),
    Setting("ray_address", RAY_ADDRESS_ENV, _address, None),
)
SETTING_NAMES = tuple(s.name for s in SETTINGS)

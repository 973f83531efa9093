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
from typing import Any, TypeVar

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
    "STOP_AFTER_ENV",
    "RunSettings",
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
_TABLE_KEYS = (
    "log_level",
    "metrics_port",
    "dashboard_port",
    "log_max_bytes",
    "log_backups",
    "ray_address",
)
#: Tables inside [minions] that others read: replica counts and sandboxes, read by the runtime.
_SUBTABLES = ("replicas", "sandbox")

ConfigArg = str | os.PathLike[str] | Mapping[str, Any] | None
T = TypeVar("T")


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


def resolve_settings(
    *,
    project_dir: Path,
    environ: Mapping[str, str],
    config: ConfigArg = None,
    log_level: str | None = None,
    stop_after: float | None = None,
    metrics_port: int | None = None,
    log_max_bytes: int | None = None,
    log_backups: int | None = None,
    ray_address: str | None = None,
    dashboard_port: int | None = None,
) -> RunSettings:
    """Resolve the settings of a ``run(...)`` called with these arguments."""
    if environ.get(CONFIG_ENV):
        config = environ[CONFIG_ENV]
    source = ConfigSource.load(config, project_dir)
    table = source.tables.get(CONFIG_TABLE, {})
    unknown = sorted(set(table) - set(_TABLE_KEYS) - set(_SUBTABLES))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} in the [{CONFIG_TABLE}] table of "
            f"{source.origin}; it may hold: {', '.join(_TABLE_KEYS)} and the "
            f"[{CONFIG_TABLE}.replicas] and [{CONFIG_TABLE}.sandbox] tables"
        )
    where = f"in [{CONFIG_TABLE}] of {source.origin}"

    def pick(
        name: str, env: str, explicit: object, parse: Callable[[object, str], T], default: T
    ) -> T:
        if environ.get(env):
            return parse(environ[env], f"${env}")
        if explicit is not None:
            return parse(explicit, f"run({name}=...)")
        if name in table:
            return parse(table[name], f"{name} {where}")
        return default

    return RunSettings(
        config=config,
        config_source=source,
        log_level=pick("log_level", LOG_LEVEL_ENV, log_level, _level, "info"),
        stop_after=pick("stop_after", STOP_AFTER_ENV, stop_after, _seconds, None),
        metrics_port=pick("metrics_port", METRICS_PORT_ENV, metrics_port, _port, None),
        log_max_bytes=pick(
            "log_max_bytes", LOG_MAX_BYTES_ENV, log_max_bytes, _size, DEFAULT_LOG_MAX_BYTES
        ),
        log_backups=pick("log_backups", LOG_BACKUPS_ENV, log_backups, _count, DEFAULT_LOG_BACKUPS),
        ray_address=pick("ray_address", RAY_ADDRESS_ENV, ray_address, _address, None),
        dashboard_port=pick("dashboard_port", DASHBOARD_PORT_ENV, dashboard_port, _port, None),
    )


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

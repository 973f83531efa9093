"""Where each setting of ``run(...)`` comes from: the environment (what ``minions run``'s
options set), then run()'s argument, then the ``[minions]`` table, then the default; a bad
value is a ConfigError that names where it came from."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from minions import ConfigError, run
from minions.ops.settings import SETTINGS, RunSettings, resolve_settings


def test_one_table_holds_every_setting() -> None:
    """Each setting is one row of ``SETTINGS``: a keyword of ``run()`` (``None`` when not given),
    a field of ``RunSettings``, an environment variable of its own."""
    names = {s.name for s in SETTINGS}
    parameters = inspect.signature(run).parameters
    assert set(parameters) - names == {"components", "config", "options", "project_dir"}
    assert all(parameters[name].default is None for name in names)
    assert {f.name for f in dataclasses.fields(RunSettings)} == names | {"config", "config_source"}
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    with pytest.raises(TypeError, match="unknown run\\(\\) setting\\(s\\): colour"):
        resolve_settings(project_dir=Path("."), environ={}, colour="red")


def test_each_setting_takes_the_first_source_present(tmp_path: Path) -> None:
    (tmp_path / "minions.toml").write_text(
        "[minions]\nlog_level = 'warning'\nlog_max_bytes = 1000\nlog_backups = 3\n"
    )
    defaults = resolve_settings(project_dir=tmp_path / "empty", environ={})
    assert (defaults.log_level, defaults.stop_after, defaults.metrics_port) == ("info", None, None)
    assert (defaults.log_max_bytes, defaults.log_backups) == (10 * 1024 * 1024, 10)
    table = resolve_settings(project_dir=tmp_path, environ={})
    assert (table.log_level, table.log_max_bytes, table.log_backups) == ("warning", 1000, 3)
    explicit = resolve_settings(
        project_dir=tmp_path,
        environ={},
        log_level="ERROR",
        stop_after=2,
        log_max_bytes=0,
        log_backups=1,
    )
    assert (explicit.log_level, explicit.stop_after) == ("error", 2.0)
    assert (explicit.log_max_bytes, explicit.log_backups) == (0, 1)
    environ = {
        "MINIONS_LOG_LEVEL": "debug",
        "MINIONS_STOP_AFTER": "0.5",
        "MINIONS_LOG_MAX_BYTES": "2048",
        "MINIONS_LOG_BACKUPS": "5",
    }
    env = resolve_settings(
        project_dir=tmp_path, environ=environ, log_level="error", stop_after=9, log_backups=1
    )
    assert (env.log_level, env.stop_after, env.log_max_bytes, env.log_backups) == (
        "debug",
        0.5,
        2048,
        5,
    )


def test_the_config_file_comes_from_the_environment_first(tmp_path: Path) -> None:
    """``$MINIONS_CONFIG`` (``minions run --config``) replaces run()'s ``config``, and its
    ``[minions]`` table is the one read."""
    (tmp_path / "minions.toml").write_text("[minions]\nlog_level = 'warning'\n")
    other = tmp_path / "other.toml"
    other.write_text("[minions]\nlog_level = 'error'\n[Feed]\nx = 1\n")
    settings = resolve_settings(
        project_dir=tmp_path, environ={"MINIONS_CONFIG": str(other)}, config={"Feed": {"x": 2}}
    )
    assert settings.config == str(other) and settings.log_level == "error"
    assert settings.config_source.tables["Feed"] == {"x": 1}


@pytest.mark.parametrize(
    ("kwargs", "environ", "table", "message"),
    [
        ({"log_level": "loud"}, {}, "", r"run\(log_level=...\) must be a log level, one of debug"),
        ({}, {"MINIONS_STOP_AFTER": "soon"}, "", r"\$MINIONS_STOP_AFTER must be a number"),
        ({"stop_after": -1}, {}, "", r"run\(stop_after=...\) must be a number of seconds, 0 or"),
        ({}, {}, "log_max_bytes = '10MB'", r"log_max_bytes in \[minions\] of .* size in bytes"),
        ({}, {"MINIONS_LOG_BACKUPS": "0"}, "", r"\$MINIONS_LOG_BACKUPS must be how many rotated"),
        ({}, {}, "colour = true", r"unknown setting\(s\) colour in the \[minions\] table"),
    ],
)
def test_a_bad_value_says_where_it_came_from(
    tmp_path: Path, kwargs: dict[str, object], environ: dict[str, str], table: str, message: str
) -> None:
    (tmp_path / "minions.toml").write_text(f"[minions]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        resolve_settings(project_dir=tmp_path, environ=environ, **kwargs)  # type: ignore[arg-type]


def test_the_ray_address_and_the_replicas_table(tmp_path: Path) -> None:
    """``ray_address`` comes from $MINIONS_RAY_ADDRESS, run()'s argument, then [minions]; the
    [minions.replicas] table is allowed there (the runtime reads it); a blank address is an
    error that says what one looks like."""
    (tmp_path / "minions.toml").write_text(
        "[minions]\nray_address = 'head:6379'\n[minions.replicas]\nPricer = 4\n"
    )
    assert resolve_settings(project_dir=tmp_path / "empty", environ={}).ray_address is None
    assert resolve_settings(project_dir=tmp_path, environ={}).ray_address == "head:6379"
    explicit = resolve_settings(project_dir=tmp_path, environ={}, ray_address="ray://a:10001")
    assert explicit.ray_address == "ray://a:10001"
    env = {"MINIONS_RAY_ADDRESS": "10.0.0.5:6379"}
    assert resolve_settings(project_dir=tmp_path, environ=env, ray_address="x").ray_address == (
        "10.0.0.5:6379"
    )
    with pytest.raises(ConfigError, match="must be the address of a Ray cluster"):
        resolve_settings(project_dir=tmp_path, environ={}, ray_address="  ")


def test_the_sandbox_table_is_the_runtimes(tmp_path: Path) -> None:
    """[minions.sandbox] is allowed in [minions] (the runtime reads it, docs/sandboxing.md)."""
    (tmp_path / "minions.toml").write_text(
        "[minions]\nlog_level = 'info'\n[minions.sandbox]\nX = true\n"
    )
    assert resolve_settings(project_dir=tmp_path, environ={}).log_level == "info"

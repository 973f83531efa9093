"""Component configuration: pydantic models, dataclasses or msgspec Structs from ``minions.toml``.

A component declares ``config: MyConfig`` (a class attribute or an ``__init__`` parameter). Its
values come from the table named after the component in the project's ``minions.toml``::

    [PriceFeed]
    interval = 0.5
    pairs = ["ETH/USDC", "BTC/USDC"]

and environment variables override single fields: ``MINIONS_PRICEFEED__INTERVAL=2`` (component
name upper-cased, ``__`` before each field name; a value starting with ``[`` or ``{`` is read as
JSON). Every component's config is validated before anything starts; an error names the
component, the field and where the value came from.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from .config_identity import CONFIG_ID_KEY
from .errors import ConfigError
from .values import InvalidValue, field_names, plain_codec, uses_msgspec

ENV_PREFIX = "MINIONS_"
CONFIG_FILE = "minions.toml"


@dataclass(frozen=True)
class ConfigSource:
    """Tables per component name, and a label saying where they came from."""

    tables: Mapping[str, Mapping[str, Any]]
    origin: str

    @classmethod
    def load(
        cls, config: str | os.PathLike[str] | Mapping[str, Any] | None, project_dir: Path
    ) -> ConfigSource:
        """Read ``config``: a path, a mapping, or ``None`` for ``<project>/minions.toml``."""
        if isinstance(config, Mapping):
            return cls(
                _tables(config, "the config mapping"), "the config mapping passed to the runtime"
            )
        path = Path(config) if config is not None else project_dir / CONFIG_FILE
        if config is None and not path.exists():
            return cls({}, str(path))
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(
                f"config file {path} does not exist; create it or fix the path"
            ) from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        return cls(_tables(data, str(path)), str(path))

    def build(self, component: str, config_type: type[Any], environ: Mapping[str, str]) -> Any:
        """Validate the config of ``component`` into an instance of ``config_type``."""
        values: dict[str, Any] = dict(self.tables.get(component, {}))
        overridden = _env_overrides(component, environ)
        for path, value in overridden.items():
            _set_path(values, path, value)
        allowed = field_names(config_type)
        unknown = sorted(set(values) - allowed) if allowed is not None else []
        if unknown:
            known = ", ".join(sorted(allowed or ())) or "none"
            raise ConfigError(
                f"invalid configuration for {component}: unknown field(s) {', '.join(unknown)} "
                f"in the [{component}] table of {self.origin} or the environment; "
                f"{config_type.__qualname__} has: {known}"
            )
        try:
            if uses_msgspec(config_type):
                return plain_codec(config_type).load(values)
            return pydantic.TypeAdapter(config_type).validate_python(values)
        except (pydantic.ValidationError, InvalidValue) as exc:
            problems = (
                "; ".join(_describe_error(err) for err in exc.errors())
                if isinstance(exc, pydantic.ValidationError)
                else "; ".join(exc.problems)
            )
            where = f"the [{component}] table of {self.origin}"
            if overridden:
                names = ", ".join(_env_name(component, p) for p in overridden)
                where += f" (with environment overrides {names})"
            raise ConfigError(
                f"invalid configuration for {component}: {problems}. Fix {where}"
            ) from exc

    def unmatched(
        self,
        components: Mapping[str, bool],
        environ: Mapping[str, str],
        *,
        reserved: Collection[str],
    ) -> list[str]:
        """Warnings, one per table and per ``MINIONS_<X>__...`` variable that nothing reads: it
        names none of ``components`` (a typo), or one that declares no config. ``components``
        maps each component's name to whether it declares a config; ``reserved`` tables
        (``[minions]``) are not components' and are not reported."""
        warnings: list[str] = []
        known = sorted(components)
        for table in sorted(set(self.tables) - set(reserved)):
            if table in components:
                if not components[table]:
                    warnings.append(_no_config(f"the [{table}] table of {self.origin}", table))
                continue
            hint = _did_you_mean(table, known)
            warnings.append(
                f"the [{table}] table of {self.origin} names no component of this system, so "
                f"nothing reads it{hint}; the components are: {', '.join(known) or 'none'}"
            )
        keys = {_env_key(name): name for name in components}
        for variable in sorted(environ):
            upper = variable.upper()
            if not upper.startswith(ENV_PREFIX) or "__" not in upper[len(ENV_PREFIX) :]:
                continue
            owner = next((name for key, name in keys.items() if upper.startswith(key)), None)
            if owner is not None:
                if not components[owner]:
                    warnings.append(_no_config(f"the environment variable {variable}", owner))
                continue
            prefix = upper[: upper.index("__", len(ENV_PREFIX)) + 2]
            hint = _did_you_mean(prefix, list(keys))
            warnings.append(
                f"the environment variable {variable} names no component of this system "
                f"({prefix}... would be a component's), so nothing reads it{hint}"
            )
        return warnings


def _no_config(what: str, component: str) -> str:
    return (
        f"{what} is not read: {component} declares no config (give it one with "
        f"'config: {component}Config', a pydantic model or dataclass)"
    )


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f" (did you mean {close[0]}?)" if close else ""


def _tables(data: Mapping[str, Any], origin: str) -> dict[str, Mapping[str, Any]]:
    tables: dict[str, Mapping[str, Any]] = {}
    for name, table in data.items():
        if name == CONFIG_ID_KEY:
            continue  # the file's own identity (``minions stamp config-ids``), not a table
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{origin}: top-level key {name!r} must be a table named after a component, "
                f"e.g. [{name}]"
            )
        tables[str(name)] = table
    return tables


def _env_key(component: str) -> str:
    return ENV_PREFIX + re.sub(r"[^0-9A-Za-z]", "_", component).upper() + "__"


def _env_name(component: str, path: tuple[str, ...]) -> str:
    return _env_key(component) + "__".join(p.upper() for p in path)


def _env_overrides(component: str, environ: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    prefix = _env_key(component)
    found: dict[tuple[str, ...], Any] = {}
    for key, raw in environ.items():
        if not key.upper().startswith(prefix) or len(key) == len(prefix):
            continue
        path = tuple(part.lower() for part in key[len(prefix) :].split("__"))
        value: Any = raw
        if raw.lstrip().startswith(("[", "{")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {key} is not valid JSON: {exc}") from exc
        found[path] = value
    return found


def _set_path(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = values
    for part in path[:-1]:
        nested = target.get(part)
        if not isinstance(nested, dict):
            nested = dict(nested) if isinstance(nested, Mapping) else {}
            target[part] = nested
        target = nested
    target[path[-1]] = value


def _describe_error(err: Any) -> str:
    location = ".".join(str(p) for p in err.get("loc", ())) or "(the table)"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, Mapping) else ""
    return f"field '{location}': {err.get('msg', 'invalid')}{shown}"

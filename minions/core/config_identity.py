"""The identity a config file carries: its top-level ``_minions_config_id``.

A config file given to ``Gru.start_orchestration(..., minion_config_path=...)`` is part of the
orchestration's identity. Without an id of its own that identity is the file's path in the
project, so moving or renaming the file starts another orchestration; a file that carries
``_minions_config_id`` (``minions stamp config-ids`` writes one) is known by it wherever it
lives. The key is metadata, not a setting: the runtime's config reader and Gru leave it out of
the values they validate.

TOML and JSON files are parsed; a YAML file's top level is scanned line by line for the key
(Minions does not depend on a YAML parser), which covers the block mappings config files use.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["CONFIG_ID_KEY", "CONFIG_SUFFIXES", "ConfigIdField", "config_id_of", "read_config_id"]

CONFIG_ID_KEY = "_minions_config_id"
#: The config file formats an id can be read from (and stamped into).
CONFIG_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


@dataclass(frozen=True)
class ConfigIdField:
    """What a config file says about its id."""

    #: Whether the top level is a mapping, which can hold the key (a JSON array cannot).
    mapping: bool
    #: Whether the key is there, and its value as written (any type).
    present: bool = False
    value: object = None
    #: The 1-based line the key is on, where known (YAML).
    line: int | None = None


def read_config_id(text: str, suffix: str) -> ConfigIdField:
    """Find the id in the text of a config file of type ``suffix`` (``.toml``, ...).

    Raises ``ValueError`` (``tomllib.TOMLDecodeError``, ``json.JSONDecodeError``) for a file
    that does not parse, and for a suffix that is not a config format.
    """
    suffix = suffix.lower()
    if suffix == ".toml":
        data: object = tomllib.loads(text)
    elif suffix == ".json":
        data = json.loads(text)
    elif suffix in (".yaml", ".yml"):
        return _scan_yaml(text)
    else:
        raise ValueError(f"{suffix!r} is not a config file type; expected one of {CONFIG_SUFFIXES}")
    if not isinstance(data, dict):
        return ConfigIdField(mapping=False)
    if CONFIG_ID_KEY not in data:
        return ConfigIdField(mapping=True)
    return ConfigIdField(mapping=True, present=True, value=data[CONFIG_ID_KEY])


def config_id_of(text: str, suffix: str, origin: str) -> str | None:
    """The id a config file carries, or ``None``; ``ConfigError`` if it is not a usable one.

    Any non-empty string is accepted here (``minions doctor ids`` checks that it is a UUID).
    """
    try:
        found = read_config_id(text, suffix)
    except ValueError as exc:
        raise ConfigError(f"cannot read {CONFIG_ID_KEY} from {origin}: {exc}") from exc
    if not found.present:
        return None
    value = found.value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{CONFIG_ID_KEY} in {origin} must be a non-empty string, got {value!r}; "
            "let 'minions stamp config-ids' write one"
        )
    return value.strip()


def _scan_yaml(text: str) -> ConfigIdField:
    """The key among the first document's top-level lines."""
    started = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("%"):  # a directive, before the document
            continue
        if stripped == "---" or stripped.startswith("--- "):
            if started:
                break  # the next document
            started = True
            continue
        if stripped == "..." and started:
            break
        if not started and stripped.startswith(("-", "[", "{")) and line == stripped:
            return ConfigIdField(mapping=False)  # a sequence or a flow collection
        started = True
        if line != stripped:
            continue  # indented: inside a nested mapping
        key, colon, rest = stripped.partition(":")
        if colon and key.strip().strip("\"'") == CONFIG_ID_KEY:
            return ConfigIdField(mapping=True, present=True, value=_yaml_scalar(rest), line=number)
    return ConfigIdField(mapping=True)


def _yaml_scalar(raw: str) -> str:
    value = raw.strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        if end > 0:
            return value[1:end]
    return value.split(" #", 1)[0].strip()

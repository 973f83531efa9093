"""Component configuration: minions.toml tables, environment overrides, validation errors.

A component declares ``config: Model`` (class attribute or ``__init__`` parameter); its values
come from the ``[ComponentName]`` table of the project's minions.toml, overridden field by field by
``MINIONS_<COMPONENT>__<FIELD>`` variables. Invalid config is a ConfigError naming the
component, the field and the file, raised before any component is constructed.
"""

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest
from pydantic import BaseModel, Field

from minions import ConfigError, DefinitionError, Minion, Resource, Runtime

pytestmark = pytest.mark.anyio

LIMIT = 5.0

seen: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _reset_seen() -> Iterator[None]:
    seen.clear()
    yield
    seen.clear()


class DbSettings(BaseModel):
    host: str = "localhost"
    port: int = 5432


class FeedConfig(BaseModel):
    interval: float = Field(1.0, gt=0)
    pairs: list[str] = Field(default_factory=lambda: ["ETH/USDC"])
    db: DbSettings = Field(default_factory=DbSettings)


@dataclass
class StrategyConfig:
    threshold: float
    label: str = "default"
    tags: list[str] = field(default_factory=list)


class Feed(Resource):
    """Config as a class attribute: set before ``__init__`` runs."""

    config: FeedConfig

    def __init__(self) -> None:
        seen["Feed"] = self.config


class Strategy(Minion):
    """Config as an ``__init__`` parameter, beside an injected resource."""

    def __init__(self, feed: Feed, config: StrategyConfig) -> None:
        seen["Strategy"] = config
        seen["Strategy.feed"] = feed

    async def run(self) -> None:
        await asyncio.Event().wait()


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "minions.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def start(tmp_path: Path, *components: type[Any], **kwargs: Any) -> dict[str, Any]:
    """Start ``components`` in a runtime for ``tmp_path`` and stop it; return what was seen."""
    kwargs.setdefault("environ", {})
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, **kwargs) as rt:
            await rt.start(*components)
    return dict(seen)


async def test_tables_of_the_project_minions_toml_configure_components(tmp_path: Path) -> None:
    """Each component reads the table named after it, as a pydantic model or a dataclass."""
    write_toml(
        tmp_path,
        """
        [Feed]
        interval = 0.5
        pairs = ["BTC/USDC", "ETH/USDC"]
        db = { host = "db.internal" }

        [Strategy]
        threshold = 2.5
        tags = ["fast"]

        [SomebodyElse]
        unrelated = true
        """,
    )
    got = await start(tmp_path, Strategy)
    assert got["Feed"] == FeedConfig(
        interval=0.5, pairs=["BTC/USDC", "ETH/USDC"], db=DbSettings(host="db.internal")
    )
    assert got["Strategy"] == StrategyConfig(threshold=2.5, tags=["fast"])
    assert isinstance(got["Strategy.feed"], Feed)


async def test_defaults_apply_without_a_file_or_table(tmp_path: Path) -> None:
    """No minions.toml at all: a model whose fields all have defaults is built from them."""
    got = await start(tmp_path, Feed)
    assert got["Feed"] == FeedConfig()


async def test_environment_overrides_single_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MINIONS_<COMPONENT>__<FIELD> overrides a field (read from os.environ by default); nested
    fields use one more ``__``; values starting with ``[`` or ``{`` are JSON."""
    write_toml(tmp_path, "[Feed]\ninterval = 0.5\npairs = ['A/B']\n[Strategy]\nthreshold = 1\n")
    monkeypatch.setenv("MINIONS_FEED__INTERVAL", "2")
    monkeypatch.setenv("MINIONS_FEED__PAIRS", '["X/Y", "Z/W"]')
    monkeypatch.setenv("MINIONS_FEED__DB__PORT", "6543")
    monkeypatch.setenv("minions_strategy__label", "from-env")  # case does not matter
    monkeypatch.setenv("MINIONS_OTHER__INTERVAL", "99")  # another component's: ignored
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Strategy)
    assert seen["Feed"] == FeedConfig(
        interval=2.0, pairs=["X/Y", "Z/W"], db=DbSettings(host="localhost", port=6543)
    )
    assert seen["Strategy"] == StrategyConfig(threshold=1.0, label="from-env")


async def test_a_component_name_keys_its_table_and_variables(tmp_path: Path) -> None:
    """A component renamed with ``name=`` reads ``[that-name]``; in variable names every
    character that is not a letter or digit becomes ``_``."""

    class Named(Resource, name="price-feed"):
        config: FeedConfig

        def __init__(self) -> None:
            seen["Named"] = self.config

    write_toml(tmp_path, '["price-feed"]\ninterval = 3\n')
    got = await start(tmp_path, Named, environ={"MINIONS_PRICE_FEED__PAIRS": '["Q/R"]'})
    assert got["Named"] == FeedConfig(interval=3.0, pairs=["Q/R"])


async def test_config_mapping_and_explicit_path(tmp_path: Path) -> None:
    """``config=`` may be a mapping of tables or a path to another TOML file."""
    got = await start(tmp_path, Feed, config={"Feed": {"interval": 4}})
    assert got["Feed"].interval == 4.0
    other = tmp_path / "prod.toml"
    other.write_text("[Feed]\ninterval = 5\n", encoding="utf-8")
    write_toml(tmp_path, "[Feed]\ninterval = 6\n")  # not read: an explicit path wins
    seen.clear()
    got = await start(tmp_path, Feed, config=other)
    assert got["Feed"].interval == 5.0


async def test_validation_error_names_component_field_and_file_before_anything_starts(
    tmp_path: Path,
) -> None:
    """Invalid values are a ConfigError naming the component, the field and the file; no
    component was constructed, not even the valid ones that come first."""
    path = write_toml(tmp_path, "[Feed]\ninterval = 1\n[Strategy]\nthreshold = 'high'\n")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError) as caught:
            await rt.start(Strategy)
        assert dict(rt.status()) == {}
    assert seen == {}
    message = str(caught.value)
    assert "invalid configuration for Strategy" in message
    assert "field 'threshold'" in message
    assert "(got 'high')" in message
    assert f"the [Strategy] table of {path}" in message
    assert isinstance(caught.value, DefinitionError)
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)


async def test_missing_required_field_and_nested_field_errors(tmp_path: Path) -> None:
    """A required field with no value, and a bad nested value, are both reported by path."""
    path = write_toml(tmp_path, "[Feed]\ninterval = -1\ndb = { port = 'x' }\n")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError) as caught:
            await rt.start(Strategy)
    message = str(caught.value)
    assert "invalid configuration for Feed" in message
    assert "field 'interval'" in message and "greater than 0" in message
    assert "field 'db.port'" in message
    assert str(path) in message
    write_toml(tmp_path, "")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError, match=r"Strategy: field 'threshold': Field required"):
            await rt.start(Strategy)
    assert seen == {}


async def test_a_bad_environment_override_is_named(tmp_path: Path) -> None:
    """When an override makes the config invalid, the error names the variable too."""
    write_toml(tmp_path, "[Feed]\ninterval = 1\n")
    async with Runtime(project_dir=tmp_path, environ={"MINIONS_FEED__INTERVAL": "soon"}) as rt:
        with pytest.raises(ConfigError) as caught:
            await rt.start(Feed)
    assert "field 'interval'" in str(caught.value)
    assert "environment overrides MINIONS_FEED__INTERVAL" in str(caught.value)
    async with Runtime(project_dir=tmp_path, environ={"MINIONS_FEED__PAIRS": "[oops"}) as rt:
        with pytest.raises(ConfigError, match="MINIONS_FEED__PAIRS is not valid JSON"):
            await rt.start(Feed)
    assert seen == {}


async def test_unreadable_config_files_are_clear_errors(tmp_path: Path) -> None:
    """A missing explicit file, invalid TOML, or a key that is not a table: each a ConfigError
    with the path and what to do."""
    missing = tmp_path / "nope.toml"
    async with Runtime(project_dir=tmp_path, config=missing, environ={}) as rt:
        with pytest.raises(ConfigError, match=re.escape(f"config file {missing} does not exist")):
            await rt.start(Feed)
    broken = write_toml(tmp_path, "[Feed\ninterval = 1\n")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError, match=re.escape(f"cannot read config file {broken}")):
            await rt.start(Feed)
    write_toml(tmp_path, "interval = 1\n")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError, match=r"top-level key 'interval' must be a table"):
            await rt.start(Feed)
    assert seen == {}


async def test_config_annotation_must_be_a_model_or_dataclass(tmp_path: Path) -> None:
    """``config: int`` is a definition error saying what a config may be."""

    class Odd(Minion):
        config: int

    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(DefinitionError, match=r"Odd\.config is annotated int; a component's"):
            await rt.start(Odd)


async def test_an_unknown_field_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    """A misspelt key in a table, or in an environment override, is a ConfigError naming it and
    listing the fields the model has; nothing starts."""
    write_toml(tmp_path, "[Feed]\nintreval = 1\n")
    async with Runtime(project_dir=tmp_path, environ={}) as rt:
        with pytest.raises(ConfigError) as caught:
            await rt.start(Feed)
    message = str(caught.value)
    assert "unknown field(s) intreval" in message
    assert "FeedConfig has: db, interval, pairs" in message
    write_toml(tmp_path, "")
    async with Runtime(project_dir=tmp_path, environ={"MINIONS_STRATEGY__TRESHOLD": "2"}) as rt:
        with pytest.raises(ConfigError, match=r"unknown field.*treshold"):
            await rt.start(Strategy)
    assert seen == {}

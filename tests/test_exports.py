"""The public surface: every name a package exports is listed once, importable and documented.

Users import from ``minions``, its public modules (``types``, ``exceptions``, ``interfaces``,
``implementations``, ``testing``) and ``isolation``. The code lives elsewhere — in the layers
of ``minions`` (``core``, ``workflows``, ``isolated``, ``ops``) and in ``isolation``'s
``_``-prefixed modules — and those public modules only re-export it; these tests keep
``__all__`` honest as the packages grow, and keep every import path users were promised.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections import Counter

import pytest

PACKAGES = [
    "minions",
    "minions.types",
    "minions.exceptions",
    "minions.interfaces",
    "minions.implementations",
    "minions.testing",
    "isolation",
]

#: Where the code of the public modules lives: the layers of ``minions``, ``isolation``'s
#: private modules.
INTERNAL = ("minions.core.", "minions.workflows.", "minions.isolated.", "minions.ops.")

#: Second names of one object, kept because the original ``minions`` project used them.
COMPATIBLE_ALIASES = {("minions.types", "StoredWorkflowContext")}

#: Import paths users were promised. A name may be added to a module; removing or moving one
#: breaks users' programs (and needs a CHANGELOG entry under "Removed").
PROMISED = {
    "minions": [
        "AbortWorkflow", "Backoff", "ComponentCrashed", "ComponentOptions",
        "ComponentOptionsError", "ComponentState", "ComponentStatus", "ConfigError",
        "ControlServer", "DefinitionError", "DependencyCycleError", "DependencyError",
        "Extension", "Gru", "IdentityConflictError", "Intensity", "Isolation", "MetricsEndpoint",
        "Minion", "MinionsError", "Pipeline", "RemoteError", "ReplicaInfo", "ReplicaStatus",
        "Resource", "Runtime", "RuntimeStateError", "SerializationError", "StartupError",
        "UnknownComponentError", "WorkflowStore", "WorkflowStoreConfig", "idempotent",
        "minion_id", "minion_step", "pipeline_id", "resource_id", "run",
    ],
    "minions.types": [
        "OrchestrationStatus", "PersistencePolicy", "PipelineStatistics", "RuntimeSnapshot",
        "ShutdownError", "ShutdownResult", "StartResult", "StopResult", "StoredContext",
        "StoredWorkflowContext", "WorkflowHandle", "WorkflowStatistics",
    ],
    "minions.exceptions": [
        "AbortWorkflow", "CheckpointEncodeError", "CheckpointError", "ConfigError",
        "CorruptCheckpoint", "DefinitionError", "IncompatibleCheckpoint", "MinionsError",
        "PersistenceError", "RuntimeStateError", "StartupError", "StateStoreClosed",
        "StateStoreCorrupt", "StateStoreDamaged", "StateStoreError", "StateStoreFull",
        "StateStoreInUse", "StateStoreLocked", "StateStoreReadOnly", "StateStoreUnavailable",
        "TaskCancellationError", "TaskCancellationTimeoutError", "UnsupportedSchema",
    ],
    "minions.interfaces": ["LabelledMetric", "Logger", "Metrics", "StateStore", "StoredContext"],
    "minions.implementations": [
        "InMemoryStateStore", "NoOpLogger", "NoOpMetrics", "NoOpStateStore", "PrometheusMetrics",
        "SQLiteStateStore", "StructlogLogger",
    ],
    "minions.testing": ["FakeClock"],
    "isolation": [
        "ChildExit", "ChildProcess", "ChildSpec", "ChildStartError", "ChildState",
        "ComponentCrashed", "DEFAULT_MAX_FRAME_BYTES", "DEFAULT_STREAM_CREDIT", "Isolation",
        "IsolationError", "Peer", "PeerState", "PeerStatistics", "ProtocolError", "RemoteError",
        "RemoteChild", "RemoteMethod", "Router", "RouterStatistics", "SecureChannel",
        "SecureChannels", "SerializationError", "Zygote", "check_remote_interface",
        "check_route_by", "reference", "remote_config", "remote_interface", "resolve",
        "serve_remote", "unsupported_reason",
    ],
}  # fmt: skip


def _package(name: str) -> types.ModuleType:
    module = importlib.import_module(name)
    if not isinstance(getattr(module, "__all__", None), list | tuple):
        pytest.skip(f"{name} has no __all__ yet (no public API to check)")
    return module


def _own_doc(obj: object) -> str | None:
    """The object's own docstring: not one inherited from a base class, nor the signature a
    dataclass writes when it has none."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    name = getattr(obj, "__name__", "")
    if isinstance(obj, type) and doc.startswith(f"{name}("):
        return None  # written by @dataclass
    return doc


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_is_listed_once(package: str) -> None:
    """``__all__`` has no duplicates, and no object is exported under two names (but for the
    original project's names kept as aliases)."""
    module = _package(package)
    duplicates = [name for name, n in Counter(module.__all__).items() if n > 1]
    assert duplicates == []
    by_object: dict[int, list[str]] = {}
    for name in module.__all__:
        if (package, name) not in COMPATIBLE_ALIASES:
            by_object.setdefault(id(getattr(module, name)), []).append(name)
    aliases = [names for names in by_object.values() if len(names) > 1]
    assert aliases == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_listed_name_is_importable(package: str) -> None:
    """Each name in ``__all__`` exists, and ``import *`` gives exactly ``__all__``."""
    module = _package(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(module.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_listed(package: str) -> None:
    """Nothing public is reachable from the package without being listed in ``__all__``."""
    module = _package(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(public - set(module.__all__)) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_listed_name_is_documented(package: str) -> None:
    """Each exported class and function has its own docstring."""
    module = _package(package)
    undocumented = [
        name
        for name in module.__all__
        if _own_doc(getattr(module, name)) is None and not _is_alias(getattr(module, name))
    ]
    assert undocumented == []


def _is_alias(obj: object) -> bool:
    """A type alias (``PersistencePolicy``) cannot carry a docstring of its own."""
    return getattr(obj, "__module__", None) == "typing"


@pytest.mark.parametrize("package", PACKAGES)
def test_names_are_defined_where_the_code_lives(package: str) -> None:
    """Public modules only re-export: each name is defined in a layer of ``minions`` or in a
    private module of ``isolation``, so no public module holds code of its own."""
    module = _package(package)
    for name in module.__all__:
        obj = getattr(module, name)
        where = getattr(obj, "__module__", None)
        if where is None or not (isinstance(obj, type) or callable(obj)) or where == "typing":
            continue  # a type alias (PersistencePolicy) has no module of its own
        # minions re-exports the few isolation names its users write (Isolation and the errors
        # a proxied call raises); those come from isolation's private modules.
        if package == "isolation" or where.startswith("isolation."):
            assert where.startswith("isolation._"), f"{package}.{name} is defined in {where}"
        else:
            assert where.startswith(INTERNAL), f"{package}.{name} is defined in {where}"


@pytest.mark.parametrize("package", PROMISED)
def test_promised_import_paths_still_work(package: str) -> None:
    """Every ``from <package> import <name>`` users were promised still works."""
    module = importlib.import_module(package)
    missing = [name for name in PROMISED[package] if name not in module.__all__]
    assert missing == []

"""Exceptions of the workflow API, importable as in the original ``minions`` project.

``AbortWorkflow`` is the one a program raises (inside a step, to end its workflow as aborted);
the others are what Minions raises, grouped by what the caller does about them:

* definition problems (:class:`DefinitionError` and its subclasses): fix the program;
* checkpoint problems (:class:`CheckpointError`): an unencodable event or context is a program
  bug, a corrupt checkpoint is skipped, an incompatible one means "drain first";
* store problems (:class:`StateStoreError`): ``retryable`` says whether trying again can help;
  :class:`PersistenceError` is a workflow giving up under ``idle-until-persisted``.
"""

from ._checkpoint import CheckpointEncodeError as CheckpointEncodeError
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import CorruptCheckpoint as CorruptCheckpoint
from ._checkpoint import IncompatibleCheckpoint as IncompatibleCheckpoint
from ._errors import ConfigError as ConfigError
from ._errors import DefinitionError as DefinitionError
from ._errors import MinionsError as MinionsError
from ._errors import RuntimeStateError as RuntimeStateError
from ._errors import StartupError as StartupError
from ._state_store import StateStoreClosed as StateStoreClosed
from ._state_store import StateStoreCorrupt as StateStoreCorrupt
from ._state_store import StateStoreDamaged as StateStoreDamaged
from ._state_store import StateStoreError as StateStoreError
from ._state_store import StateStoreFull as StateStoreFull
from ._state_store import StateStoreLocked as StateStoreLocked
from ._state_store import StateStoreReadOnly as StateStoreReadOnly
from ._state_store import StateStoreUnavailable as StateStoreUnavailable
from ._state_store import UnsupportedSchema as UnsupportedSchema
from ._steps import AbortWorkflow as AbortWorkflow
from ._workflow_store import PersistenceError as PersistenceError

__all__ = [
    "AbortWorkflow",
    "CheckpointEncodeError",
    "CheckpointError",
    "ConfigError",
    "CorruptCheckpoint",
    "DefinitionError",
    "IncompatibleCheckpoint",
    "MinionsError",
    "PersistenceError",
    "RuntimeStateError",
    "StartupError",
    "StateStoreClosed",
    "StateStoreCorrupt",
    "StateStoreDamaged",
    "StateStoreError",
    "StateStoreFull",
    "StateStoreLocked",
    "StateStoreReadOnly",
    "StateStoreUnavailable",
    "UnsupportedSchema",
]

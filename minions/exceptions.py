"""Exceptions of the workflow API, importable as in the original ``minions`` project.

``AbortWorkflow`` is the one a program raises (inside a step, to end its workflow as aborted);
the others are what Minions raises, grouped by what the caller does about them:

* definition problems (:class:`DefinitionError` and its subclasses): fix the program;
* checkpoint problems (:class:`CheckpointError`): an unencodable event or context is a program
  bug, a corrupt checkpoint is skipped, an incompatible one means "drain first";
* store problems (:class:`StateStoreError`): ``retryable`` says whether trying again can help;
  :class:`PersistenceError` is a workflow giving up under ``idle-until-persisted``;
* background tasks (:class:`TaskCancellationError`): a task started with
  ``self.safe_create_task`` that did not end when its component stopped
  (:class:`TaskCancellationTimeoutError`, also a ``TimeoutError``).

As in the original project, a class definition the runtime rejects is a ``TypeError``
(:class:`DefinitionError` derives from it), a bad id a ``ValueError``, and misuse of ``Gru`` a
``RuntimeError`` (:class:`RuntimeStateError`).
"""

from .core.errors import ConfigError as ConfigError
from .core.errors import DefinitionError as DefinitionError
from .core.errors import MinionsError as MinionsError
from .core.errors import PrivateDirectoryError as PrivateDirectoryError
from .core.errors import RuntimeStateError as RuntimeStateError
from .core.errors import StartupError as StartupError
from .core.errors import TaskCancellationError as TaskCancellationError
from .core.errors import TaskCancellationTimeoutError as TaskCancellationTimeoutError
from .workflows.checkpoint import CheckpointEncodeError as CheckpointEncodeError
from .workflows.checkpoint import CheckpointError as CheckpointError
from .workflows.checkpoint import CorruptCheckpoint as CorruptCheckpoint
from .workflows.checkpoint import IncompatibleCheckpoint as IncompatibleCheckpoint
from .workflows.state_store import StateStoreClosed as StateStoreClosed
from .workflows.state_store import StateStoreCorrupt as StateStoreCorrupt
from .workflows.state_store import StateStoreDamaged as StateStoreDamaged
from .workflows.state_store import StateStoreError as StateStoreError
from .workflows.state_store import StateStoreFull as StateStoreFull
from .workflows.state_store import StateStoreInUse as StateStoreInUse
from .workflows.state_store import StateStoreLocked as StateStoreLocked
from .workflows.state_store import StateStoreReadOnly as StateStoreReadOnly
from .workflows.state_store import StateStoreUnavailable as StateStoreUnavailable
from .workflows.state_store import UnsupportedSchema as UnsupportedSchema
from .workflows.steps import AbortWorkflow as AbortWorkflow
from .workflows.store import PersistenceError as PersistenceError

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
    "PrivateDirectoryError",
    "RuntimeStateError",
    "StartupError",
    "StateStoreClosed",
    "StateStoreCorrupt",
    "StateStoreDamaged",
    "StateStoreError",
    "StateStoreFull",
    "StateStoreInUse",
    "StateStoreLocked",
    "StateStoreReadOnly",
    "StateStoreUnavailable",
    "TaskCancellationError",
    "TaskCancellationTimeoutError",
    "UnsupportedSchema",
]

"""Stranded workflows: saved checkpoints of a workflow minion that its current orchestration
will never resume.

Under ``run(...)`` a workflow minion runs one orchestration, named by its own identity and its
pipeline's (``runner.orchestration_id``). Checkpoints of the same minion filed under another
orchestration id were saved with another pipeline, by Gru with a config, or by an older
Minions that counted config values in the id; nothing here resumes them. They are not touched —
they may be someone's work in progress — but they must not be forgotten in silence: the first
start of the minion on a store logs ``workflow.stranded`` with how many there are, under which
orchestrations, and how to finish or discard them.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter

from .checkpoint import CorruptCheckpoint, read_header
from .store import WorkflowStore

__all__ = ["report_stranded"]

#: Orchestrations already checked, per store: each is checked once per store, not per restart.
_checked: weakref.WeakKeyDictionary[WorkflowStore, set[str]] = weakref.WeakKeyDictionary()
#: At most this many other orchestration ids are named in the event.
_SHOWN = 5


async def report_stranded(
    store: WorkflowStore, orchestration_id: str, minion_identity: str, minion: str
) -> int:
    """Log the checkpoints of ``minion_identity`` saved under other orchestrations than
    ``orchestration_id``, once per store; return how many there are (0 when already checked)."""
    checked = _checked.setdefault(store, set())
    if orchestration_id in checked:
        return 0
    checked.add(orchestration_id)
    others: Counter[str] = Counter()
    try:
        rows = await store.state_store.get_all_contexts()
    except Exception as exc:  # advisory: the minion runs on without the report
        store.services.logger.log(
            logging.WARNING,
            "workflow.stranded_unknown",
            minion=minion,
            reason=f"cannot read the saved workflows to look for stranded ones: {exc!r}",
        )
        return 0
    for row in rows:
        if row.orchestration_id == orchestration_id:
            continue
        try:
            header = read_header(row.context, workflow_id=row.workflow_id)
        except CorruptCheckpoint:
            continue  # reported by the orchestration it belongs to, if it ever runs
        if header.minion == minion_identity:
            others[row.orchestration_id] += 1
    total = sum(others.values())
    if total:
        shown = ", ".join(f"{oid} ({n})" for oid, n in others.most_common(_SHOWN))
        store.services.logger.log(
            logging.WARNING,
            "workflow.stranded",
            minion=minion,
            orchestration=orchestration_id,
            stranded=total,
            reason=(
                f"{total} saved workflow(s) of {minion} belong to other orchestrations ({shown}) "
                "and will not resume here: they were saved with another pipeline, by Gru with a "
                "config, or by an older Minions that counted config values in the id. To finish "
                "them, run that pairing again (Gru.start_orchestration with the same pipeline and "
                "config) until they are done; to discard them, delete their rows from the state "
                "store"
            ),
        )
    return total

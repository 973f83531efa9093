"""Stranded workflows: saved checkpoints of a workflow minion that its current orchestration
will never resume.

Under ``run(...)`` a workflow minion runs one orchestration, named by its own identity and its
pipeline's (``runner.orchestration_id``). Checkpoints of the same minion filed under another
orchestration id were saved with another pipeline, by Gru with a config, or by an older
Minions that counted config values in the id (the runner adopts those whose values are still
the same); nothing resumes them by itself. They are not touched — they may be someone's work in
progress — but they must not be forgotten in silence: the first start of the minion on a store
logs ``workflow.stranded`` with how many there are, under which orchestrations, and the
``minions workflows`` commands that finish or discard them.
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
    store: WorkflowStore, own: tuple[str, ...], minion_identity: str, minion: str
) -> int:
    """Log the checkpoints of ``minion_identity`` saved under other orchestrations than its
    ``own`` (the first is its current id), once per store; return how many there are (0 when
    already checked)."""
    orchestration_id = own[0]
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
        if row.orchestration_id in own:
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
                "and will not resume by themselves: they were saved with another pipeline, by "
                "Gru with a config, or by an older Minions with other config values. "
                f"'minions workflows {minion}' lists them (as stranded); 'minions workflows "
                f"retry ID' resumes one here, in {minion}, and 'minions workflows cancel ID' "
                "discards one. (Gru programs: Gru.start_orchestration with the same pipeline "
                "and config resumes them there.)"
            ),
        )
    return total

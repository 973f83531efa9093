"""Whether this platform can run isolated children.

Isolation is built on what Linux offers: ``prctl(PR_SET_PDEATHSIG)`` so that children die with
their parent (``_lifeline``), pidfds to learn of a child's death at once and to signal it without
a pid-reuse race (Linux 5.3), ``/proc/self/fd`` to release inherited descriptors. Elsewhere the
package still imports, and :func:`unsupported_reason` says what is missing; the zygote refuses
to start with that reason, and ``minions`` reports it when an isolated component is defined.
"""

from __future__ import annotations

import os
import signal
import sys

from . import _lifeline

__all__ = ["unsupported_reason"]


def unsupported_reason() -> str | None:
    """Why isolated children cannot run here, or ``None`` when they can."""
    missing = []
    if not _lifeline.available():
        missing.append("prctl(PR_SET_PDEATHSIG)")
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        missing.append("pidfds")
    if not hasattr(os, "pipe2"):
        missing.append("pipe2")
    if not os.path.isdir("/proc/self/fd"):
        missing.append("/proc/self/fd")
    if not missing:
        return None
    return (
        f"isolated components need Linux 5.3 or newer, and this platform ({sys.platform}) lacks "
        f"{', '.join(missing)}; run the component in-process (without isolated=...) here, or run "
        "the system on Linux"
    )

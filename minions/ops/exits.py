"""The exit statuses of a Minions program and of the ``minions`` command, defined once.

A service manager (systemd, supervisord, a container runtime) decides what to do from the exit
status alone, so each status means one thing a person or a restart policy can act on:

====== ==============================================================================
status meaning
====== ==============================================================================
0      a clean stop; for a command: it did what was asked
1      a component was given up, or crashed and was not restarted (``temporary``);
       for a command: the operation failed, or no system answered
2      a usage error on the command line
3      ``minions status``: the system runs, but a component has failed (given up, or
       crashed and not restarted) — the LSB status code "program is not running", as
       ``supervisorctl status`` uses it
75     another system already runs in the project folder (sysexits ``EX_TEMPFAIL``:
       retrying once it has stopped will work)
78     a definition or configuration error: nothing was started (sysexits
       ``EX_CONFIG``); fix the program or ``minions.toml`` — restarting cannot help
128+N  a second signal ``N`` forced the stop (the shell's convention for signals)
====== ==============================================================================

78 rather than 1 for a bad definition because the two call for opposite reactions: a component
given up at run time may succeed when the program is restarted, a definition error never will,
and a service manager can be told not to restart on it (systemd's
``RestartPreventExitStatus=78``).
"""

from __future__ import annotations

__all__ = [
    "EXIT_COMPONENT_FAILED",
    "EXIT_DEFINITION",
    "EXIT_ERROR",
    "EXIT_GIVEN_UP",
    "EXIT_OK",
    "EXIT_PROJECT_BUSY",
    "EXIT_USAGE",
    "exit_after_signal",
]

EXIT_OK = 0
EXIT_GIVEN_UP = 1
#: A command's operation failed or no system answered (same status as a given-up component:
#: "it did not work", with the reason on stderr).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_COMPONENT_FAILED = 3
EXIT_PROJECT_BUSY = 75
EXIT_DEFINITION = 78


def exit_after_signal(signum: int) -> int:
    """The status of a program whose stop signal ``signum`` forced the stop."""
    return 128 + signum

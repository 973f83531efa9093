"""``python -m minions``: the same as the ``minions`` command."""

import sys

from .ops.cli import main

sys.exit(main(prog="python -m minions"))

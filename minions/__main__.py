"""``python -m minions``: the same as the ``minions`` command."""

import sys

from ._cli import main

sys.exit(main())

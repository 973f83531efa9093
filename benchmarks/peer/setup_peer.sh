#!/usr/bin/env bash
# Create benchmarks/.peer-venv with the peer of the workflow benchmark: the `minions` 0.0.2 wheel
# from PyPI (an older API than the one Minions is compatible with). Idempotent: an existing venv
# is reused and the pinned version re-checked.
#   benchmarks/peer/setup_peer.sh            then: benchmarks/.peer-venv/bin/python benchmarks/peer/run_peer.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.peer-venv"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# The wheel declares only aiosqlite but imports psutil, prometheus_client and msgspec too.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "minions==0.0.2" psutil prometheus-client msgspec
"$venv/bin/python" -I -c "import importlib.metadata as m; print('peer ready: minions', m.version('minions'), 'in', '$venv')"

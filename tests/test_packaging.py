"""What the installed distribution says about itself: its licence and its classifiers."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_is_shipped_and_declared() -> None:
    """The MIT licence text is in the repository and in the distribution's metadata."""
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 The Minions authors\n")
    metadata = importlib.metadata.metadata("minions")
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (metadata.get_all("License-File") or [])


def test_the_classifiers_say_what_the_package_is() -> None:
    classifiers = set(importlib.metadata.metadata("minions").get_all("Classifier") or [])
    assert {
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3.11",
        "Framework :: AsyncIO",
        "Typing :: Typed",
    } <= classifiers

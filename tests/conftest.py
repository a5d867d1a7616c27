"""Shared fixtures: where the reference data lives (../shared beside the repo; never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO, shared_dir


@pytest.fixture(scope="session")
def reference() -> Path:
    """The real MISP fixtures in shared/reference/misp (read from there, never copied into the repo)."""
    path = shared_dir() / "reference" / "misp"
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path}: set FALCO_MISP_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO

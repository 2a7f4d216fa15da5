"""Shared test fixtures: paths to the project and to the read-only reference data beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The CoOp split files, CoPrompt descriptions and paper tables (tests only, never at run time)."""
    path = SHARED / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"reference data expected at {path}")
    return path

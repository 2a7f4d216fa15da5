"""Shared test fixtures: paths to the project and to the read-only reference data beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tiny models: one intra-op thread is as fast alone and far faster when the 2 CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Shared test fixtures: paths to the project and to the reference data it carries (tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def split_files() -> Path:
    """Real CoOp split files the project carries for its tests (provenance in tests/data/splits/SOURCES.md)."""
    return REFERENCE_DATA / "splits"


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tiny models: one intra-op thread is as fast alone and far faster when the 2 CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

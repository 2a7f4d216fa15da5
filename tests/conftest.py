"""Shared test fixtures: the project root and the real CoOp split files it ships (datasets/splits)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def split_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding CoOp's published split files as the project ships them (datasets/splits, gzipped;
    provenance in its SOURCES.md), decompressed and checked against SHA256SUMS, as tools.prepare_data does."""
    from tools import data_sources

    folder = tmp_path_factory.mktemp("splits")
    for filename in sorted(data_sources.shipped_split_checksums()):
        if not data_sources.shipped_split(filename, str(folder / filename)):
            raise FileNotFoundError(f"SHA256SUMS lists {filename} but {data_sources.SPLITS_DIR} lacks its .gz")
    return folder


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tiny models: one intra-op thread is as fast alone and far faster when the 2 CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The evaluator prints ``* total: N`` right before ``* correct`` and ``* accuracy``.
_ZERO_IMAGE_ACCURACY = re.compile(r"^\* total: 0\n(?:.*\n){0,2}?\* accuracy:", re.M)


def logs_with_accuracy_over_zero_images(root: Path) -> list[Path]:
    """Every ``log.txt*`` under ``root`` that prints an accuracy measured on zero images."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.startswith("log.txt"):
                path = Path(folder) / name
                if _ZERO_IMAGE_ACCURACY.search(path.read_text(errors="replace")):
                    found.append(path)
    return found


@pytest.fixture(autouse=True, scope="session")
def _no_accuracy_over_zero_images(tmp_path_factory):
    """After the session, every log the suite wrote is scanned: an accuracy over zero images is an error."""
    yield
    found = logs_with_accuracy_over_zero_images(tmp_path_factory.getbasetemp())
    assert not found, f"accuracy printed over zero evaluated images in {found}"

"""The split files shipped in datasets/splits are CoOp's published ones, and the readers parse them.

The published bytes are known by the sha256 recorded when the files were taken (datasets/splits/SOURCES.md,
``tools/data_sources.py``); every shipped file must decompress to exactly those bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
from test_datasets import make_cfg

import datasets  # noqa: F401  (registers the readers)
from engine.data.datasets import DATASET_REGISTRY, base_dataset
from tools import data_sources
from tools.archives import checksum_of
from tools.data_sources import SOURCES

SHIPPED = sorted(data_sources.shipped_split_checksums())


def test_every_shipped_split_decompresses_to_the_published_bytes():
    assert len(SHIPPED) == 7, SHIPPED
    by_split = {ds.split.filename: ds.split for ds in SOURCES.values() if ds.split}
    for filename in SHIPPED:
        data = gzip.decompress((Path(data_sources.SPLITS_DIR) / (filename + ".gz")).read_bytes())
        digest = hashlib.sha256(data).hexdigest()
        assert digest == data_sources.shipped_split_checksums()[filename]
        assert by_split[filename].checksum == f"sha256:{digest}"  # the registry agrees with SHA256SUMS


def test_a_damaged_shipped_split_is_refused(tmp_path, monkeypatch):
    filename = SHIPPED[0]
    (tmp_path / (filename + ".gz")).write_bytes(gzip.compress(b'{"train": [], "val": [], "test": []}'))
    shutil.copy(Path(data_sources.SPLITS_DIR) / "SHA256SUMS", tmp_path / "SHA256SUMS")
    monkeypatch.setattr(data_sources, "SPLITS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="the package is damaged"):
        data_sources.shipped_split(filename, str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("filename", SHIPPED)
def test_readers_parse_every_shipped_split_to_its_published_sizes(filename, tmp_path, monkeypatch):
    name = next(n for n, ds in SOURCES.items() if ds.split and ds.split.filename == filename)
    cls = DATASET_REGISTRY.get(name)
    folder = tmp_path / cls.dataset_dir
    (folder / cls.image_subdir).mkdir(parents=True)
    assert data_sources.shipped_split(filename, str(folder / filename))
    # the images are not here: Datum's existence check is lifted, the readers' items are read as data
    monkeypatch.setattr(base_dataset.os.path, "isfile", lambda path: True)
    ds = cls(make_cfg(name, tmp_path))
    assert [len(part) for part in (ds.train_x, ds.val, ds.test)] == [cls.expected.train, cls.expected.val, cls.expected.test]
    assert all(isinstance(d.label, int) and d.classname for d in ds.train_x)


def test_git_blob_ids_are_computed_as_git_does(split_files):
    """Food101's and SUN397's split files are checked by the blob id git records; EuroSAT's known id checks the
    computation (its blob in cross_modal_adaptation's tree, commit c7e7e68)."""
    path = str(split_files / "split_zhou_EuroSAT.json")
    assert checksum_of(path, "gitblob") == "6bdc847a5d5c49dcc78e8cb8707b87198cbfa5a4"

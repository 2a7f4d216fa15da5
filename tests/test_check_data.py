"""``tools/check_data.py``: ready / missing / incomplete / mismatch reports that name the exact paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datasets.dtd import DescribableTextures
from engine.data.datasets import DATASET_REGISTRY
from tools import check_data


@pytest.fixture(scope="module")
def dtd_root(tmp_path_factory: pytest.TempPathFactory, split_files: Path) -> Path:
    """A root holding CoOp's real DTD split file and an (empty) file for each of its 5,640 images.

    Built once for the module (thousands of files); tests that damage it repair it before returning.
    """
    root = tmp_path_factory.mktemp("data")
    dtd = root / "dtd"
    (dtd / "images").mkdir(parents=True)
    split_file = split_files / "split_zhou_DescribableTextures.json"
    shutil.copy(split_file, dtd / DescribableTextures.split_filename)
    split = json.loads(split_file.read_text())
    for part in ("train", "val", "test"):
        for rel, _, _ in split[part]:
            image = dtd / "images" / rel
            image.parent.mkdir(exist_ok=True)
            image.touch()
    return root


def test_complete_published_split_is_ready(dtd_root: Path) -> None:
    report = check_data.check_dataset("DescribableTextures", str(dtd_root))
    assert report.status == "ready" and report.missing == [] and report.problems == []
    assert report.counts == {"train": 2820, "val": 1128, "test": 1692, "classes": 47}


def test_one_removed_image_is_named(dtd_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    removed = dtd_root / "dtd" / "images" / "banded" / "banded_0002.jpg"
    assert removed.is_file()
    removed.unlink()
    try:
        status = check_data.main(["--root", str(dtd_root), "--datasets", "DescribableTextures", "EuroSAT", "Digits"])
    finally:
        removed.touch()
    out = capsys.readouterr().out
    assert status == 1
    lines = out.splitlines()
    dtd_line = next(i for i, line in enumerate(lines) if "DescribableTextures" in line)
    assert lines[dtd_line].startswith("incomplete")
    assert lines[dtd_line + 1].strip() == "1 missing path(s):"
    assert lines[dtd_line + 2].strip() == str(removed)
    # A dataset that is not there at all names its folder; Digits is written on first use.
    assert any(line.startswith("missing") and "EuroSAT" in line for line in lines)
    assert f"    {dtd_root / 'eurosat'}" in lines
    assert any(line.startswith("first use") and "Digits" in line for line in lines)
    assert lines[-2] == "1 of 3 dataset(s) ready" and lines[-1].startswith("missing: the dataset's folder")


def test_counts_that_differ_from_the_docs_are_a_mismatch(dtd_root: Path) -> None:
    split_path = dtd_root / "dtd" / DescribableTextures.split_filename
    original = split_path.read_text()
    split = json.loads(original)
    split["val"] = split["val"][:-3]
    split_path.write_text(json.dumps(split))
    try:
        report = check_data.check_dataset("DescribableTextures", str(dtd_root))
    finally:
        split_path.write_text(original)
    assert report.status == "mismatch"
    assert report.problems == ["val: found 1125, expected 1128"]


def test_absent_split_file_and_image_folder_are_named(tmp_path: Path) -> None:
    (tmp_path / "eurosat").mkdir()
    report = check_data.check_dataset("EuroSAT", str(tmp_path))
    assert report.status == "incomplete"
    assert report.missing == [str(tmp_path / "eurosat" / "split_zhou_EuroSAT.json")]
    assert "generate a new random split" in report.problems[0]
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text('{"train": [], "val": [], "test": []}')
    report = check_data.check_dataset("EuroSAT", str(tmp_path))
    assert report.missing == [str(tmp_path / "eurosat" / "2750")]


def test_readers_without_split_file_report_their_first_missing_file(tmp_path: Path) -> None:
    (tmp_path / "fgvc_aircraft" / "images").mkdir(parents=True)
    report = check_data.check_dataset("FGVCAircraft", str(tmp_path))
    assert report.status == "incomplete"
    assert str(tmp_path / "fgvc_aircraft" / "variants.txt") in report.problems[0]


def test_every_registered_dataset_declares_its_expected_sizes() -> None:
    for name in set(DATASET_REGISTRY.registered_names()) - {"ImageFolder"}:  # a user's data: no sizes
        expected = DATASET_REGISTRY.get(name).expected
        assert expected is not None and expected.test > 0 and expected.classes > 1, name


def test_unknown_names_and_roots_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown dataset name\(s\) \['Nope'\].*EuroSAT"):
        check_data.check_root(str(tmp_path), ["Nope"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        check_data.check_root(str(tmp_path / "nowhere"))


def test_cli_checks_only_the_named_datasets_and_explains_missing(tmp_path: Path, project_root: Path) -> None:
    """The quick start's check: named datasets only (any case), exit 0 when they are ready."""
    import subprocess
    import sys

    def check(*names: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tools.check_data", "--root", str(tmp_path), *names],
            cwd=project_root, capture_output=True, text=True,
        )  # fmt: skip

    ok = check("digits")  # Digits writes itself on first use: fine before it exists
    assert ok.returncode == 0, ok.stderr
    assert "first use   Digits" in ok.stdout and "EuroSAT" not in ok.stdout
    assert "1 of 1 dataset(s) ready" in ok.stdout
    missing = check("Digits", "eurosat")
    assert missing.returncode == 1
    assert "missing     EuroSAT" in missing.stdout
    assert "missing: the dataset's folder is not under the root (not downloaded)" in missing.stdout

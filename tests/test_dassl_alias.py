"""The opt-in ``dassl.*`` alias: an unmodified Dassl-style trainer file runs through train.py."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clip
import train
from engine import dassl_alias
from engine.engine import TRAINER_REGISTRY
from tests.dassl_compat import compat_row

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dassl_clip_adapter.py"
TINY = "tiny-test-checkpoint"


@pytest.fixture()
def alias():
    """The alias on for one test, then off again with every ``dassl`` module forgotten."""
    assert dassl_alias.install()
    yield
    dassl_alias.uninstall()


@compat_row('a Dassl module this engine does not provide (e.g. `dassl.engine.da`)',
            'no',
            'refused at import with one line naming the Dassl module and the engine module it maps to')
def test_dassl_names_are_the_engine_modules(alias) -> None:
    import dassl.data.datasets.base_dataset as base_dataset
    from dassl.data.transforms import build_transform
    from dassl.engine import TRAINER_REGISTRY as registry

    assert base_dataset is importlib.import_module("engine.data.datasets.base_dataset")
    assert registry is TRAINER_REGISTRY
    assert build_transform is importlib.import_module("engine.data.transforms").build_transform
    names = ("config", "data", "data.datasets", "engine", "engine.dg", "evaluation", "metrics", "modeling", "optim",
             "utils")
    for name in names:
        assert importlib.import_module(f"dassl.{name}") is importlib.import_module(f"engine.{name}")
    assert "Vanilla" in TRAINER_REGISTRY  # dassl.engine registers Dassl's generic trainer, as Dassl does
    with pytest.raises(ModuleNotFoundError, match=r"'dassl\.engine\.da'.*'engine\.engine\.da'.*does not provide"):
        importlib.import_module("dassl.engine.da")


def test_alias_is_off_until_asked_for_and_gives_way_to_a_real_dassl(tmp_path, monkeypatch) -> None:
    dassl_alias.uninstall()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("dassl")
    fake = tmp_path / "dassl"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert dassl_alias.install() is False
        assert importlib.import_module("dassl").REAL is True
    finally:
        dassl_alias.uninstall()


def test_environment_variable_turns_the_alias_on_for_train_py() -> None:
    code = "import engine, sys, dassl.engine; assert dassl.engine is sys.modules['engine.engine']; print('ok')"
    env = {**os.environ, "ENGINE_DASSL_ALIAS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.fixture()
def tiny_checkpoint(tmp_path, monkeypatch) -> str:
    """A tiny random CLIP published the way OpenAI's are: a ``_MODELS`` URL carrying its sha256, in the cache."""
    cache = tmp_path / "clip_cache"
    cache.mkdir()
    path = cache / "tiny.pt"
    torch.save(clip.build_clip("random:tiny", seed=0).state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(clip._MODELS, TINY, f"https://example.invalid/clip/{sha}/tiny.pt")
    monkeypatch.setenv(clip.CACHE_ENV_VAR, str(cache))
    return TINY


def test_unmodified_dassl_trainer_file_trains_and_evaluates(alias, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    source = EXAMPLE.read_text()
    assert "from engine" not in source and "import engine" not in source
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    runner = importlib.import_module("run_dassl_trainer")
    monkeypatch.setattr(train, "collect_env_info", lambda: "env info")
    out = tmp_path / "out"
    common = [
        "--root", str(tmp_path / "data"), "--trainer", "DasslClipAdapter", "--backbone", tiny_checkpoint,
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "examples/dassl_clip_adapter.yaml"), "--seed", "1",
    ]
    try:
        # Training alone (no final test), then --eval-only loads the checkpoint through the file's load_model.
        runner.main([str(EXAMPLE), "--", *common, "--output-dir", str(out), "DATASET.NUM_SHOTS", "1",
                     "OPTIM.MAX_EPOCH", "1", "TEST.NO_TEST", "True"])
        trained = capsys.readouterr().out
        assert "epoch [1/1]" in trained and "Finish training" in trained
        checkpoint = out / "adapter" / "model.pth.tar-1"
        saved = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert set(saved) == {"fc.0.weight", "fc.2.weight"}

        runner.main([str(EXAMPLE), "--", *common, "--output-dir", str(tmp_path / "eval"), "--eval-only",
                     "--model-dir", str(out), "--load-epoch", "1", "DATASET.SUBSAMPLE_CLASSES", "new"])
        evaluated = capsys.readouterr().out
        assert f'Loading weights to adapter from "{checkpoint}" (epoch = 1)' in evaluated
        split = json.loads((tmp_path / "data" / "digits" / "split_Digits.json").read_text())
        n_new = sum(label >= 5 for _, label, _ in split["test"])
        assert f"=> result\n* total: {n_new}\n" in evaluated
    finally:
        if "DasslClipAdapter" in TRAINER_REGISTRY.registered_names():
            TRAINER_REGISTRY.unregister("DasslClipAdapter")
        sys.modules.pop("dassl_client_dassl_clip_adapter", None)

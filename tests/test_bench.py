"""bench/ runs end to end on a tiny model and reports every section and ratio (smoke test, no timing bars)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.models import bench_cfg, build_backbone, build_prompted, class_names
from bench.run import main


def test_bench_writes_every_section_and_the_same_run_ratios(tmp_path):
    out = tmp_path / "bench"
    main(["--backbone", "random:tiny", "--trainers", "MaPLe", "BMIP", "--classes", "2", "--eval-classes", "3",
          "--eval-batch", "2", "--repeats", "1", "--warmup", "0", "--sections", "train", "eval", "text",
          "--threads", "1", "--out", str(out), "--opts", "TRAINER.BMIP.PROMPT_DEPTH", "3",
          "TRAINER.MAPLE.PROMPT_DEPTH", "3"])
    summary = json.loads(out.with_suffix(".json").read_text())
    # per trainer: train trim on/off, eval cached/recompute, text fwd & fwd+bwd x trim on/off
    assert len(summary["cases"]) == 2 * (2 + 2 + 4)
    for row in summary["cases"]:
        assert all(v > 0 for v in row["median_s"].values())
    assert set(summary["cases"][0]["median_s"]) == {"forward", "backward", "optimizer", "step"}
    ratios = summary["ratios"]
    for key in ("train 2 cls: BMIP / MaPLe", "eval 3 cls: BMIP / MaPLe per batch",
                "eval BMIP 3 cls: cached / recompute images/s", "text MaPLe 2 cls fwd: 77 tokens / trimmed",
                "train MaPLe 2 cls: untrimmed / trimmed"):
        assert ratios[key] > 0
    table = out.with_suffix(".txt").read_text()
    assert "images/s" in table and "ms/class" in table and "ratios (same run)" in table


def test_bench_models_are_the_trainers_models():
    cfg = bench_cfg("random:tiny", ["TRAINER.BMIP.PRESET", "paper"])
    backbone = build_backbone("random:tiny", torch.device("cpu"))
    model = build_prompted("BMIP", cfg, backbone, class_names(12))
    assert model.prompt_learner.options.attn_reduce == "per_sample"  # the config reached the learner
    assert model.classnames[10] == model.classnames[0] == "Annual Crop Land"
    # a trainer without a separate prompt learner builds its whole model (MMRL's two heads)
    mmrl_cfg = bench_cfg("random:tiny", ["DATASET.NAME", "EuroSAT"])  # MMRL's prompts use the dataset's template
    assert type(build_prompted("MMRL", mmrl_cfg, backbone, class_names(3))).__name__ == "MMRLCLIP"
    assert type(build_prompted("HiCroPL", cfg, backbone, class_names(3)).prompt_learner).__name__ == "HiCroPLPrompts"
    with pytest.raises(ValueError, match="unknown trainer 'Nope'; registered"):
        build_prompted("Nope", cfg, backbone, class_names(2))
    with pytest.raises(ValueError, match="KEY VALUE"):
        bench_cfg("random:tiny", ["TRAINER.BMIP.PRESET"])

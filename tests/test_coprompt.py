"""CoPrompt: description files (format, errors, the project's Digits file), the per-dataset table, the
adapters, and a consistency loss built from the descriptions of exactly the current label space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_promptsrc import ROOT, build, digits_root  # noqa: F401  (digits_root is a fixture)

import train
from prompting.adapters import AdaptedPrompts
from prompting.deep import PromptPlan
from prompting.teachers import description_features, load_descriptions
from trainers import coprompt as coprompt_module
from trainers.coprompt import apply_dataset_table

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CONFIG = "CoPrompt/coprompt.yaml"


def write_descriptions(path: Path, table: dict) -> str:
    path.write_text(json.dumps(table))
    return str(path)


def test_description_errors_name_the_file_and_class(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere_prompt\.json.*DESCRIPTIONS_DIR"):
        load_descriptions(str(tmp_path / "nowhere_prompt.json"), ["a"])
    path = write_descriptions(tmp_path / "d.json", {"sea lion": ["x", "y"], "cat": ["z"]})
    with pytest.raises(KeyError, match=r"'dog' has no descriptions in .*d\.json"):
        load_descriptions(path, ["sea_lion", "dog"])
    with pytest.raises(ValueError, match=r"'cat' in .*d\.json has 1 descriptions but 'sea lion' has 2"):
        load_descriptions(path, ["sea_lion", "cat"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        load_descriptions(str(bad), ["a"])
    # Underscores in class names are spaces in the file (as released); order follows the label space.
    assert load_descriptions(path, ["sea_lion"]) == [["x", "y"]]


def test_shipped_digits_and_reference_files_have_uniform_counts():
    digits = load_descriptions(str(ROOT / "datasets/descriptions/digits_prompt.json"), DIGITS)
    assert len({len(d) for d in digits}) == 1 and len(digits[0]) >= 3
    eurosat_path = ROOT / "datasets/descriptions/eurosat_prompt.json"
    classes = sorted(json.loads(eurosat_path.read_text()))
    assert {len(d) for d in load_descriptions(str(eurosat_path), classes)} == {10}


# git blob ids of the release's gpt_file/<stem>_prompt.json (ShuvenduRoy/CoPrompt a2a6c12): the copies are byte-equal.
RELEASE_BLOBS = {
    "caltech": "1990ab4ab8bd416d4e54a5bd53b11bf7bba92f99",
    "dtd": "8d66432094ad7a2ed104d0e722a99708cd8bc29d",
    "eurosat": "2689ca7893edaacc0ed863561213a4d3722a0481",
    "fgvc": "a33598845341654c41c585ba6fe17a3ac74791b6",
    "food101": "cbb438d59371af676a6d4342ef76d5f110e53b6d",
    "oxford_flowers": "9a5e5670d2f507f9ec513b0d73777a448bb8d334",
    "oxford_pets": "725ce24eebc21a26e646417150c4ca8d81029ac1",
    "stanford_cars": "eddd019a944c0592f88eade8aecd20b179a107e8",
    "sun397": "f314ba3d293e6ebddb1ee910443a9b315eddcd91",
    "ucf101": "58f1bd7e61d27fb216036a92154768b8c940460d",
}
# Not in the snapshot of the release this project could read (datasets/descriptions/README.md says so).
NOT_SHIPPED = {"ImageNet"}


def test_every_base_to_new_dataset_has_the_release_description_file(split_files):
    import hashlib

    from prompting.teachers import DESCRIPTION_KEYS
    from tools.plan import OPEN_WORLD_DATASETS, config_name

    names = {}
    for paper in OPEN_WORLD_DATASETS:  # DATASET.NAME of each from its dataset config
        text = (ROOT / "configs/datasets" / f"{config_name(paper)}.yaml").read_text()
        names[paper] = next(line.split('"')[1] for line in text.splitlines() if line.strip().startswith("NAME:"))
    for paper in sorted(set(OPEN_WORLD_DATASETS) - NOT_SHIPPED):
        stem = DESCRIPTION_KEYS[names[paper]]
        data = (ROOT / "datasets/descriptions" / f"{stem}_prompt.json").read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert blob == RELEASE_BLOBS[stem], paper
        table = json.loads(data)
        assert len({len(v) for v in table.values()}) == 1, paper  # the same count per class
    assert len(RELEASE_BLOBS) == len(OPEN_WORLD_DATASETS) - len(NOT_SHIPPED)
    assert not (ROOT / "datasets/descriptions/imagenet_prompt.json").exists()  # once copied: add its blob id
    # The real Caltech101 split's class names all have descriptions.
    split = json.loads((split_files / "split_zhou_Caltech101.json").read_text())
    classes = sorted({c for _, _, c in split["train"]})
    assert len(load_descriptions(str(ROOT / "datasets/descriptions/caltech_prompt.json"), classes)) == 100


def test_dataset_table_replaces_settings_after_the_command_line():
    argv = ["--dataset-config-file", str(ROOT / "configs/datasets/eurosat.yaml"),
            "--config-file", str(ROOT / "configs/trainers" / CONFIG), "TRAINER.W", "3.0"]
    cfg = apply_dataset_table(train.setup_cfg(train.build_parser().parse_args(argv)))
    assert (cfg.TRAINER.CoPrompt.N_CTX, cfg.TRAINER.CoPrompt.PROMPT_DEPTH, cfg.TRAINER.W) == (2, 12, 0.1)
    food = apply_dataset_table(train.setup_cfg(train.build_parser().parse_args(
        ["--dataset-config-file", str(ROOT / "configs/datasets/food101.yaml"), "--config-file",
         str(ROOT / "configs/trainers" / CONFIG)])))
    assert (food.OPTIM.MAX_EPOCH, food.TRAINER.W, food.TRAINER.CoPrompt.PROMPT_DEPTH) == (5, 0.5, 9)
    kept = apply_dataset_table(train.setup_cfg(train.build_parser().parse_args(
        [*argv, "TRAINER.CoPrompt.DATASET_TABLE", "False"])))
    assert (kept.TRAINER.CoPrompt.N_CTX, kept.TRAINER.CoPrompt.PROMPT_DEPTH, kept.TRAINER.W) == (2, 9, 3.0)


def test_adapters_mix_residually_and_reach_the_plan():
    inner = torch.nn.Module()
    inner.prompt_prefix, inner.n_ctx, inner.learns_text = "a photo of a", 2, True
    inner.forward = lambda: PromptPlan()
    adapted = AdaptedPrompts(inner, embed_dim=16)
    f = torch.randn(3, 16)
    torch.testing.assert_close(adapted.adapt_image(f), 0.9 * f + 0.1 * adapted.adapter_image(f))
    torch.testing.assert_close(adapted.adapt_text(f), 0.8 * f + 0.2 * adapted.adapter_text(f))
    plan = adapted()
    assert plan.image_head == adapted.adapt_image and plan.text_head == adapted.adapt_text
    assert sum(p.numel() for p in adapted.parameters()) == 4 * 16 * 4  # two 16->4->16 bottlenecks, no bias


def test_consistency_uses_descriptions_of_exactly_the_current_classes(digits_root, tmp_path, monkeypatch):  # noqa: F811
    # Descriptions for the base classes only (zero..four) plus one unrelated class: enough for base training.
    table = {name: [f"a sketch of {name}", f"the number {name} drawn badly"] for name in DIGITS[:5]}
    table["eleven"] = ["not a digit", "still not a digit"]
    path = write_descriptions(tmp_path / "desc.json", table)
    trainer = build("CoPrompt", CONFIG, digits_root, tmp_path / "out",
                    "TRAINER.CoPrompt.DESCRIPTION_FILE", path, "OPTIM.MAX_EPOCH", "1")
    assert trainer.model.classnames == DIGITS[:5]
    bank = trainer.description_bank()
    expected = description_features(trainer.model.clip, [table[n] for n in DIGITS[:5]])
    torch.testing.assert_close(bank, expected)
    assert bank.shape[:2] == (2, 5)

    monkeypatch.setattr(coprompt_module.random, "randint", lambda a, b: 1)
    trainer.set_model_mode("train")
    (x1, x2), labels = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    loss = trainer.compute_loss((x1, x2), labels)
    with torch.no_grad():
        image, text = trainer.model.features(x1)
        teacher_image = F.normalize(trainer.model.clip.encode_image(x2).float(), dim=-1)
    want_text = 1 - F.cosine_similarity(text, expected[1], dim=1).mean()
    want_image = 1 - F.cosine_similarity(image, teacher_image, dim=1).mean()
    assert trainer.loss_terms["loss_text"] == pytest.approx(want_text.item(), rel=1e-5)
    assert trainer.loss_terms["loss_image"] == pytest.approx(want_image.item(), rel=1e-5)
    w = trainer.cfg.TRAINER.W
    assert loss.item() == pytest.approx(trainer.loss_terms["loss_ce"] + w * (want_text + want_image).item(), rel=1e-5)

    # The new classes (five..nine) are missing from the file: that label space is a clear error.
    trainer.model.set_classnames(DIGITS[5:])
    with pytest.raises(KeyError, match=r"'five' has no descriptions in .*desc\.json"):
        trainer.description_bank()

"""``open_clip:<model>/<pretrained>`` backbones equal open_clip's own models (clip/open_clip_backbone.py).

Small random open_clip models of each family (tests/open_clip_shapes.py), built by open_clip with
``pretrained=None`` and saved: our CLIP loaded from the file gives open_clip's ``encode_image``,
``encode_text`` and zero-shot logits in float64 to 1e-12; tokenisation and preprocessing (on real images)
are open_clip's; unsupported architectures and wrong checkpoints are refused in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip_shapes import SHAPES, register, save_random
from PIL import Image
from sklearn.datasets import load_digits

import clip
import train
from clip import open_clip_backbone
from clip.pretrained import WeightsUnavailableError
from engine.data.transforms import build_transform
from tools import open_clip_table

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12
TEXTS = ["a photo of a cat.", "a photo of the number 7, a digit.", "X", "an ünicode café & co!!"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    folder = tmp_path_factory.mktemp("open_clip")
    register(folder / "configs", SHAPES)
    return {name: (folder / f"{name}.pt", save_random(name, folder / f"{name}.pt")) for name in SHAPES}


def real_images() -> list[Image.Image]:
    """Digits (8x8 grey, upscaled to a non-square size) and a generated non-square RGB picture."""
    digits = load_digits()
    images = [
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize(
            (37 + 5 * i, 29), Image.NEAREST
        )
        for i in range(3)
    ]
    y, x = np.mgrid[0:41, 0:67]
    rgb = np.stack([x * 3 % 256, y * 6 % 256, (x * y) % 256], axis=-1).astype(np.uint8)
    return [*images, Image.fromarray(rgb)]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_our_model_equals_open_clip_in_float64(name, saved):
    path, reference = saved[name]
    ours = clip.build_clip(f"open_clip:{name}/{path}").double()
    reference = reference.double()
    family = SHAPES[name][0]
    assert ours.activation == ("quick_gelu" if "quickgelu" in family else "gelu")
    size = ours.image_resolution
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        image_diff = (ours.encode_image(images) - reference.encode_image(images)).abs().max()
        text_diff = (ours.encode_text(tokens) - reference.encode_text(tokens)).abs().max()
        logits, logits_t = ours(images, tokens)
        ref_logits, ref_logits_t = reference.get_logits(images, tokens)
    assert image_diff < TOL and text_diff < TOL
    assert (logits - ref_logits).abs().max() < TOL and torch.equal(logits_t, logits.t())
    assert ref_logits.abs().max() > 0.1  # not a degenerate comparison


def test_logit_bias_of_the_config_is_carried(tmp_path, saved):
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32-test", pretrained=None, init_logit_bias=-3.5).double().eval()
    torch.save(reference.state_dict(), tmp_path / "bias.pt")
    # The bias comes from the file, not from the config (which has none): a mismatched key is named.
    with pytest.raises(ValueError, match="unexpected keys logit_bias"):
        clip.build_clip(f"open_clip:ViT-B-32-test/{tmp_path / 'bias.pt'}")
    ours = clip.CLIP(
        **open_clip_backbone.clip_arguments(
            {**open_clip.get_model_config("ViT-B-32-test"), "init_logit_bias": -3.5}, False
        )
    )
    ours.load_state_dict(reference.state_dict())
    ours = ours.double().eval()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    tokens = clip.tokenize(TEXTS[:2])
    with torch.no_grad():
        assert (ours(images, tokens)[0] - reference.get_logits(images, tokens)[0]).abs().max() < TOL


@pytest.mark.parametrize("family", ["ViT-B-32", "ViT-B-16-quickgelu", "ViT-L-14"])
def test_tokenisation_is_open_clips(family):
    expected = open_clip.get_tokenizer(family)(TEXTS)
    assert torch.equal(clip.tokenize(TEXTS), expected)


def test_clip_load_preprocess_and_training_pipeline_equal_open_clips_on_real_images(saved):
    name = "ViT-L-14-test"
    path = saved[name][0]
    backbone = f"open_clip:{name}/{path}"
    _, _, reference = open_clip.create_model_and_transforms(name, pretrained=str(path))
    model, preprocess = clip.load(backbone)
    assert model.image_resolution == 56
    # The training pipeline's test transform, configured by train.py from the backbone's preprocessing.
    cfg = train.setup_cfg(train.build_parser().parse_args([
        "--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"), "MODEL.BACKBONE.NAME", backbone,
    ]))  # fmt: skip
    assert tuple(cfg.INPUT.SIZE) == (56, 56)
    engine_test = build_transform(cfg, is_train=False)
    for image in real_images():
        expected = reference(image)
        assert torch.equal(preprocess(image), expected)
        assert torch.allclose(engine_test(image.convert("RGB")), expected, atol=1e-6)


def test_pretrained_tag_decides_preprocessing_and_activation(saved, monkeypatch):
    laion = open_clip_backbone.preprocess_config("open_clip:ViT-L-14/laion2b_s32b_b82k")
    assert laion["mean"] == (0.5, 0.5, 0.5) and laion["std"] == (0.5, 0.5, 0.5) and laion["size"] == 224
    cfg = train.setup_cfg(train.build_parser().parse_args(
        ["--config-file", str(ROOT / "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml"),
         "MODEL.BACKBONE.NAME", "open_clip:ViT-L-14/laion2b_s32b_b82k"]
    ))  # fmt: skip
    assert list(cfg.INPUT.PIXEL_MEAN) == [0.5, 0.5, 0.5] and cfg.INPUT.INTERPOLATION == "bicubic"
    # A tag trained with QuickGELU gets it even under a GELU config name (open_clip only warns); the
    # weights come through open_clip's downloader, here handed the saved file.
    path = saved["ViT-B-16-test"][0]
    fetched = []
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: {"quick_gelu": True, "url": "x"})
    monkeypatch.setattr(
        open_clip, "download_pretrained", lambda cfg, cache_dir=None: fetched.append(cfg) or str(path)
    )
    model = clip.build_clip("open_clip:ViT-B-16-test/metaclip_fullcc")
    assert fetched and model.activation == "quick_gelu"


def test_offline_download_is_one_line(monkeypatch):
    def offline(cfg, cache_dir=None):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        clip.build_clip("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert "\n" not in str(error.value) and "open_clip:ViT-B-32/<path>" in str(error.value)


@pytest.mark.parametrize(
    ("backbone", "lacks"),
    [
        ("open_clip:ViT-B-16-SigLIP/webli", "timm image tower"),
        ("open_clip:coca_ViT-B-32/laion2b_s13b_b90k", "captioning text decoder"),
        ("open_clip:EVA02-B-16/merged2b_s8b_b131k", "timm image tower (eva02"),
        ("open_clip:ViT-L-14-CLIPA/datacomp1b", "image pooling 'avg'"),
        ("open_clip:ViT-M-16-alt/x", "layer scale"),
    ],
)
def test_unsupported_architecture_is_refused_in_one_line(backbone, lacks):
    with pytest.raises(ValueError) as error:
        clip.build_clip(backbone)
    assert lacks in str(error.value) and "not supported" in str(error.value) and "\n" not in str(error.value)


def test_bad_names_and_wrong_checkpoints_are_named(saved, tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        clip.build_clip("open_clip:ViT-Q-99/x")
    with pytest.raises(ValueError, match=r"expected open_clip:<model>/<pretrained"):
        clip.build_clip("open_clip:ViT-B-32")
    with pytest.raises(ValueError, match="neither one of its pretrained tags"):
        clip.build_clip(f"open_clip:ViT-B-32/{tmp_path / 'missing.pt'}")
    # A ViT-B/32 file read as ViT-B/16: the patch embedding and position table are named.
    b32 = saved["ViT-B-32-test"][0]
    with pytest.raises(ValueError) as error:
        clip.build_clip(f"open_clip:ViT-B-16-test/{b32}")
    message = str(error.value)
    assert "\n" not in message and str(b32) in message
    assert "visual.conv1.weight (128, 3, 32, 32) vs (128, 3, 16, 16)" in message
    assert "visual.positional_embedding" in message
    # A ResNet file read as a ViT: missing and unexpected keys are named.
    with pytest.raises(
        ValueError, match=r"missing keys visual\.class_embedding.*unexpected keys visual\.attnpool"
    ):
        clip.build_clip(f"open_clip:ViT-B-16-test/{saved['RN50-test'][0]}")


def test_supported_list_is_computed_from_open_clips_configs():
    supported = open_clip_backbone.supported_models()
    for name in (
        "ViT-B-32",
        "ViT-B-16",
        "ViT-B-16-quickgelu",
        "ViT-L-14",
        "ViT-L-14-336",
        "ViT-H-14",
        "RN50",
    ):
        assert name in supported
    for name in ("ViT-B-16-SigLIP", "coca_ViT-B-32", "EVA02-B-16", "convnext_base", "ViT-M-16-alt"):
        assert name in open_clip.list_models() and name not in supported
    documented = (ROOT / "docs/CLIP.md").read_text()
    assert all(f"`{name}`" in documented for name in supported if not name.endswith("-test"))
    # The table is the current one (tools/open_clip_table.py); rows of this module's test shapes aside.
    rows = [line for line in open_clip_table.render().splitlines() if "-test`" not in line]
    assert all(row in documented for row in rows)


def test_custom_text_checkpoint_keys_load(saved, tmp_path):
    """open_clip's CustomTextCLIP keeps the text tower under ``text.``; its checkpoint loads all the same."""
    torch.manual_seed(0)
    reference = (
        open_clip.create_model("ViT-B-32-test", pretrained=None, force_custom_text=True).double().eval()
    )
    assert any(k.startswith("text.") for k in reference.state_dict())
    torch.save(reference.state_dict(), tmp_path / "custom_text.pt")
    ours = clip.build_clip(f"open_clip:ViT-B-32-test/{tmp_path / 'custom_text.pt'}").double()
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        assert (ours.encode_text(tokens) - reference.encode_text(tokens)).abs().max() < TOL

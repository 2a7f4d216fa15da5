"""MMA, MMA_BMIP, CLIP-LoRA, MMRL and MMRL_BMIP: official parameter counts, the release's quirks, option errors, the iteration budget.

Float64 equality with references written from the maths lives in tests/references/{mma,clip_lora}.py (run by
tests/test_trainer_exactness.py); end-to-end Digits runs through the scripts in tests/test_all_trainers.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import clip
import train
from engine.engine import build_trainer
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.lora import LoRAPrompts
from prompting.mma import MultiModalAdapters
from prompting.model import PromptedCLIP
from trainers.clip_lora import lora_blocks

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def vit_b16_meta() -> torch.nn.Module:
    with torch.device("meta"):
        return clip.build_clip("random:ViT-B/16")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_official_parameter_counts_vit_b16(vit_b16_meta):
    # MMA paper: 0.675M (blocks 5..12, dim 32): 8 * (33,312 text + 49,952 vision + 1,056 shared).
    assert _count(MultiModalAdapters(vit_b16_meta, start=5, end=12, dim=32)) == 674_560
    # CLIP-LoRA, released: r 2 on q, k, v of all 12 blocks of both towers: 12 * 3 * 4 * (512 + 768).
    assert _count(LoRAPrompts(vit_b16_meta)) == 184_320
    # MMA + BMIP: the adapters plus the released BMIP learner (1,203,230: per-block shared-prompt copies).
    bmip = BMIPPrompts(vit_b16_meta, resolve_bmip_options("released"))
    assert _count(MultiModalAdapters(vit_b16_meta, prompts=bmip)) == 674_560 + 1_203_230


def _mma_model(grad_rescale: bool, scale: float) -> PromptedCLIP:
    backbone = clip.build_clip("random:tiny", seed=0)
    torch.manual_seed(0)
    learner = MultiModalAdapters(backbone, start=3, end=12, scale=scale, grad_rescale=grad_rescale)
    return PromptedCLIP(backbone, learner, CLASSES).double()


def test_mma_gradient_rescaling_divides_parameter_gradients_by_the_scale():
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads, logits = {}, {}
    for rescale in (True, False):
        model = _mma_model(rescale, scale=0.01)
        model.train()
        out = model(images)
        torch.nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
        logits[rescale] = out.detach()
        grads[rescale] = {n: p.grad for n, p in model.prompt_learner.named_parameters()}
    assert torch.equal(logits[True], logits[False])  # the forward pass is the same
    assert len(grads[True]) == 10 * 10  # per layer: down/up of two towers + shared, weight and bias
    for name, true_grad in grads[False].items():
        assert true_grad.abs().max() > 0, name
        torch.testing.assert_close(
            grads[True][name], true_grad / 0.01, rtol=0, atol=1e-12 * (true_grad / 0.01).abs().max().item()
        )


def test_lora_starts_as_clip_and_dropout_only_in_training():
    backbone = clip.build_clip("random:tiny", seed=0)
    plain = PromptedCLIP(backbone, LoRAPrompts(backbone, encoder="vision"), CLASSES).double()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain.eval()
    with torch.no_grad():
        features = plain.encode_image(images, plain.prompt_learner())
        reference = torch.nn.functional.normalize(plain.clip.encode_image(images), dim=-1)
    assert (features - reference).abs().max() < 1e-12  # B = 0 at init: the update vanishes
    for update in plain.prompt_learner.vision_lora.values():
        for p in update.values():
            torch.nn.init.normal_(p.w_lora_B)
    with torch.no_grad():
        evaluated = [plain.encode_image(images, plain.prompt_learner()) for _ in range(2)]
        plain.train()
        trained = [plain.encode_image(images, plain.prompt_learner()) for _ in range(2)]
    assert torch.equal(evaluated[0], evaluated[1]) and not torch.equal(trained[0], trained[1])


def test_option_errors_name_the_key(vit_b16_meta):
    with pytest.raises(ValueError, match="ADAPTER_START/END"):
        MultiModalAdapters(vit_b16_meta, start=0, end=12)
    with pytest.raises(ValueError, match="PARAMS.*'o' is not supported"):
        LoRAPrompts(vit_b16_meta, projections=("q", "o"))
    with pytest.raises(ValueError, match="ENCODER"):
        LoRAPrompts(vit_b16_meta, encoder="image")
    with pytest.raises(ValueError, match="POSITION"):
        lora_blocks("middle", 12)
    assert lora_blocks("half-up", 12) == [6, 7, 8, 9, 10, 11] and lora_blocks("top3", 12) == [9, 10, 11]


def _clip_lora_trainer(tmp_path: Path, *opts: str):
    argv = [
        "--root", str(tmp_path / "data"), "--trainer", "CLIPLoRA", "--seed", "1", "--output-dir", str(tmp_path / "out"),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers/CLIPLoRA/vit_b16.yaml"),
        "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "TEST.NO_TEST", "True",
        "TRAINER.CLIP_LORA.N_ITERS", "3", "TRAINER.CLIP_LORA.PREC", "fp32", *opts,
    ]  # fmt: skip
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def test_clip_lora_class_prompt_is_the_release_template_for_every_dataset(tmp_path):
    # Every dataset file of the release sets "a photo of a {}." (CoOp's Digits template would differ).
    released = _clip_lora_trainer(tmp_path)
    assert released.model.prompt_learner.class_template == "a photo of a {}."
    coop = _clip_lora_trainer(tmp_path, "TRAINER.CLIP_LORA.TEMPLATE", "coop")
    assert coop.model.prompt_learner.class_template == "a photo of the digit {}."
    with pytest.raises(ValueError, match="TRAINER.CLIP_LORA.TEMPLATE must contain"):
        _clip_lora_trainer(tmp_path, "TRAINER.CLIP_LORA.TEMPLATE", "a photo")


def test_clip_lora_iteration_budget_sets_epochs_and_steps_the_schedule_per_iteration(tmp_path):
    trainer = _clip_lora_trainer(tmp_path)
    per_epoch = len(trainer.train_loader_x)
    assert per_epoch == 2 and trainer.max_epoch == 2  # 3 iterations = 2 epochs of 2 batches, the last cut
    steps = []
    original = trainer.forward_backward
    trainer.forward_backward = lambda batch: (steps.append(trainer.get_current_lr()), original(batch))[1]
    trainer.train()
    lr, eta_min, total = 2e-4, 1e-6, 3
    expected = [eta_min + (lr - eta_min) * (1 + math.cos(t / total * math.pi)) / 2 for t in range(3)]
    assert steps == pytest.approx(expected, rel=1e-9)
    folder = tmp_path / "out" / "lora"
    assert (folder / "model.pth.tar-2").is_file() and (folder / "model-best.pth.tar").is_file()


# ---- MMRL -------------------------------------------------------------------------------------------------
def test_mmrl_official_parameter_count_vit_b16(vit_b16_meta):
    from prompting.mmrl import MMRLRepresentations

    # MMRL paper: 4.99M = R (5 x 512) + 7 x (512->768 + 512->512) + proj_rep (768 x 512).
    assert _count(MMRLRepresentations(vit_b16_meta)) == 4_992_256


def test_mmrl_bmip_parameter_count_vit_b16(vit_b16_meta):
    from prompting.mmrl import MMRLBMIPRepresentations

    # MMRL + BMIP (released gate settings): MMRL's 4,992,256 + G_v (512->768) + G_l (768->512), one of
    # each (SHARE True), + 6 gated layers x 2 towers x Linear(1, 1).
    released = MMRLBMIPRepresentations(vit_b16_meta, resolve_bmip_options("released"))
    assert _count(released) == 4_992_256 + 393_984 + 393_728 + 24 == 5_779_992
    # Per-layer heads (preset paper: SHARE False): 6 of each.
    paper = MMRLBMIPRepresentations(vit_b16_meta, resolve_bmip_options("paper"))
    assert _count(paper) == 4_992_256 + 6 * (393_984 + 393_728) + 24


def test_mmrl_evaluation_head_open_world_default_and_released_rule():
    from trainers.mmrl import evaluation_head

    for sub in ("base", "new", "all"):
        assert evaluation_head("fusion", "B2N", sub, "EuroSAT") == "fusion"  # one head, whatever the classes
    assert [evaluation_head("by_label_space", "B2N", s, "EuroSAT") for s in ("base", "new", "all")] == [
        "fusion",
        "cls",
        "cls",
    ]
    assert evaluation_head("by_label_space", "CD", "all", "ImageNet") == "fusion"
    assert evaluation_head("by_label_space", "CD", "all", "DTD") == "cls"
    with pytest.raises(ValueError, match="TEST_HEAD"):
        evaluation_head("base", "B2N", "base", "DTD")


def _mmrl_trainer(tmp_path, *opts: str, name: str = "MMRL"):
    argv = [
        "--root", str(tmp_path / "data"), "--trainer", name, "--seed", "1", "--output-dir", str(tmp_path / "out"),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / f"configs/trainers/{name}/vit_b16.yaml"),
        "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", "0",
        "TRAINER.MMRL.PREC", "fp32", *opts,
    ]  # fmt: skip
    return build_trainer(train.setup_cfg(train.build_parser().parse_args(argv)))


def test_mmrl_trainer_heads_and_tokens_change_both_towers(tmp_path):
    trainer = _mmrl_trainer(
        tmp_path, "DATASET.SUBSAMPLE_CLASSES", "new", "TRAINER.MMRL.TEST_HEAD", "by_label_space"
    )
    model = trainer.model
    assert model.head == "cls"
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        image, rep, text = outputs = model.outputs(images)
        torch.testing.assert_close(model(images), model.head_logits(outputs, "cls"))
        plain_text = torch.nn.functional.normalize(model.clip.encode_text(model.token_ids), dim=-1)
        plain_image = torch.nn.functional.normalize(model.clip.encode_image(images), dim=-1)
    assert (text - plain_text).abs().max() > 1e-4 and (image - plain_image).abs().max() > 1e-4
    assert torch.isfinite(rep).all() and not torch.allclose(rep, image)


# ---- MMRL_BMIP --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (("TRAINER.BMIP.TEXT_DEPTH_OFFSET", "0"), "TRAINER.BMIP.TEXT_DEPTH_OFFSET = 0"),
        (("TRAINER.BMIP.CONNECT_METHOD", "add"), "CONNECT_METHOD must be 'None', got 'add'"),
        (("TRAINER.MMRL.REP_LAYERS", "[12]"), r"at least two TRAINER.MMRL.REP_LAYERS .*got \[12\]"),
    ],
)
def test_mmrl_bmip_refuses_options_that_do_not_apply(tmp_path, opts, message):
    with pytest.raises(ValueError, match=message):
        _mmrl_trainer(tmp_path, *opts, name="MMRL_BMIP")


def test_mmrl_bmip_gates_mix_the_tokens_are_monitored_and_the_probe_reuse_is_exact(tmp_path):
    from prompting.interaction import GatedMix, GateMonitor

    trainer = _mmrl_trainer(tmp_path, "TRAINER.BMIP.TEXT_ATTN_QUERY", "mean_valid", name="MMRL_BMIP")
    model, learner = trainer.model, trainer.model.prompt_learner
    plan = learner()
    assert sorted(plan.vision_front) == sorted(plan.text_front) == list(range(5, 12))
    assert not isinstance(plan.vision_front[5], GatedMix)  # the first layer inserts MMRL's own tokens
    assert all(isinstance(plan.vision_front[b], GatedMix) for b in range(6, 12))
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    learner.gate_monitor = monitor = GateMonitor()
    model.train()
    model(images)
    learner.gate_monitor = None
    means = monitor.means()
    assert sorted(means) == sorted((t, b) for t in ("text", "vision") for b in range(6, 12))
    assert all(len(v) == 5 and all(0 < w < 1 for w in v) for v in means.values())
    scalars = learner.gate_scalars(monitor)
    assert "gates/vision/block6/weight" in scalars and "gates/text/block11/slot4" in scalars
    # Probing the attention to the slots after CLS and handing its projection to the block is exact.
    model.eval()
    with torch.no_grad():
        reused = model.outputs(images)
        model.reuse_probe_projections = False
        plain = model.outputs(images)
    for a, b in zip(reused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_prompt_hook_refuses_a_gated_first_front_layer():
    from prompting.deep import prompt_hook
    from prompting.mmrl import MMRLBMIPRepresentations

    learner = MMRLBMIPRepresentations(clip.build_clip("random:tiny", seed=0), resolve_bmip_options("released"))
    gated, _ = learner.layer_prompts(1)
    with pytest.raises(ValueError, match=r"first front layer \(block 5\) .* must be a FixedPrompt"):
        prompt_hook({}, "vision", front={5: gated, 6: gated})

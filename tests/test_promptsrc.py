"""PromptSRC: Gaussian prompt aggregation (also across a resume), the self-regularising loss terms and
their configured weights, and the template-averaged frozen text features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clip
import train
from engine.engine import build_trainer
from prompting.gpa import GaussianPromptAggregator, gaussian_epoch_weights
from prompting.teachers import template_features
from trainers.promptsrc import self_regularised_loss

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.BACKBONE.NAME", "random:tiny", "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0",
    "DATALOADER.TEST.BATCH_SIZE", "50", "TRAIN.PRINT_FREQ", "100", "TEST.NO_TEST", "True",
]


def build(trainer: str, config: str, root: Path, out: Path, *opts: str):
    """A trainer on Digits base classes with a tiny random CLIP (the paper configs, shrunk)."""
    argv = [
        "--root", str(root), "--trainer", trainer, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", str(ROOT / "configs/datasets/digits.yaml"),
        "--config-file", str(ROOT / "configs/trainers" / config),
        *TINY, "DATASET.SUBSAMPLE_CLASSES", "base", *opts,
    ]
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    train.set_seeds(cfg)
    return build_trainer(cfg)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits_data")


def flat_trainable(model) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters() if p.requires_grad])


def test_gaussian_weights_match_the_released_profile():
    w = gaussian_epoch_weights(15, 1, 20)
    assert sum(w) == pytest.approx(1.0)
    assert [round(x, 3) for x in w[12:17]] == [0.054, 0.242, 0.399, 0.242, 0.054]
    assert round(w[11], 3) == 0.004 and max(w) == w[14]
    xd = gaussian_epoch_weights(6, 10, 20)
    assert round(xd[5], 3) == 0.063 and round(xd[19], 3) == 0.024
    with pytest.raises(ValueError, match="GPA_STD"):
        gaussian_epoch_weights(15, 0, 20)
    with pytest.raises(ValueError, match="GPA_MEAN 1000"):
        gaussian_epoch_weights(1000, 1, 5)


def test_aggregator_is_the_weighted_mean_and_survives_a_state_dict_round_trip():
    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    weights = gaussian_epoch_weights(2, 1, 3)
    gpa = GaussianPromptAggregator(params, weights)
    snapshots = []
    for epoch in range(3):
        with torch.no_grad():
            for p in params:
                p.normal_()
        snapshots.append(torch.cat([p.detach().reshape(-1) for p in params]))
        if epoch == 1:  # "resume": a fresh aggregator restored from the saved buffers
            state = gpa.state_dict()
            gpa = GaussianPromptAggregator(params, weights)
            with pytest.raises(RuntimeError, match="does not carry the GPA state"):
                gpa.accumulate(epoch)
            gpa.load_state_dict(state)
        gpa.accumulate(epoch)
    gpa.apply()
    expected = sum(w * s for w, s in zip(weights, snapshots))
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in params]), expected)


def test_trained_prompts_are_the_gaussian_mean_of_epochs_also_after_resume(digits_root, tmp_path):
    """Interrupted after epoch 2 of 3 and resumed from its checkpoint: the final prompts (and the last
    checkpoint) are sum_e w_e * prompts_e over all three epochs."""
    out = tmp_path / "run"
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1",
            "TRAINER.PROMPTSRC.GPA_MEAN", "2.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0")
    snapshots: dict[int, torch.Tensor] = {}

    def recording(trainer):
        accumulate = trainer.model.gpa.accumulate

        def spy(epoch: int) -> None:
            snapshots[epoch] = flat_trainable(trainer.model).clone()
            accumulate(epoch)

        trainer.model.gpa.accumulate = spy
        return trainer

    class Interrupt(Exception):
        pass

    first = recording(build("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", digits_root, out, *opts))
    before_epoch = first.before_epoch

    def stop_at_third() -> None:
        if first.epoch == 2:
            raise Interrupt
        before_epoch()

    first.before_epoch = stop_at_third
    with pytest.raises(Interrupt):
        first.train()
    assert sorted(snapshots) == [0, 1]

    second = recording(build("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", digits_root, out, *opts))
    second.train()
    assert sorted(snapshots) == [0, 1, 2]
    weights = gaussian_epoch_weights(2.0, 1.0, 3)
    expected = sum(weights[e] * snapshots[e] for e in range(3))
    torch.testing.assert_close(flat_trainable(second.model), expected)
    assert not torch.allclose(expected, snapshots[2])  # the average is not simply the last epoch

    third = build("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", digits_root, tmp_path / "x", *opts)
    third.load_model(str(out), epoch=3)
    torch.testing.assert_close(flat_trainable(third.model), expected)


def test_loss_terms_enter_with_their_weights():
    torch.manual_seed(0)
    b, c, d = 3, 5, 8
    text, zs_text = F.normalize(torch.randn(c, d), dim=-1), F.normalize(torch.randn(c, d), dim=-1)
    image, zs_image = F.normalize(torch.randn(b, d), dim=-1), F.normalize(torch.randn(b, d), dim=-1)
    logits, zs_logits = 100 * image @ text.t(), 100 * zs_image @ zs_text.t()
    labels = torch.tensor([0, 3, 4])
    total, terms = self_regularised_loss(
        logits, labels, text, image, zs_text, zs_image, zs_logits, text_weight=2.0, image_weight=3.0, kl_weight=5.0
    )
    log_p_zs, log_p = zs_logits.log_softmax(1), logits.log_softmax(1)
    kl = (log_p_zs.exp() * (log_p_zs - log_p)).sum() / (b * c)
    torch.testing.assert_close(terms["loss_text"], 2.0 * (text - zs_text).abs().mean())
    torch.testing.assert_close(terms["loss_image"], 3.0 * (image - zs_image).abs().mean())
    torch.testing.assert_close(terms["loss_kl"], 5.0 * kl)
    torch.testing.assert_close(total, F.cross_entropy(logits, labels) + terms["loss_text"] + terms["loss_image"] + terms["loss_kl"])


def test_trainer_uses_configured_weights_and_frozen_teachers(digits_root, tmp_path):
    trainer = build(
        "PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", digits_root, tmp_path,
        "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT", "2.0", "TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT", "3.0",
        "TRAINER.PROMPTSRC.KL_LOSS_WEIGHT", "0.0", "OPTIM.MAX_EPOCH", "1",
    )
    images, labels = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    trainer.set_model_mode("train")
    loss = trainer.compute_loss(images, labels)
    model = trainer.model
    with torch.no_grad():
        image, text = model.features(images)
        zs_image = F.normalize(model.clip.encode_image(images).float(), dim=-1)
        raw = torch.stack([
            model.clip.encode_text(clip.tokenize([t.format(n) for n in model.classnames])).float()
            for t in ("a photo of a {}.", "a bad photo of a {}.")
        ]).mean(0)
    zs_text = trainer.teacher_text_features()
    assert zs_text.shape == (5, model.clip.embed_dim)
    assert trainer.loss_terms["loss_text"] == pytest.approx(2.0 * (text - zs_text).abs().mean().item(), rel=1e-5)
    assert trainer.loss_terms["loss_image"] == pytest.approx(3.0 * (image - zs_image).abs().mean().item(), rel=1e-5)
    assert trainer.loss_terms["loss_kl"] == 0.0
    assert loss.item() == pytest.approx(sum(trainer.loss_terms.values()), rel=1e-5)
    # The teacher text is the mean of *raw* features over the templates (normalised afterwards).
    two = template_features(model.clip, ["a photo of a {}.", "a bad photo of a {}."], model.classnames)
    torch.testing.assert_close(two, raw)

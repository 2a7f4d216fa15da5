"""PromptSRC_BMIP, CoPrompt_BMIP and MMRL_BMIP: the host trainer with BMIP's prompt learner, not a copy of either.

The +BMIP classes may only choose the prompt learner; every forward, loss, GPA and checkpoint method is
inherited. Their learners take the host's sizes (PromptSRC: N_CTX_TEXT and PROMPT_DEPTH as released;
CoPrompt: its N_CTX / PROMPT_DEPTH) and BMIP's behaviour keys (TRAINER.BMIP.*, SHARE.*).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from test_promptsrc import build, digits_root  # noqa: F401  (digits_root is a fixture)

import trainers  # noqa: F401  (registers the trainers)
from engine.engine import TRAINER_REGISTRY
from prompting.adapters import AdaptedPrompts
from prompting.bmip import BMIPPrompts
from trainers.base import DeepPromptTrainer
from trainers.coprompt import CoPrompt
from trainers.mmrl import MMRL
from trainers.promptsrc import PromptSRC


@pytest.mark.parametrize("name, host, hook", [("PromptSRC_BMIP", PromptSRC, "build_prompt_learner"),
                                               ("CoPrompt_BMIP", CoPrompt, "build_core"),
                                               ("MMRL_BMIP", MMRL, "build_representations")])
def test_bmip_combination_only_chooses_the_prompt_learner(name, host, hook):
    cls = TRAINER_REGISTRY.get(name)
    assert issubclass(cls, host)
    own = {k for k, v in vars(cls).items() if inspect.isfunction(v)}
    assert own == {hook}, f"{name} defines {sorted(own)}: anything beyond {hook} belongs in {host.__name__}"
    # ...and the host defines the behaviour (no hidden second implementation further up).
    for method in ("compute_loss", "forward_backward"):
        assert getattr(cls, method) is getattr(host, method)
        assert getattr(host, method) is not getattr(DeepPromptTrainer, method)
    assert len(inspect.getsource(inspect.getmodule(cls)).splitlines()) < 60


def test_promptsrc_bmip_learner_follows_the_released_keys(digits_root, tmp_path):  # noqa: F811
    trainer = build(
        "PromptSRC_BMIP", "PromptSRC_BMIP/vit_bitp_ctx4_ep20TT_adam_PromptSRC.yaml", digits_root, tmp_path,
        "TRAINER.PROMPTSRC.N_CTX_TEXT", "3", "TRAINER.PROMPTSRC.N_CTX_VISION", "1",
        "TRAINER.PROMPTSRC.PROMPT_DEPTH", "5", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
        "TRAINER.BMIP.TEXT_DEPTH_OFFSET", "0", "OPTIM.MAX_EPOCH", "1",
    )
    learner = trainer.model.prompt_learner
    assert isinstance(learner, BMIPPrompts)
    o = learner.options
    # N_CTX_VISION and PROMPT_DEPTH_VISION/TEXT do not apply (released); BMIP keys do.
    assert (o.n_ctx, o.depth, o.text_depth_offset, o.share_visual) == (3, 5, 0, True)
    assert list(learner.vision_blocks) == [1, 2, 3, 4] and list(learner.text_blocks) == [1, 2, 3, 4]
    assert trainer.method_cfg.TEACHER_TEMPLATES == "imagenet80"
    # PromptSRC's machinery runs on the BMIP learner: GPA covers its trainable tensors, loss has all terms.
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert trainer.model.gpa.running_sum.numel() == n_trainable
    images, labels = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    trainer.set_model_mode("train")
    loss = trainer.compute_loss(images, labels)
    assert set(trainer.loss_terms) == {"loss_ce", "loss_text", "loss_image", "loss_kl"}
    loss.backward()
    assert learner.gates_v[0].weight.grad is not None and learner.ctx_t.grad is not None


def test_coprompt_bmip_puts_coprompt_adapters_on_a_bmip_core(digits_root, tmp_path):  # noqa: F811
    trainer = build(
        "CoPrompt_BMIP", "CoPrompt_BMIP/coprompt_bmip.yaml", digits_root, tmp_path,
        "TRAINER.CoPrompt.N_CTX", "3", "TRAINER.CoPrompt.PROMPT_DEPTH", "12", "SHARE.SHARE_PARAMETER_VISUAL", "False",
        "OPTIM.MAX_EPOCH", "1",
    )
    learner = trainer.model.prompt_learner
    assert isinstance(learner, AdaptedPrompts) and isinstance(learner.prompts, BMIPPrompts)
    o = learner.prompts.options
    assert (o.n_ctx, o.depth, o.share_visual, o.text_depth_offset) == (3, 12, False, 1)
    assert list(learner.prompts.vision_blocks) == list(range(1, 12))
    assert list(learner.prompts.text_blocks) == list(range(1, 11))
    # Adapters act at test time too: eval logits equal the adapted features' logits.
    trainer.set_model_mode("eval")
    images, _ = trainer.parse_batch_test(next(iter(trainer.test_loader)))
    images = images[:3]
    with torch.no_grad():
        logits = trainer.model(images)
        plan = learner.prompts()
        raw = trainer.model.logits(trainer.model.encode_image(images, plan), trainer.model.encode_text(plan))
    assert not torch.allclose(logits, raw)

"""BMIP acceptance checks (bmip_spec section 7), presets and flag precedence, ablation interactions."""

from __future__ import annotations

import pytest
import torch

import clip
from prompting.bmip import BMIPPrompts, resolve_bmip_options
from prompting.interaction import SlotAttention
from prompting.model import PromptedCLIP

CLASSES = ["zero", "one", "two", "three"]
N_PATCH_TOKENS = (224 // 32) ** 2 + 1  # random:tiny: CLS + 7x7 patches


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return clip.build_clip("random:tiny")


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _model(tiny, preset: str = "released", seed: int = 0, **options) -> PromptedCLIP:
    torch.manual_seed(seed)
    return PromptedCLIP(tiny, BMIPPrompts(tiny, resolve_bmip_options(preset, **options)), CLASSES)


def _record(monkeypatch) -> dict:
    """Gate inputs per tower and every attention probe, recorded during forward passes: ``attention_probs``
    of the text tower logs "text"; a vision probe logs "vision" once, whether it fuses the prefix
    (``attention_to_suffix``, training and evaluation on CPU) or computes explicit scores."""
    log = {"text": [], "vision": [], "probes": []}
    original_call = SlotAttention.__call__
    original_probs = clip.ResidualAttentionBlock.attention_probs
    original_suffix = clip.ResidualAttentionBlock.attention_to_suffix

    def call(self, x, block, slots):
        out = original_call(self, x, block, slots)
        log[slots.tower].append(out.detach().clone())
        return out

    def probs(self, x, query_rows=None):
        if self.causal:
            log["probes"].append("text")
        return original_probs(self, x, query_rows)

    def suffix(self, x, start, differentiable=True):
        log["probes"].append("vision")
        return original_suffix(self, x, start, differentiable)

    monkeypatch.setattr(SlotAttention, "__call__", call)
    monkeypatch.setattr(clip.ResidualAttentionBlock, "attention_probs", probs)
    monkeypatch.setattr(clip.ResidualAttentionBlock, "attention_to_suffix", suffix)
    return log


# ---- 1. text gate input is exactly zero in `released`; skipping its probe changes nothing ---------------------
def test_released_text_gate_reads_zero_and_skipping_the_probe_is_bit_identical(tiny, monkeypatch):
    model = _model(tiny)
    images = _images(3, 1)
    model.train()
    skipped = model(images)
    log = _record(monkeypatch)
    model.prompt_learner.attention.skip_zero_probe = False
    probed = model(images)
    assert len(log["text"]) == 7
    assert all(torch.equal(a, torch.zeros_like(a)) for a in log["text"])
    assert torch.equal(skipped, probed)
    assert log["probes"].count("text") == 7


# ---- 2. probes per forward: one per prompted vision block, none for the released text tower ----------------------
def test_attention_probes_only_where_needed(tiny, monkeypatch):
    log = _record(monkeypatch)
    released = _model(tiny)
    released.train()
    released(_images(2, 0))
    assert log["probes"].count("vision") == 8 and log["probes"].count("text") == 0
    log["probes"].clear()
    paper = _model(tiny, "paper")
    paper.train()
    paper(_images(2, 0))
    assert log["probes"].count("vision") == 8 and log["probes"].count("text") == 8


# ---- 3. prompted blocks per tower ------------------------------------------------------------------------------
def _slots_written(model: PromptedCLIP, images: torch.Tensor) -> tuple[dict, dict]:
    """Block index -> tokens written into the slots, per tower (captured from the replaced input)."""
    written = {"text": {}, "vision": {}}
    towers = {"text": model.clip.transformer, "vision": model.clip.visual.transformer}
    handles = []
    for name, tower in towers.items():
        previous = {}
        for k, block in enumerate(tower.resblocks):
            def pre(mod, args, k=k, name=name, previous=previous):
                x = args[0]
                if k > 0 and not torch.equal(x, previous[k - 1]):
                    written[name][k] = x
            def post(mod, args, out, k=k, previous=previous):
                previous[k] = out
            handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    model.train()
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    n = model.prompt_learner.n_ctx
    text = {k: x[:, 1 : 1 + n] for k, x in written["text"].items()}
    vision = {k: x[:, -n:] for k, x in written["vision"].items()}
    return text, vision


def test_prompted_blocks_per_tower(tiny):
    text, vision = _slots_written(_model(tiny), _images(2, 0))
    assert sorted(vision) == list(range(1, 9)) and sorted(text) == list(range(1, 8))
    text, vision = _slots_written(_model(tiny, "paper"), _images(2, 0))
    assert sorted(vision) == list(range(1, 9)) and sorted(text) == list(range(1, 9))


# ---- 4. batch dependence ------------------------------------------------------------------------------------------
def test_released_couples_the_batch_paper_does_not(tiny):
    first, mates_a, mates_b = _images(1, 10), _images(3, 11), _images(3, 12)
    for preset, coupled in (("released", True), ("paper", False)):
        model = _model(tiny, preset)
        with torch.no_grad():
            gates = model.prompt_learner.gates_v
            for gate in gates:  # make the gates input-sensitive so the effect is visible
                gate.weight.fill_(200.0)
            model.eval()
            a = model(torch.cat([first, mates_a]))[0]
            b = model(torch.cat([first, mates_b]))[0]
            alone = model(first)[0]
        if coupled:
            assert not torch.allclose(a, b, atol=1e-6)
        else:
            assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, alone, atol=1e-5)


# ---- 6. fp32 trainable tensors stay finite under Adam (regression for the release's fp16 Adam) ----------------
@pytest.mark.parametrize("preset", ["released", "paper"])
def test_adam_steps_keep_fp32_parameters_finite(tiny, preset):
    model = _model(tiny, preset)
    params = list(model.prompt_learner.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    optim = torch.optim.Adam(params, lr=2e-3, weight_decay=5e-4)
    model.train()
    labels = torch.tensor([0, 1, 2, 3])
    for step in range(3):
        loss = torch.nn.functional.cross_entropy(model(_images(4, step)), labels)
        assert torch.isfinite(loss)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert all(torch.isfinite(p).all() for p in params)


# ---- 7. w = 0 -> one-way coupling (projected foreign prompts); w = 1 -> own prompts (IVLP-like) --------------------
@pytest.mark.parametrize("w", [0.0, 1.0])
def test_gate_limits(tiny, w):
    model = _model(tiny, gate_act="none")
    learner = model.prompt_learner
    with torch.no_grad():
        for gate in [*learner.gates_v, *learner.gates_t]:
            gate.weight.zero_()
            gate.bias.fill_(w)
    text, vision = _slots_written(model, _images(2, 0))
    with torch.no_grad():
        for block, tokens in vision.items():
            k = block - 1
            expected = learner.own_vision(k) if w == 1.0 else learner.foreign_vision(k)
            assert torch.allclose(tokens, expected.expand_as(tokens), atol=1e-6)
        for block, tokens in text.items():
            k = block - 1
            expected = learner.compound_prompts_text[k] if w == 1.0 else learner.foreign_text(k)
            assert torch.allclose(tokens, expected.expand_as(tokens), atol=1e-6)


def test_mix_direction_w_multiplies_own(tiny):
    model = _model(tiny)
    learner = model.prompt_learner
    text, vision = _slots_written(model, _images(2, 3))
    with torch.no_grad():
        w = torch.sigmoid(learner.gates_t[0].bias)  # released text gate: sigmoid(bias), A_l = 0
        expected = w * learner.compound_prompts_text[0] + (1 - w) * learner.foreign_text(0)
        assert torch.allclose(text[1], expected.expand_as(text[1]), atol=1e-6)


# ---- presets, precedence, validation -------------------------------------------------------------------------------
def test_presets_and_explicit_options_win():
    released = resolve_bmip_options("released")
    assert (released.text_attn_query, released.attn_reduce, released.text_depth_offset) == ("sos", "batch_mean", 1)
    assert (released.first_vision_prompt, released.share_visual, released.share_text) == ("proj_text", True, True)
    paper = resolve_bmip_options("paper")
    assert (paper.text_attn_query, paper.attn_reduce, paper.text_depth_offset) == ("mean_valid", "per_sample", 0)
    assert (paper.first_vision_prompt, paper.share_visual, paper.share_text) == ("own", False, False)
    mixed = resolve_bmip_options("paper", attn_reduce="batch_mean", share_text=True, gate_act=None)
    assert mixed.attn_reduce == "batch_mean" and mixed.share_text and mixed.gate_act == "sigmoid"
    assert resolve_bmip_options("released", connect_method="joint").first_vision_prompt == "combine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(preset="typo"), "PRESET must be one of"),
        (dict(preset="released", attn_reduce="mean"), "ATTN_REDUCE must be one of"),
        (dict(preset="released", text_attn_query="cls"), "TEXT_ATTN_QUERY must be one of"),
        (dict(preset="released", gate_act="relu"), "gate activation must be one of"),
        (dict(preset="released", connect_method="joint", first_vision_prompt="own"), "FIRST_VISION_PROMPT"),
        (dict(preset="released", first_vision_prompt="combine"), "needs an ablation CONNECT_METHOD"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_bmip_options(**kwargs)


def test_options_from_config_tree():
    from engine.config import get_cfg_default
    from trainers.bmip import bmip_options_from_cfg
    from trainers.config import extend_trainer_cfg

    cfg = get_cfg_default()
    extend_trainer_cfg(cfg)
    cfg.merge_from_list(["TRAINER.BMIP.PRESET", "paper", "TRAINER.BMIP.TEXT_DEPTH_OFFSET", "1"])
    options = bmip_options_from_cfg(cfg)
    assert options.text_depth_offset == 1 and options.attn_reduce == "per_sample" and not options.share_visual
    cfg.merge_from_list(["SHARE.SHARE_PARAMETER_VISUAL", "True"])
    assert bmip_options_from_cfg(cfg).share_visual


# ---- ablation interactions (Table 5) --------------------------------------------------------------------------------
def test_addition_sum_and_released_lists(tiny):
    model = _model(tiny, connect_method="add", add_mode="sum")
    learner = model.prompt_learner
    text, vision = _slots_written(model, _images(2, 0))
    with torch.no_grad():
        assert torch.allclose(vision[3][0], learner.own_vision(2) + learner.foreign_vision(2), atol=1e-6)
        assert torch.allclose(text[2][0], learner.compound_prompts_text[1] + learner.foreign_text(1), atol=1e-6)
        assert torch.allclose(model.prompt_learner().vision_input, learner.ctx_v + learner.proj_t(learner.ctx_t))
    lists = _model(tiny, connect_method="add")  # released: list concatenation of the BITP code
    learner = lists.prompt_learner
    text, vision = _slots_written(lists, _images(2, 0))
    assert sorted(vision) == sorted(text) == list(range(1, 12))
    with torch.no_grad():
        assert torch.allclose(vision[8][0], learner.own_vision(7), atol=1e-6)
        assert torch.allclose(vision[9][0], learner.foreign_vision(0), atol=1e-6)
        assert torch.allclose(text[8][0], learner.compound_prompts_text[7], atol=1e-6)
        assert torch.allclose(text[11][0], learner.foreign_text(2), atol=1e-6)


def test_attention_and_joint_ablations(tiny):
    model = _model(tiny, connect_method="atten")
    learner = model.prompt_learner
    _, vision = _slots_written(model, _images(2, 0))
    with torch.no_grad():
        own, foreign = learner.own_vision(0), learner.foreign_vision(0)
        expected = torch.softmax(foreign @ own.T, dim=-1) @ foreign + own
        assert torch.allclose(vision[1][0], expected, atol=1e-5)
    joint = _model(tiny, connect_method="joint", n_ctx=1)
    learner = joint.prompt_learner
    plan = learner()
    assert plan.vision_input.shape == (2, tiny.vision_width)
    assert joint.prompt_learner.prompt_prefix == "a photo of a"
    with torch.no_grad():
        assert torch.allclose(plan.text_layers[1].tokens, torch.cat([learner.foreign_text(0), learner.compound_prompts_text[0]]))
        assert torch.allclose(plan.vision_layers[1].tokens, torch.cat([learner.own_vision(0), learner.foreign_vision(0)]))
        assert joint(_images(2, 0)).shape == (2, 4)

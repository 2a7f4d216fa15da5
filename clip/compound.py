"""The MaPLe repository's ``design_details`` and its calling conventions for CLIP's towers, on this CLIP.

The MaPLe repository (muzairkhattak/multimodal-prompt-learning; its IVLP and VPT trainers share its
``clip``) builds CLIP with ``clip.build_model(state_dict, design_details)``, whose ``"trainer"`` entry
picks the design. Each design of :data:`DESIGNS` builds this CLIP; any other is refused in one line.

- ``CoOp``, ``CoCoOp``: the plain towers.
- ``MaPLe``: the towers also take MaPLe's deep ("compound") prompts through their calls:
  ``visual(image, shared_ctx, deeper_prompts)`` and ``transformer([x, deeper_prompts, counter])``. From
  block 1 on, block ``i`` replaces the prompt tokens of the previous block by ``deeper_prompts[i-1]``:
  after the SOS token in the text tower, at the end of the sequence in the image tower.
- ``IVLP``, ``VPT``: the learnable prompts live inside CLIP itself, registered where the repository
  registers them, so a trainer file's name filters (``"VPT" in name``) and checkpoint keys are theirs:
  ``visual.VPT`` (``vision_ctx`` tokens appended after the patch tokens, before ``ln_pre``; present when
  ``vision_depth`` > 0) and ``VPT_shallow`` on the blocks ``1 .. depth-1`` of each tower
  (``visual.transformer.resblocks.<i>.VPT_shallow``: ``vision_ctx`` tokens up to ``vision_depth``;
  ``transformer.resblocks.<i>.VPT_shallow``: ``language_ctx`` tokens up to ``language_depth``). Before
  such a block its prompts replace the previous block's prompt tokens, at the same places as MaPLe's. The
  text prompts of block 0 are the trainer file's (its prompt learner writes them after SOS), as there.
  ``VPT`` is the same with ``language_depth`` 0. The prompts are fp32, drawn ``normal(0, 0.02)`` as the
  repository's CLIP draws them while it is constructed: with a ViT that construction is replayed on the
  global generator (clip/release_draws.py), so the same generator state gives the same prompts as their
  ``build_model`` and leaves the generator where theirs does (a trainer file's later draws match too); a
  prompt that ``state_dict`` holds is taken from it. The towers here are ordinary ones, driven by a hook
  (clip/blocks.py), so other hooks still apply.

Precision, for both conventions, as the repository: the prompts are not halved with the weights (OpenAI's
``convert_weights`` leaves them fp32) but cast to fp16 where they join the tokens, so an fp32 tower sees
them rounded to fp16; this module does the same, so a file written for that repository gets the logits its
own CLIP gives. Only a model built with one of these designs gets these towers (subclasses of ours that
also take the calls); every other CLIP is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .model import CLIP, Transformer, VisionTransformer
from .release_draws import PROMPT_STD, draw_openai_clip

# Designs whose towers are this CLIP's own (MaPLe's prompts come in through the call convention).
PLAIN_DESIGNS = ("CoOp", "CoCoOp", "MaPLe")
# Designs whose learnable prompts are parameters of CLIP's towers and blocks.
BLOCK_PROMPT_DESIGNS = ("IVLP", "VPT")
DESIGNS = PLAIN_DESIGNS + BLOCK_PROMPT_DESIGNS
BLOCK_PROMPT_KEYS = ("vision_depth", "vision_ctx", "language_depth", "language_ctx")


def check_design_details(design_details: Optional[Mapping[str, Any]]) -> None:
    """Accept the MaPLe repository's ``design_details`` for the designs its ``clip`` builds."""
    if design_details is None:
        return
    trainer = design_details.get("trainer")
    if trainer not in DESIGNS:
        raise ValueError(
            f"clip.build_model: unknown design_details trainer {trainer!r}; supported: {', '.join(DESIGNS)}"
        )
    if trainer in BLOCK_PROMPT_DESIGNS:
        missing = [key for key in BLOCK_PROMPT_KEYS if key not in design_details]
        if missing:
            raise ValueError(
                f"clip.build_model: design_details for trainer {trainer!r} lacks {', '.join(missing)} "
                f"(expected the keys {', '.join(BLOCK_PROMPT_KEYS)})"
            )
        for key in BLOCK_PROMPT_KEYS:
            value = design_details[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"clip.build_model: design_details[{key!r}] must be an integer >= 0, got {value!r}"
                )


def is_block_prompt_key(key: str) -> bool:
    """Whether a state-dict key names one of the IVLP/VPT designs' prompts (not a CLIP weight)."""
    return key == "visual.VPT" or key.endswith(".VPT_shallow")


def apply_design(model: CLIP, design_details: Optional[Mapping[str, Any]],
                 prompts: Optional[Mapping[str, Tensor]] = None) -> CLIP:
    """Give ``model`` the towers of its design; ``prompts``: IVLP/VPT prompt tensors from the state dict."""
    trainer = None if design_details is None else design_details.get("trainer")
    if prompts and trainer not in BLOCK_PROMPT_DESIGNS:
        raise ValueError(
            f"clip.build_model: state dict holds IVLP/VPT prompts ({', '.join(sorted(prompts))}) but design "
            f"{trainer!r} builds none; pass design_details with trainer IVLP or VPT"
        )
    if trainer == "MaPLe":
        return use_compound_prompt_calls(model, design_details)
    if trainer in BLOCK_PROMPT_DESIGNS:
        return add_block_prompts(model, design_details, prompts or {})
    return model


def use_compound_prompt_calls(model: CLIP, design_details: Optional[Mapping[str, Any]]) -> CLIP:
    """For the MaPLe design, let the towers take MaPLe's calls (other designs keep plain towers)."""
    if design_details is not None and design_details.get("trainer") == "MaPLe":
        model.transformer.__class__ = CompoundPromptTransformer
        if isinstance(model.visual, VisionTransformer):
            model.visual.__class__ = CompoundPromptVisionTransformer
    return model


# ----------------------------------------------------------------------------- MaPLe's calls


class CompoundPromptTransformer(Transformer):
    """A text tower that also takes MaPLe's ``[x, deeper_prompts, counter]`` (returned in kind)."""

    def forward(self, x: Any, hook: Any = None, batch_first: Optional[bool] = None) -> Any:
        if isinstance(x, list):
            tokens, deeper, counter = x
            return [super().forward(tokens, compound_prompt_hook(deeper, text=True), batch_first), deeper, counter]
        return super().forward(x, hook, batch_first)


class CompoundPromptVisionTransformer(VisionTransformer):
    """An image tower that also takes MaPLe's ``visual(image, shared_ctx, deeper_prompts)``."""

    def forward_tokens(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Any = None) -> tuple[Tensor, Tensor]:
        if isinstance(hook, (list, tuple)):
            prompts = None if prompts is None else prompts.half()  # as MaPLe's tower joins them
            hook = compound_prompt_hook(hook, text=False)
        return super().forward_tokens(x, prompts, hook)


def replace_prompt_tokens(x: Tensor, ctx: Tensor, text: bool) -> Tensor:
    """``x`` (N, L, D) with its prompt tokens replaced by ``ctx`` (n, D), fp16-rounded as the repository's
    blocks join them: after SOS in the text tower, the last ``n`` tokens in the image tower."""
    ctx = ctx.half().to(x.dtype).expand(x.shape[0], -1, -1)
    n = ctx.shape[1]
    if text:
        return torch.cat([x[:, :1], ctx, x[:, 1 + n :]], dim=1)
    return torch.cat([x[:, : x.shape[1] - n], ctx], dim=1)  # (n may be 0: nothing replaced)


def compound_prompt_hook(deeper: Sequence[Tensor], text: bool):
    """The tower hook that puts ``deeper[i-1]`` in place of the prompt tokens before block ``i`` (i >= 1)."""

    def hook(index: int, x: Tensor, block: Any) -> Optional[Tensor]:
        if index == 0 or index - 1 >= len(deeper):
            return None
        return replace_prompt_tokens(x, deeper[index - 1], text)

    return hook


# ----------------------------------------------------------------------------- IVLP / VPT prompts


def add_block_prompts(model: CLIP, design_details: Mapping[str, Any], prompts: Mapping[str, Tensor]) -> CLIP:
    """Register the IVLP/VPT prompts on ``model`` (fp32) and make its towers apply them.

    Their values: ``prompts[name]`` where given, else the repository's draws: with a ViT image tower its
    whole CLIP construction is replayed on the global generator (:func:`~clip.release_draws.draw_openai_clip`),
    so a seed gives the prompts its ``build_model`` gives and the generator ends where theirs does; with a
    ResNet (not replayed) the text prompts are drawn ``normal(0, 0.02)`` in its order.
    """
    vit = isinstance(model.visual, VisionTransformer)
    drawn = draw_openai_clip(model, design=design_details)["prompts"] if vit else {}
    if vit and design_details["vision_depth"] > 0:
        visual = model.visual
        visual.__class__ = BlockPromptVisionTransformer
        visual.VPT = _prompt(design_details["vision_ctx"], visual.width, visual.conv1.weight.device)
        _move_to_front(visual._parameters, "VPT")  # the repository's order: optimizer states index by it
        _add_block_prompts(visual.transformer, design_details["vision_depth"], design_details["vision_ctx"], False)
    _add_block_prompts(model.transformer, design_details["language_depth"], design_details["language_ctx"], True)
    built = {name: p for name, p in model.named_parameters() if is_block_prompt_key(name)}
    unknown = sorted(set(prompts) - set(built))
    if unknown:
        raise ValueError(
            f"clip.build_model: state dict holds prompts {', '.join(unknown)} that design_details "
            f"{dict(design_details)} does not build"
        )
    with torch.no_grad():
        for name, param in built.items():
            value = prompts.get(name, drawn.get(name))
            if value is None:
                nn.init.normal_(param, std=PROMPT_STD)
            elif value.shape != param.shape:
                raise ValueError(
                    f"clip.build_model: state dict's {name} has shape {tuple(value.shape)}, design_details "
                    f"builds {tuple(param.shape)}"
                )
            else:
                param.copy_(value)
    return model


def _move_to_front(params: dict, name: str) -> None:
    """Reorder ``params`` in place so that ``name`` comes first (then the others in their order)."""
    for key in [k for k in params if k != name]:
        params[key] = params.pop(key)


def _prompt(n_ctx: int, width: int, device: torch.device) -> nn.Parameter:
    """An fp32 prompt parameter, filled by :func:`add_block_prompts`."""
    return nn.Parameter(torch.empty(n_ctx, width, device=device))


def _add_block_prompts(tower: Transformer, depth: int, n_ctx: int, text: bool) -> None:
    """``VPT_shallow`` on blocks ``1 .. depth-1`` (block 0's prompts are the input's), as the repository."""
    tower.__class__ = BlockPromptTransformer
    tower.prompts_after_sos = text
    for index, block in enumerate(tower.resblocks):
        if 0 < index < depth:
            block.VPT_shallow = _prompt(n_ctx, tower.width, block.ln_1.weight.device)


class BlockPromptTransformer(Transformer):
    """A tower whose blocks may hold ``VPT_shallow``: before such a block, those prompts replace the prompt
    tokens (after SOS when ``prompts_after_sos``, else the last ones); a caller's hook runs after that."""

    prompts_after_sos = True

    def forward(self, x: Tensor, hook: Any = None, batch_first: Optional[bool] = None) -> Tensor:
        if not (self.batch_first if batch_first is None else batch_first):
            return super().forward(x, hook, batch_first)  # permutes and comes back batch-first
        return super().forward(x, block_prompt_hook(hook, self.prompts_after_sos), True)


def block_prompt_hook(hook: Any, text: bool):
    """The tower hook that writes a block's ``VPT_shallow`` into the tokens, then runs ``hook`` (if any)."""

    def prompted(index: int, x: Tensor, block: Any) -> Any:
        ctx = getattr(block, "VPT_shallow", None)
        if ctx is not None:
            x = replace_prompt_tokens(x, ctx, text)
        replaced = None if hook is None else hook(index, x, block)
        return x if replaced is None else replaced

    return prompted


class BlockPromptVisionTransformer(VisionTransformer):
    """An image tower holding ``VPT``: its tokens are appended after the patch tokens, fp16-rounded."""

    VPT: nn.Parameter

    def forward_tokens(self, x: Tensor, prompts: Optional[Tensor] = None, hook: Any = None) -> tuple[Tensor, Tensor]:
        if prompts is not None:
            raise ValueError("this image tower holds its own prompts (design_details IVLP/VPT); pass none")
        return super().forward_tokens(x, self.VPT.half(), hook)

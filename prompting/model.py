"""A frozen CLIP driven by a prompt learner through the towers' hooks (the family's ``CustomCLIP``).

One forward pass: the learner produces a :class:`~prompting.deep.PromptPlan`; the text tower encodes all
class prompts (trimmed to the longest real token sequence: exact under the causal mask); the image tower
encodes the batch with the plan's hooks; logits = exp(logit_scale) * cosine. During training the text
side is recomputed every call; in evaluation (model in eval mode and gradients off) it is computed once
per label space and reused, until the model is switched back to training, the classes change or weights
are loaded. Methods with a fixed text side (VPT) always reuse it.

Switches for measuring the optimisations against the official behaviour (docs/PERFORMANCE.md), all exact
and on by default: ``cache_text`` (reuse the class features as above; False recomputes them for every
batch), ``reuse_probe_projections`` (vision blocks whose gate probed the attention reuse the probe's
projections and, in evaluation, its fused attention of the rows before the prompt slots) and the CLIP's
own ``trim_text``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip import at_least_fp32

from .deep import TEXT, VISION, PromptPlan, prompt_hook
from .text import assemble_prompts, tokenize_class_prompts

__all__ = ["PromptedCLIP", "distinct_parameters"]


def distinct_parameters(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` with each storage once: Parameters that view the same memory with the same shape (BMIP's
    aliased shared prompt) are one tensor. Meta tensors (no memory) count by identity."""
    seen: dict[object, nn.Parameter] = {}
    for p in params:
        seen.setdefault((p.data_ptr(), p.shape) if p.data_ptr() else id(p), p)
    return list(seen.values())


class PromptedCLIP(nn.Module):
    """Frozen ``clip_model`` + trainable ``prompt_learner`` over a label space ``classnames``."""

    def __init__(
        self,
        clip_model: nn.Module,
        prompt_learner: nn.Module,
        classnames: Sequence[str],
        fixed_logit_scale: Optional[float] = None,
    ) -> None:
        """``fixed_logit_scale`` replaces ``exp(clip.logit_scale)`` (CLIP-LoRA's constant 100)."""
        super().__init__()
        self.fixed_logit_scale = fixed_logit_scale
        for param in clip_model.parameters():
            param.requires_grad_(False)
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        self._text_cache: Optional[Tensor] = None
        self.cache_text = True
        self.reuse_probe_projections = True
        self.set_classnames(classnames)

    # ---- label space -----------------------------------------------------------------------------
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """(Re)build the class-dependent frozen buffers; they are never saved in checkpoints."""
        learner = self.prompt_learner
        template = getattr(learner, "class_template", "{}.")
        prompts = tokenize_class_prompts(self.clip, list(classnames), learner.prompt_prefix, learner.n_ctx, template)
        self.classnames = list(classnames)
        self.register_buffer("token_ids", prompts.token_ids, persistent=False)
        self.register_buffer("token_prefix", prompts.prefix, persistent=False)
        self.register_buffer("token_suffix", prompts.suffix, persistent=False)
        self.register_buffer("eot_indices", prompts.eot_indices, persistent=False)
        self.invalidate_text_cache()

    def invalidate_text_cache(self) -> None:
        self._text_cache = None

    # ---- features ----------------------------------------------------------------------------------
    def encode_text(self, plan: PromptPlan) -> Tensor:
        """Normalised class features (C, embed_dim), fp32 (fp64 in an fp64 model), of the current label space."""
        hook = prompt_hook(
            plan.text_layers, TEXT, self.eot_indices,
            residuals=plan.text_residuals, projections=plan.text_projections, front=plan.text_front,
        )  # fmt: skip
        inserted = next(iter(plan.text_front.values())).n_slots if plan.text_front else 0
        if plan.text_ctx is None:  # fixed hand-written prompts (VPT), maybe with adapted blocks (MMA, LoRA, MMRL)
            features = self.clip.encode_text_embeddings(
                self.clip.token_embedding(self.token_ids), self.eot_indices, hook=hook, eot_offset=inserted
            )
        else:
            x = assemble_prompts(self.token_prefix, plan.text_ctx, self.token_suffix)
            features = self.clip.encode_text_embeddings(x, self.eot_indices, hook=hook, eot_offset=inserted)
        if plan.text_head is not None:
            features = plan.text_head(features)
        return F.normalize(at_least_fp32(features), dim=-1)

    def vision_hook(self, plan: PromptPlan) -> Optional[Any]:
        """The image tower's hook for ``plan``."""
        return prompt_hook(
            plan.vision_layers, VISION, reuse_projections=self.reuse_probe_projections,
            residuals=plan.vision_residuals, projections=plan.vision_projections, front=plan.vision_front,
        )  # fmt: skip

    def encode_image(self, images: Tensor, plan: PromptPlan) -> Tensor:
        """Normalised image features (N, embed_dim), fp32 (fp64 in an fp64 model)."""
        features = self.clip.encode_image(images, prompts=plan.vision_input, hook=self.vision_hook(plan))
        if plan.image_head is not None:
            features = plan.image_head(features)
        return F.normalize(at_least_fp32(features), dim=-1)

    def text_features(self, plan: PromptPlan) -> Tensor:
        reusable = self.cache_text and (
            not self.prompt_learner.learns_text or not (self.training or torch.is_grad_enabled())
        )
        if not reusable:
            self._text_cache = None
            return self.encode_text(plan)
        if self._text_cache is None:
            with torch.no_grad():
                self._text_cache = self.encode_text(plan)
        return self._text_cache

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised prompted (image (N, D), class (C, D)) features from one prompt plan."""
        plan = self.prompt_learner()
        text = self.text_features(plan)
        return self.encode_image(images, plan), text

    def logits(self, image: Tensor, text: Tensor) -> Tensor:
        """exp(logit_scale) * cosine, for normalised features."""
        if self.fixed_logit_scale is not None:
            return self.fixed_logit_scale * image @ text.t()
        return self.clip.logit_scale.exp().to(image.dtype) * image @ text.t()

    def forward(self, images: Tensor) -> Tensor:
        """Logits (N, C) = exp(logit_scale) * cos(image, class)."""
        return self.logits(*self.features(images))

    # ---- training state ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> PromptedCLIP:
        """Switch the prompt learner only; the frozen CLIP stays in eval mode (as the official trainers)."""
        if mode:
            self.invalidate_text_cache()
        self.training = mode
        self.prompt_learner.train(mode)
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only the trainable tensors (what checkpoints hold)."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load trainable tensors. Frozen CLIP weights and class buffers may be absent (never saved);
        any other missing or unexpected key is an error when ``strict``."""
        self.invalidate_text_cache()
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = sorted(set(result.missing_keys) & trainable)
        unexpected = sorted(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"checkpoint does not match this model's prompt learner: missing {missing}, unexpected "
                f"{unexpected} (was it trained with another method or another TRAINER.* setting?)"
            )
        return result

    def count_trainable(self) -> int:
        """Number of trainable parameters (each tensor once), all of which the forward pass uses."""
        return sum(p.numel() for p in distinct_parameters(self.parameters()) if p.requires_grad)

"""CoOp: learnable text context in front of (or around) the class name (``TRAINER.COOP``).

Zhou et al., "Learning to Prompt for Vision-Language Models" (IJCV 2022). Only the context vectors train;
both CLIP towers stay frozen and vanilla. The class prompt of class ``c`` is, before the text tower,

* ``end``:    ``[SOS] ctx_1..ctx_n  name_c  . [EOT]``   (default)
* ``middle``: ``[SOS] ctx_1..ctx_h  name_c  ctx_h+1..ctx_n  . [EOT]``   (h = n // 2)
* ``front``:  ``[SOS] name_c  ctx_1..ctx_n  . [EOT]``

with one context shared by all classes, or one per class (``CSC``). The pieces shared with the rest of
the family (context init, tokenised class prompts, text cache, checkpoints of trainable tensors only,
training step and precision handling) come from :mod:`prompting` and :class:`trainers.base.DeepPromptTrainer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

import clip
from engine.engine import TRAINER_REGISTRY
from prompting.deep import PromptPlan
from prompting.model import PromptedCLIP
from prompting.text import CONTEXT_STD, assemble_prompts, init_context

from .base import DeepPromptTrainer

__all__ = [
    "CLASS_TOKEN_POSITIONS",
    "OFFICIAL_CLASS_BUFFERS",
    "CoOp",
    "CoOpCLIP",
    "CoOpPromptLearner",
    "ContextTrainer",
    "check_class_token_position",
    "class_token_order",
    "context_length_from_init",
]

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
# Class-dependent buffers the official prompt learners save and their load_model drops.
OFFICIAL_CLASS_BUFFERS = ("token_prefix", "token_suffix", "token_midfix")


def context_length_from_init(ctx_init: str, n_ctx: int) -> int:
    """CoOp/CoCoOp rule: a non-empty ``CTX_INIT`` sets the context length to its number of words."""
    words = ctx_init.replace("_", " ").split()
    return len(words) if words else n_ctx


def check_class_token_position(position: str) -> None:
    """Raise naming ``TRAINER.COOP.CLASS_TOKEN_POSITION`` and its choices unless ``position`` is one."""
    if position not in CLASS_TOKEN_POSITIONS:
        raise ValueError(
            f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {position!r}"
        )


def class_token_order(position: str, n_ctx: int, name_lens: Sequence[int], length: int) -> Tensor:
    """Per-class permutation (C, length) from the ``end`` layout to ``position``'s layout.

    In the ``end`` layout of class ``c`` positions ``1..n_ctx`` hold the context and the next
    ``name_lens[c]`` positions the class name; ``middle`` and ``front`` only reorder those positions
    (SOS, the period, EOT and padding keep their places, so the EOT index is unchanged).
    """
    check_class_token_position(position)
    rows = []
    for name_len in name_lens:
        ctx = list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        if position == "end":
            middle = ctx + name
        elif position == "middle":
            half = n_ctx // 2
            middle = ctx[:half] + name + ctx[half:]
        else:
            middle = name + ctx
        rows.append([0, *middle, *range(1 + n_ctx + name_len, length)])
    return torch.tensor(rows, dtype=torch.long)


class CoOpPromptLearner(nn.Module):
    """The learnable context: (n_ctx, width) unified or (n_cls, n_ctx, width) class-specific.

    ``forward()`` returns a :class:`PromptPlan` with only ``text_ctx``: the image tower stays vanilla.
    As in the official code, a word initialisation (``ctx_init``) always gives a unified context (CSC
    applies to random initialisation only) and sets ``n_ctx`` to the number of words.
    """

    learns_text = True

    def __init__(self, clip_model: nn.Module, n_cls: int, n_ctx: int, ctx_init: str, csc: bool) -> None:
        super().__init__()
        n_ctx = context_length_from_init(ctx_init, n_ctx)
        if ctx_init.strip():
            if csc:
                print("Note: CTX_INIT is set, so the context is unified (CSC applies to random init only)")
            ctx, self.prompt_prefix = init_context(clip_model, n_ctx, ctx_init)
        elif csc:
            print("Initializing class-specific contexts")
            ctx = torch.empty(n_cls, n_ctx, clip_model.text_width)
            nn.init.normal_(ctx, std=CONTEXT_STD)
            self.prompt_prefix = " ".join(["X"] * n_ctx)
        else:
            print("Initializing a generic context")
            ctx, self.prompt_prefix = init_context(clip_model, n_ctx, "")
        print(f'Initial context: "{self.prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)

    @property
    def class_specific(self) -> bool:
        return self.ctx.dim() == 3

    def forward(self) -> PromptPlan:
        return PromptPlan(text_ctx=self.ctx)


class CoOpCLIP(PromptedCLIP):
    """:class:`PromptedCLIP` whose class prompts put the class name where ``class_token_position`` says."""

    def __init__(
        self,
        clip_model: nn.Module,
        prompt_learner: nn.Module,
        classnames: Sequence[str],
        class_token_position: str = "end",
    ) -> None:
        self.class_token_position = class_token_position
        super().__init__(clip_model, prompt_learner, classnames)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        learner = self.prompt_learner
        if getattr(learner, "class_specific", False) and learner.ctx.shape[0] != len(classnames):
            raise ValueError(
                f"class-specific context (CSC) holds {learner.ctx.shape[0]} classes but the label space has "
                f"{len(classnames)}: CSC prompts exist only for the classes they were trained on"
            )
        super().set_classnames(classnames)
        name_lens = [len(clip.encode(name.replace("_", " "))) for name in classnames]
        order = class_token_order(
            self.class_token_position, learner.n_ctx, name_lens, self.token_ids.shape[1]
        )
        self.register_buffer("token_order", order.to(self.token_ids.device), persistent=False)

    def class_prompts(self, ctx: Tensor) -> Tensor:
        """Embedded class prompts (C, 77, width) for context ``ctx`` (n, width) or (C, n, width)."""
        prompts = assemble_prompts(self.token_prefix, ctx, self.token_suffix)
        if self.class_token_position == "end":
            return prompts
        index = self.token_order.unsqueeze(-1).expand(-1, -1, prompts.shape[-1])
        return torch.gather(prompts, 1, index)

    def encode_class_prompts(self, ctx: Tensor, head: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """Normalised class features (C, embed_dim), fp32 (fp64 in an fp64 model), for context ``ctx``;
        ``head`` maps the raw features first (a plan's ``text_head``)."""
        features = self.clip.encode_text_embeddings(self.class_prompts(ctx), self.eot_indices)
        if head is not None:
            features = head(features)
        return nn.functional.normalize(clip.at_least_fp32(features), dim=-1)

    def encode_text(self, plan: PromptPlan) -> Tensor:
        return self.encode_class_prompts(plan.text_ctx, plan.text_head)

    def official_state_dict(self) -> OrderedDict:
        """What the official CoOp/CoCoOp save for their ``prompt_learner``: the learner's trainable tensors
        under their own names (``ctx``, ``meta_net.*``) plus the class buffers ``token_prefix``/``token_suffix``,
        so the official ``load_model`` (which drops the buffers) and Dassl's strict resume both read it."""
        prefix = "prompt_learner."
        state = OrderedDict(
            (k[len(prefix) :] if k.startswith(prefix) else k, v) for k, v in self.trainable_state_dict().items()
        )  # tensors outside the learner (DePT's head) keep their names
        state["token_prefix"] = self.token_prefix
        state["token_suffix"] = self.token_suffix
        return state

    def translate_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Read the official layout (:meth:`official_state_dict`) as ours: the class buffers are dropped
        (rebuilt for the current label space, as the official ``load_model`` does) and the learner's keys
        get their ``prompt_learner.`` prefix; keys already in our layout pass unchanged."""
        own = set(self.state_dict())
        return {
            ("prompt_learner." + k if "prompt_learner." + k in own else k): v
            for k, v in state_dict.items()
            if k not in OFFICIAL_CLASS_BUFFERS
        }  # a key outside the learner (DePT's head and its extra state) keeps its name

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # noqa: ANN201
        """As :class:`PromptedCLIP`, for our layout or the official one, with a clear error when a CSC
        checkpoint meets another label space."""
        state_dict = self.translate_state_dict(state_dict)
        ctx = state_dict.get("prompt_learner.ctx")
        own = self.prompt_learner.ctx
        if ctx is not None and ctx.shape != own.shape:
            raise ValueError(
                f"checkpoint context has shape {tuple(ctx.shape)}, this model's has {tuple(own.shape)} "
                "(class-specific contexts only load for the label space they were trained on; check "
                "the N_CTX / CSC / CTX_INIT of TRAINER.COOP or TRAINER.COCOOP)"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_input_size(cfg: Any, clip_model: nn.Module) -> None:
    """CoOp/CoCoOp feed images at the backbone's resolution (the official prompt learners assert this)."""
    if cfg.INPUT.SIZE[0] != clip_model.image_resolution:
        raise ValueError(
            f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the input resolution "
            f"{clip_model.image_resolution} of backbone {cfg.MODEL.BACKBONE.NAME}"
        )


class ContextTrainer(DeepPromptTrainer):
    """Shared by CoOp and CoCoOp: the model is a :class:`CoOpCLIP` (or subclass) built by :meth:`build_clip_model`.

    Checkpoints go to ``prompt_learner/`` (the official folder) in the official layout (``ctx``, ``meta_net.*``,
    ``token_prefix``, ``token_suffix``; :meth:`CoOpCLIP.official_state_dict`), so the official ``coop.py`` /
    ``cocoop.py`` and real Dassl read them; files of either layout load here. ``MODEL.INIT_WEIGHTS`` is
    loaded into the prompt learner, as the official trainers do.
    """

    MODEL_NAME = "prompt_learner"
    INIT_WEIGHTS_INTO_LEARNER = True

    def build_clip_model(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        raise NotImplementedError

    def model_state_dict(self, name: str) -> OrderedDict:
        """The official layout for the CoOp/CoCoOp models; ours for a subclass's model without one (TCP)."""
        official = getattr(self._models[name], "official_state_dict", None)
        return official() if official is not None else super().model_state_dict(name)

    def build_custom_clip(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        check_input_size(self.cfg, clip_model)
        print("Building custom CLIP")
        return self.build_clip_model(clip_model, classnames)


@TRAINER_REGISTRY.register()
class CoOp(ContextTrainer):
    """Context Optimization: ``N_CTX`` learnable tokens (or the words of ``CTX_INIT``), cross-entropy."""

    CFG_NAME = "COOP"

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        check_class_token_position(cfg.TRAINER.COOP.CLASS_TOKEN_POSITION)

    def build_clip_model(self, clip_model: nn.Module, classnames: list[str]) -> PromptedCLIP:
        c = self.method_cfg
        learner = CoOpPromptLearner(clip_model, len(classnames), c.N_CTX, c.CTX_INIT, c.CSC)
        return CoOpCLIP(clip_model, learner, classnames, c.CLASS_TOKEN_POSITION)

"""The CLIP model (OpenAI's constructor and parameter names) and its weight precisions.

Its parts live in their own modules: transformer blocks and hooks (clip/blocks.py), attention probes
(clip/probes.py), prefix attention (clip/prefix_attention.py), image towers (clip/towers.py). Every public
name this module held before the split is still importable from here (``clip.model.convert_weights``,
``clip.model.CLIP``, ...), so code ported from OpenAI's and CoOp's packages keeps working.
Parameter and buffer names are OpenAI's exactly, so OpenAI and open_clip state dicts load unchanged.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import Attention, BlockInput, Hook, LayerNorm, QuickGELU, ResidualAttentionBlock, Transformer
from .prefix_attention import PrefixAttention, PrefixedProjection, Projection
from .probes import Probed, QueryRows
from .towers import AttentionPool2d, Bottleneck, ModifiedResNet, VisionTransformer

__all__ = [
    "ACTIVATIONS",
    "CLIP",
    "PRECISIONS",
    "Attention",
    "AttentionPool2d",
    "BlockInput",
    "Bottleneck",
    "Hook",
    "LayerNorm",
    "ModifiedResNet",
    "PrefixAttention",
    "PrefixedProjection",
    "Probed",
    "Projection",
    "QueryRows",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "at_least_fp32",
    "convert_weights",
    "to_precision",
]

# The MLP activations of the CLIP family: OpenAI's weights were trained with QuickGELU, most of open_clip's
# with the exact GELU.
ACTIVATIONS: dict[str, type[nn.Module]] = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class CLIP(nn.Module):
    """CLIP with OpenAI's constructor signature and parameter names; batch-first towers with hooks.

    The keyword-only arguments describe the rest of the CLIP family (open_clip's configs,
    clip/open_clip_backbone.py): image heads when they are not width // 64, MLP width ratios, the MLP
    activation ("quick_gelu" as OpenAI's weights, or "gelu"), and an optional logit bias.

    ``vision_layers`` is the OpenAI argument: an int (ViT depth) or a 4-tuple (ResNet stage depths).
    After construction the attribute ``vision_layers`` is the number of hookable image blocks (0 for
    ResNet) and ``vision_stage_layers`` keeps the ResNet tuple.
    """

    def __init__(
        self,
        embed_dim: int,
        image_resolution: int,
        vision_layers: Union[int, tuple[int, int, int, int]],
        vision_width: int,
        vision_patch_size: Optional[int],
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
        *,
        vision_heads: Optional[int] = None,
        vision_mlp_ratio: float = 4.0,
        text_mlp_ratio: float = 4.0,
        activation: str = "quick_gelu",
        logit_bias: Optional[float] = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        self.activation = activation
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.text_width = transformer_width
        self.text_layers = transformer_layers
        self.vision_width = vision_width
        self.image_resolution = image_resolution
        self.visual: Union[VisionTransformer, ModifiedResNet]
        if isinstance(vision_layers, (tuple, list)):
            heads = vision_heads or vision_width * 32 // 64
            self.visual = ModifiedResNet(
                tuple(vision_layers), embed_dim, heads, image_resolution, vision_width
            )
            self.vision_layers = 0
            self.vision_stage_layers: Optional[tuple[int, ...]] = tuple(vision_layers)
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower needs vision_patch_size")
            heads = vision_heads or vision_width // 64
            self.visual = VisionTransformer(
                image_resolution, vision_patch_size, vision_width, vision_layers, heads, embed_dim,
                vision_mlp_ratio, act,
            )  # fmt: skip
            self.vision_layers = vision_layers
            self.vision_stage_layers = None
        self.transformer = Transformer(
            transformer_width, transformer_layers, transformer_heads, causal=True, mlp_ratio=text_mlp_ratio,
            activation=act,
        )  # fmt: skip
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # A constant added to every logit (open_clip configs with ``init_logit_bias``); softmax and argmax
        # over classes ignore it, so the trainers, which compute their own logits, need not add it.
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))
        # Default of ``trim`` in the text encoders; False runs all 77 positions as the official code does
        # (the benchmark's "before", docs/PERFORMANCE.md).
        self.trim_text = True
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (used only for random backbones; checkpoints overwrite it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(proj.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the frozen towers (fp16 after ``to_precision(model, "fp16")``)."""
        return self.visual.conv1.weight.dtype

    def encode_image(
        self, images: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> Tensor:
        """Image features (N, embed_dim), not normalised; see ``VisionTransformer.forward`` for prompts."""
        return self.visual(images.to(self.dtype), prompts, hook)

    def encode_image_tokens(
        self, images: Tensor, prompts: Optional[Tensor] = None, hook: Optional[Hook] = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`encode_image` plus the last block's output tokens (ViT only)."""
        if not isinstance(self.visual, VisionTransformer):
            raise ValueError("encode_image_tokens needs a ViT image tower, not a ResNet")
        return self.visual.forward_tokens(images.to(self.dtype), prompts, hook)

    def encode_text(
        self, token_ids: Tensor, hook: Optional[Hook] = None, trim: Optional[bool] = None
    ) -> Tensor:
        """Text features (N, embed_dim) of tokenized texts; EOT is the largest id in each row."""
        x = self.token_embedding(token_ids)
        return self.encode_text_embeddings(x, token_ids.argmax(dim=-1), hook=hook, trim=trim)

    def encode_text_embeddings(
        self,
        x: Tensor,
        eot_indices: Tensor,
        hook: Optional[Hook] = None,
        trim: Optional[bool] = None,
        eot_offset: int = 0,
    ) -> Tensor:
        """Text features from embedded tokens ``x`` (N, L, width); positional embedding is added here.

        ``eot_offset``: how many tokens the hook inserts before every EOT (MMRL's representation tokens
        after SOS); the features are read at ``eot_indices + eot_offset``.

        ``trim`` cuts the sequence after the last EOT before the blocks: exact under the causal mask
        (no position attends to later ones), and the hook then sees the shorter sequence. None means
        the model's ``trim_text`` (True unless a benchmark switched it off).
        """
        if x.dim() != 3 or x.shape[-1] != self.text_width or x.shape[1] > self.context_length:
            raise ValueError(
                f"text embeddings must be (N, L<={self.context_length}, {self.text_width}), got {tuple(x.shape)}"
            )
        eot_indices = torch.as_tensor(eot_indices, device=x.device).long().reshape(-1)
        if eot_indices.shape[0] != x.shape[0]:
            raise ValueError(f"eot_indices has {eot_indices.shape[0]} entries for {x.shape[0]} sequences")
        x = x.to(self.dtype) + self.positional_embedding[: x.shape[1]].to(self.dtype)
        trim = self.trim_text if trim is None else trim
        if trim:
            x = x[:, : int(eot_indices.max()) + 1]
        x = self.ln_final(self.transformer(x, hook, batch_first=True))
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, eot_indices + eot_offset] @ self.text_projection.to(x.dtype)

    def forward(self, images: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
        """OpenAI's contrastive logits: (logits_per_image, logits_per_text)."""
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(token_ids), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.t()


PRECISIONS = ("fp16", "fp32", "amp", "amp_bf16", "fp64")


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32 if it is fp16/bf16, else unchanged: features leave fp16 towers in fp32, while an
    fp64 model stays fp64 end to end (``PREC fp64``, the exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def convert_weights(model: nn.Module) -> None:
    """OpenAI's ``clip.model.convert_weights``: halve, in place, what its released weights store in fp16.

    Conv/linear/attention weights and biases and the ``text_projection`` / ``proj`` matrices of any module
    tree (a CLIP or a part of one); LayerNorm/BatchNorm, embeddings and ``logit_scale`` stay as they are.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        elif isinstance(module, Attention):
            module.in_proj_weight.data = module.in_proj_weight.data.half()
            module.in_proj_bias.data = module.in_proj_bias.data.half()
        for name in ("text_projection", "proj"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, nn.Parameter):
                tensor.data = tensor.data.half()


def to_precision(model: CLIP, prec: str) -> CLIP:
    """Set the weight precision the configs' ``PREC`` asks for and return the model.

    ``fp16`` halves what OpenAI's released weights store in fp16 (:func:`convert_weights`: conv/linear/
    attention weights and the two projections); LayerNorm/BatchNorm, embeddings and ``logit_scale`` stay
    fp32 and are cast on use. ``fp32``, ``amp`` and ``amp_bf16`` keep fp32 weights (the two ``amp``
    choices mean the trainer wraps the training forward in fp16 / bf16 autocast,
    ``trainers.base.autocast_context``). ``fp64`` makes every floating tensor float64 (exactness checks
    against float64 references, not for training).
    """
    if prec not in PRECISIONS:
        raise ValueError(f"precision {prec!r} is not one of {PRECISIONS}")
    if prec == "fp64":
        return model.double()
    model.float()
    if prec == "fp16":
        convert_weights(model)
    return model

"""Build a CLIP from a backbone name, a checkpoint path, or random weights of a known shape."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import torch

from .compound import apply_design, check_design_details, is_block_prompt_key
from .model import CLIP, VisionTransformer, convert_weights
from .open_clip_backbone import OPEN_CLIP_PREFIX, build_open_clip, image_preprocess
from .pretrained import _MODELS, METADATA_KEYS, _download, read_state_dict
from .toy import TOY_PREFIX, build_toy_clip
from .transform import image_transform

logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"

# Set (to anything but empty/0/false/no) to make the OpenAI-API entry points return fp16 weights as
# OpenAI's do: ``build_model`` always, ``load`` on a non-CPU device. The Dassl launcher
# (``python -m tools.dassl_run``) sets it, so trainer files that ``.half()`` their own modules under
# ``PREC fp16`` meet fp16 towers; our trainers use ``build_clip`` and never see it.
OPENAI_FP16_ENV = "CLIP_OPENAI_FP16"


def openai_fp16() -> bool:
    """Whether ``build_model`` / ``load`` return OpenAI's fp16 weights (:data:`OPENAI_FP16_ENV`)."""
    return os.environ.get(OPENAI_FP16_ENV, "").strip().lower() not in ("", "0", "false", "no")

# Constructor arguments of the released architectures (OpenAI's shapes) plus a tiny test model.
ARCHS: dict[str, dict[str, Any]] = {
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "RN101": dict(embed_dim=512, image_resolution=224, vision_layers=(3, 4, 23, 3), vision_width=64,
                  vision_patch_size=None, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, transformer_width=768, transformer_heads=12, transformer_layers=12),
    "ViT-L/14@336px": dict(embed_dim=768, image_resolution=336, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, transformer_width=768, transformer_heads=12,
                           transformer_layers=12),
    # 12 blocks per tower so every paper config (prompt depth 9, 12) runs unchanged; widths are multiples
    # of 64 so that build_model re-infers the head counts (width // 64) from a saved state dict.
    "tiny": dict(embed_dim=64, image_resolution=224, vision_layers=12, vision_width=192,
                 vision_patch_size=32, transformer_width=128, transformer_heads=2, transformer_layers=12),
    # Two blocks of width 64 per tower at 32x32 pixels: fast tests of CoOp-style code (no prompt depth).
    "micro": dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64,
                  vision_patch_size=16, transformer_width=64, transformer_heads=1, transformer_layers=2),
}
_TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408)


def openai_layout(model: CLIP) -> CLIP:
    """Make direct calls of the towers' ``transformer`` take and return OpenAI's (L, N, D) layout.

    What the OpenAI-API entry points return, so CoOp-style code (``x.permute(1, 0, 2)`` ->
    ``clip_model.transformer(x)`` -> ``permute`` back) computes what OpenAI's CLIP computes;
    ``encode_image`` / ``encode_text`` / hooks are unaffected.
    """
    model.transformer.batch_first = False
    if isinstance(model.visual, VisionTransformer):
        model.visual.transformer.batch_first = False
    return model


def build_model(state_dict: dict[str, torch.Tensor], design_details: Optional[Mapping[str, Any]] = None) -> CLIP:
    """OpenAI-compatible ``clip.build_model``: the CLIP of an OpenAI-layout state dict, with OpenAI's
    (L, N, D) layout for direct ``transformer`` calls (:func:`openai_layout`). Weights are fp32, or
    OpenAI's fp16 (:func:`~clip.model.convert_weights`) when :func:`openai_fp16` is on.
    ``design_details``: the MaPLe repository's second argument (CoOp, CoCoOp, MaPLe, IVLP and VPT designs;
    see ``clip/compound.py``). For IVLP/VPT the model holds the design's learnable prompts (fp32 in
    either case, as theirs), taken from ``state_dict`` where it has them."""
    check_design_details(design_details)
    prompts = {k: v for k, v in state_dict.items() if is_block_prompt_key(k)}
    weights = {k: v for k, v in state_dict.items() if k not in prompts}
    model = apply_design(openai_layout(_from_state_dict(weights)), design_details, prompts)
    if openai_fp16():
        convert_weights(model)
    return model


def _from_state_dict(state_dict: dict[str, torch.Tensor]) -> CLIP:
    """A batch-first CLIP whose shapes are inferred from an OpenAI-layout state dict, weights in fp32.

    Head counts follow OpenAI's rule (width // 64). The model is built on the meta device and the
    tensors are copied in (never aliasing the caller's), so no random initialisation is wasted on large
    backbones.
    """
    sd = {k: v for k, v in state_dict.items() if k not in METADATA_KEYS}
    try:
        if "visual.proj" in sd:
            vision_width = sd["visual.conv1.weight"].shape[0]
            vision_layers: Union[int, tuple[int, ...]] = sum(
                1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")
            )
            vision_patch_size: Optional[int] = sd["visual.conv1.weight"].shape[-1]
            grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            image_resolution = vision_patch_size * grid
        else:
            vision_layers = tuple(
                len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)
            )
            vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
            output_width = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision_patch_size = None
            image_resolution = output_width * 32
        transformer_width = sd["ln_final.weight"].shape[0]
        config = dict(
            embed_dim=sd["text_projection"].shape[1],
            image_resolution=image_resolution,
            vision_layers=vision_layers,
            vision_width=vision_width,
            vision_patch_size=vision_patch_size,
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0],
            transformer_width=transformer_width,
            transformer_heads=transformer_width // 64,
            transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        )
    except KeyError as error:
        raise ValueError(f"not an OpenAI CLIP state dict: key {error} is missing") from error
    with torch.device("meta"):
        model = CLIP(**config)
    weights = {k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in sd.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def _build_random(arch: str, seed: int) -> CLIP:
    if arch not in ARCHS:
        raise ValueError(f"unknown random architecture {arch!r}; expected one of {sorted(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**ARCHS[arch], **_TEXT_DEFAULTS)
    logger.info("CLIP backbone %s%s has RANDOM weights (seed %d): results are not meaningful",
                RANDOM_PREFIX, arch, seed)
    return model.eval()


def _checkpoint_path(name_or_path: str, download_root: Optional[str]) -> str:
    if name_or_path in _MODELS:
        return _download(_MODELS[name_or_path], download_root)
    if os.path.isfile(name_or_path):
        return name_or_path
    raise ValueError(
        f"CLIP backbone {name_or_path!r} is neither a released model {list(_MODELS)}, an existing "
        f"checkpoint file, '{RANDOM_PREFIX}<arch>' with arch in {sorted(ARCHS)}, "
        f"'{OPEN_CLIP_PREFIX}<model>/<pretrained>', nor '{TOY_PREFIX}clip'"
    )


def build_clip(backbone: str, *, download_root: Optional[str] = None, seed: int = 0) -> CLIP:
    """The fp32 CLIP in eval mode named by ``backbone`` (``requires_grad`` left as constructed).

    ``backbone``: an OpenAI name (``ViT-B/16``, ``RN50``, ...), a checkpoint path (TorchScript archive or
    state dict), ``random:<arch>`` / ``random:tiny`` for seeded random weights of that shape,
    ``open_clip:<model>/<pretrained tag or path>`` for open_clip's CLIP family (clip/open_clip_backbone.py;
    ``download_root`` is then open_clip's cache dir), or ``toy:clip`` for the small CLIP this project
    pretrains and ships (clip/toy.py).
    """
    if backbone.startswith(OPEN_CLIP_PREFIX):
        return build_open_clip(backbone, cache_dir=download_root)
    if backbone.startswith(TOY_PREFIX):
        return build_toy_clip(backbone[len(TOY_PREFIX):])
    if backbone.startswith(RANDOM_PREFIX):
        return _build_random(backbone[len(RANDOM_PREFIX):], seed)
    path = _checkpoint_path(backbone, download_root)
    try:
        model = _from_state_dict(read_state_dict(path))
    except ValueError as e:
        raise ValueError(
            f"CLIP backbone file {path}: {e} (a trained prompt checkpoint such as model.pth.tar-N is loaded "
            "with --eval-only --model-dir DIR, not as the backbone)"
        ) from e
    logger.info("Loaded CLIP backbone %s from %s", backbone, path)
    return model


def load(
    name: str,
    device: Union[str, torch.device] = "cpu",
    jit: bool = False,
    download_root: Optional[str] = None,
) -> tuple[CLIP, Callable[[Any], torch.Tensor]]:
    """OpenAI-compatible ``clip.load``: (fp32 model on ``device`` in eval mode, image preprocess); fp16
    weights off the CPU when :func:`openai_fp16` is on, as OpenAI's. For an ``open_clip:`` name the
    preprocess is open_clip's own for that pretrained tag.

    As OpenAI's, direct ``transformer`` calls take (L, N, D) (:func:`openai_layout`). Only the eager
    model exists here (hooks need it), so ``jit=True`` is refused rather than ignored.
    """
    if jit:
        raise ValueError("clip.load(jit=True) is not supported: this CLIP runs eagerly so hooks can act")
    model = openai_layout(build_clip(name, download_root=download_root))
    if openai_fp16() and torch.device(device).type != "cpu":
        convert_weights(model)
    if name.startswith(OPEN_CLIP_PREFIX):
        return model.to(device), image_preprocess(name)
    return model.to(device), image_transform(model.image_resolution)


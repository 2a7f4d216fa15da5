"""open_clip's CLIP family in this project's hookable CLIP: ``open_clip:<model>/<pretrained>``.

``<model>`` is an open_clip model config name (``ViT-B-16``, ``ViT-L-14-quickgelu``, ...) and ``<pretrained>``
one of its pretrained tags (``laion2b_s34b_b88k``), fetched and cached by open_clip's own registry and
downloader, or a local checkpoint path: the first ``/`` after the model name separates the two, so an
absolute path reads ``open_clip:ViT-B-32//data/weights.pt``.

Everything that differs between families is read from open_clip's config: widths, depths, heads, MLP
ratios, activation (GELU, or QuickGELU where the config or the pretrained tag asks for it), context
length, logit bias, and the preprocessing of the pretrained tag (size, mean/std, interpolation, resize
mode). A config our blocks cannot compute exactly is refused with one line naming what it needs
(:func:`lacking`); :func:`supported_models` is computed from open_clip's configs with the same test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Optional

import open_clip
import open_clip.factory
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from .model import CLIP
from .pretrained import METADATA_KEYS, WeightsUnavailableError, _is_torchscript, read_state_dict
from .tokenizer import _tokenizer

logger = logging.getLogger(__name__)

OPEN_CLIP_PREFIX = "open_clip:"
# The prompt trainers tokenize with clip.tokenize: CLIP's BPE, 77 tokens, EOT the largest id.
_CLIP_CONTEXT_LENGTH = 77
_CUSTOM_BLOCK_FLAGS = (
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
)


def parse_name(backbone: str) -> tuple[str, str]:
    """(model, pretrained tag or path) of ``open_clip:<model>/<pretrained>``."""
    model, _, pretrained = backbone[len(OPEN_CLIP_PREFIX) :].partition("/")
    if not model or not pretrained:
        raise ValueError(
            f"CLIP backbone {backbone!r}: expected {OPEN_CLIP_PREFIX}<model>/<pretrained tag or checkpoint path>, "
            f"e.g. {OPEN_CLIP_PREFIX}ViT-B-16/laion2b_s34b_b88k"
        )
    return model, pretrained


def towers_config(model_cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The vision and text settings of an open_clip model config, open_clip's defaults filled in."""
    return (
        {**asdict(CLIPVisionCfg()), **model_cfg.get("vision_cfg", {})},
        {**asdict(CLIPTextCfg()), **model_cfg.get("text_cfg", {})},
    )


def lacking(model_cfg: dict[str, Any]) -> list[str]:
    """What an open_clip model config needs that this project's CLIP does not compute; empty if supported."""
    v, t = towers_config(model_cfg)
    image_size = v["image_size"]
    blocks = [f for f in _CUSTOM_BLOCK_FLAGS if v.get(f) or t.get(f)]
    checks = [
        ("multimodal_cfg" in model_cfg, "a captioning text decoder (CoCa)"),
        (bool(v["timm_model_name"]), f"a timm image tower ({v['timm_model_name']})"),
        (bool(t["hf_model_name"]), f"a Hugging Face text tower ({t['hf_model_name']})"),
        (v["attentional_pool"], "attentional pooling"),
        (v["pool_type"] != "tok", f"image pooling {v['pool_type']!r} (only the class token is pooled)"),
        (v["final_ln_after_pool"] or t["final_ln_after_pool"], "LayerNorm after pooling"),
        (v["no_ln_pre"], "an image tower without ln_pre"),
        (v["pos_embed_type"] != "learnable", f"{v['pos_embed_type']} position embeddings"),
        (v["ls_init_value"] is not None or t["ls_init_value"] is not None, "layer scale"),
        (v["patch_dropout"] > 0, "patch dropout"),
        (bool(blocks) or v["block_type"] not in (None, "default") or t["block_type"] not in (None, "default"),
         f"custom attention blocks ({', '.join(blocks) or v['block_type'] or t['block_type']})"),
        (bool(v["act_kwargs"] or t["act_kwargs"] or v["norm_kwargs"] or t["norm_kwargs"]),
         "activation or LayerNorm arguments"),
        (t["no_causal_mask"], "a text tower without causal mask"),
        (t["embed_cls"], "a learned text CLS token"),
        (t["pool_type"] != "argmax", f"text pooling {t['pool_type']!r} (only at the EOT token, 'argmax')"),
        (t["proj_type"] != "linear" or t["proj_bias"], "a text projection other than a bias-free matrix"),
        (bool(t["hf_tokenizer_name"] or t["tokenizer_kwargs"] or t["tokenizer_mode"])
         or t["vocab_size"] != len(_tokenizer().encoder), "a tokenizer other than CLIP's BPE"),
        (t["context_length"] != _CLIP_CONTEXT_LENGTH,
         f"a context length of {t['context_length']} (the prompt trainers tokenize to {_CLIP_CONTEXT_LENGTH})"),
        (bool(model_cfg.get("nonscalar_logit_scale")), "a non-scalar logit scale"),
        (isinstance(image_size, (tuple, list)) and len(set(image_size)) > 1, f"non-square images {image_size}"),
    ]  # fmt: skip
    return [what for failed, what in checks if failed]


def model_config(model: str) -> dict[str, Any]:
    """open_clip's config of ``model``, refused in one line when unknown or not computable here."""
    model_cfg = open_clip.get_model_config(model)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model {model!r}; supported: {', '.join(supported_models())}")
    missing = lacking(model_cfg)
    if missing:
        raise ValueError(f"open_clip model {model!r} is not supported: it needs {'; '.join(missing)}")
    return model_cfg


def supported_models() -> list[str]:
    """open_clip's model configs this project's CLIP computes exactly (computed, not listed by hand)."""
    return [m for m in open_clip.list_models() if not lacking(open_clip.get_model_config(m))]


def _tag_config(model: str, pretrained: str) -> dict[str, Any]:
    """open_clip's pretrained config for a tag of ``model``; empty for a local checkpoint path."""
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if tag_cfg:
        return tag_cfg
    if os.path.isfile(pretrained):
        return {}
    raise ValueError(
        f"open_clip model {model!r}: {pretrained!r} is neither one of its pretrained tags "
        f"{open_clip.list_pretrained_tags_by_model(model)} nor an existing checkpoint file"
    )


def clip_arguments(model_cfg: dict[str, Any], quick_gelu: bool) -> dict[str, Any]:
    """Constructor arguments of :class:`clip.model.CLIP` for a supported open_clip config."""
    v, t = towers_config(model_cfg)
    image_size = v["image_size"]
    resnet = isinstance(v["layers"], (tuple, list))
    return dict(
        embed_dim=model_cfg["embed_dim"],
        image_resolution=image_size[0] if isinstance(image_size, (tuple, list)) else image_size,
        vision_layers=tuple(v["layers"]) if resnet else v["layers"],
        vision_width=v["width"],
        vision_patch_size=None if resnet else v["patch_size"],
        context_length=t["context_length"],
        vocab_size=t["vocab_size"],
        transformer_width=t["width"],
        transformer_heads=t["heads"],
        transformer_layers=t["layers"],
        vision_heads=v["width"] * 32 // v["head_width"] if resnet else v["width"] // v["head_width"],
        vision_mlp_ratio=v["mlp_ratio"],
        text_mlp_ratio=t["mlp_ratio"],
        activation="quick_gelu" if quick_gelu else "gelu",
        logit_bias=model_cfg.get("init_logit_bias"),
    )


def preprocess_config(backbone: str) -> dict[str, Any]:
    """open_clip's evaluation preprocessing of ``open_clip:<model>/<pretrained>`` (a PreprocessCfg dict):
    the tag's mean/std/interpolation/resize mode, open_clip's defaults for a local file, the config's size."""
    model, pretrained = parse_name(backbone)
    model_cfg = model_config(model)
    size = clip_arguments(model_cfg, False)["image_resolution"]
    return merge_preprocess_dict({**asdict(PreprocessCfg()), "size": size}, _tag_config(model, pretrained))


def image_preprocess(backbone: str) -> Callable[[Any], torch.Tensor]:
    """open_clip's own evaluation transform for the backbone (what ``clip.load`` returns for it)."""
    return image_transform_v2(PreprocessCfg(**preprocess_config(backbone)), is_train=False)


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    """open_clip's reader (safetensors, nested or ``module.``-prefixed state dicts); ours for TorchScript
    archives (the ``openai`` tags), which open_clip reads through a separate loader."""
    if _is_torchscript(path):
        state = read_state_dict(path)
    else:
        try:
            state = open_clip.factory.load_state_dict(path)
        except Exception as error:  # noqa: BLE001  (torch, safetensors and pickle raise many types)
            raise WeightsUnavailableError(
                f"{path} is not a readable open_clip checkpoint ({error})"
            ) from error
    drop = (*METADATA_KEYS, "attn_mask", "text.attn_mask")
    # CustomTextCLIP keeps the text tower under ``text.``; this CLIP keeps OpenAI's top-level names.
    return {k.removeprefix("text."): v for k, v in state.items() if k not in drop}


def _mismatch(model: CLIP, state: dict[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("wrong shapes (file vs model)", shapes),
    ):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            problems.append(f"{label} {', '.join(keys[:5])}{more}")
    return problems


def build_open_clip(backbone: str, cache_dir: Optional[str] = None) -> CLIP:
    """The fp32 CLIP in eval mode named ``open_clip:<model>/<pretrained>``, its open_clip preprocessing in
    ``model.preprocess_cfg``."""
    model_name, pretrained = parse_name(backbone)
    model_cfg = model_config(model_name)
    tag_cfg = _tag_config(model_name, pretrained)
    # open_clip only warns when a tag trained with QuickGELU is built without it; the weights decide here.
    quick_gelu = bool(model_cfg.get("quick_gelu") or tag_cfg.get("quick_gelu"))
    if tag_cfg:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001  (urllib and huggingface_hub raise many types)
            raise WeightsUnavailableError(
                f"could not fetch open_clip weights {model_name}/{pretrained} ({type(error).__name__}: {error}); "
                f"offline, pass the checkpoint file instead: {OPEN_CLIP_PREFIX}{model_name}/<path>"
            ) from error
        if not path:
            raise WeightsUnavailableError(f"open_clip has no download for {model_name}/{pretrained}")
    else:
        path = pretrained
    state = _read_weights(path)
    with torch.device("meta"):
        model = CLIP(**clip_arguments(model_cfg, quick_gelu))
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(())
    problems = _mismatch(model, state)
    if problems:
        raise ValueError(
            f"checkpoint {path} does not fit open_clip model {model_name}: {'; '.join(problems)}"
        )
    weights = {
        k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()
    }
    model.load_state_dict(weights, strict=True, assign=True)
    model.preprocess_cfg = preprocess_config(backbone)
    logger.info("Loaded open_clip backbone %s from %s (%s)", backbone, path, model.activation)
    return model.eval()

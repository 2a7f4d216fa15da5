"""Read checkpoints published by the official CoOp, CoCoOp, MaPLe and BMIP repositories into this project's layout.

The official trainers register the whole ``CustomCLIP`` (``MultiModalPromptLearner``), so their files hold
the frozen CLIP (fp16) next to the prompt tensors, keep BMIP's gates inside the CLIP blocks, store a few
tensors no forward pass uses, and pickle the scheduler object. This module maps such a state dict onto the
trainable tensors of our ``MaPLe`` / ``BMIP`` trainers (fp32) and writes an ordinary checkpoint of ours,
which ``train.py --eval-only --model-dir OUT --load-epoch E`` then evaluates. Key mapping:

* CoOp / CoCoOp: the official trainers register the prompt learner alone (folder ``prompt_learner``);
  ``ctx`` and ``meta_net.*`` -> ``prompt_learner.ctx`` / ``prompt_learner.meta_net.*``, the class buffers
  ``token_prefix/suffix`` dropped (our trainers also read such a file directly; converting once drops
  the pickled scheduler).
* MaPLe: ``prompt_learner.{ctx, proj, compound_prompts_text.j, compound_prompt_projections.j}`` keep their
  names (ours are the official ones).
* BMIP: the prompt learner's tensors keep their names, except ``ctx_v`` (77 x d_v in the release, of which
  only the first N_CTX rows are used) -> its first N_CTX rows. With shared vision prompts the release's
  ``compound_prompts_visual.k`` (aliases of those rows when built, separate tensors once the model is
  moved to a GPU, so trained apart there) are kept: they are what the release's forward uses, and
  the prompt learner loads them in any ``TRAINER.BMIP.SHARED_VISION_PROMPT`` mode that can hold
  them (``copies``; ``tied``/``aliased`` only while all are equal). The gates move from the blocks
  to the prompt learner: ``image_encoder.transformer.resblocks.b.learnable_linear1`` ->
  ``prompt_learner.gates_v.(b-1)`` and ``text_encoder.transformer.resblocks.b.learnable_linear2`` ->
  ``prompt_learner.gates_t.(b-1)``, for the blocks our model prompts (docs/BMIP.md; the release creates
  both gates in all 24 blocks but uses only those).
* Dropped: the frozen CLIP (``image_encoder.*``, ``text_encoder.*``, ``logit_scale``; our trainers load
  the backbone themselves), the class buffers ``prompt_learner.token_prefix/suffix``, and the tensors the
  release creates but never uses (``proj_v``, ``exchange_layer_*``, ``compound_exchange_*``, unused gates).

The pickled scheduler and optimizer objects of real Dassl load without a flag, as inert data
(``engine.utils.torchtools.load_checkpoint``); ``allow_pickle=True`` is needed only for files holding other
objects (only files you trust).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch

from engine.utils import load_checkpoint, save_checkpoint

from .coop import OFFICIAL_CLASS_BUFFERS

__all__ = ["OFFICIAL_METHODS", "OfficialCheckpointError", "convert_official_checkpoint", "convert_official_state_dict"]

# method -> the folder (registered model name) of its official checkpoints
OFFICIAL_METHODS = {
    "BMIP": "MultiModalPromptLearner",
    "CoCoOp": "prompt_learner",
    "CoOp": "prompt_learner",
    "MaPLe": "MultiModalPromptLearner",
}
_LEARNER_ONLY = ("CoOp", "CoCoOp")

_FROZEN = re.compile(r"^(image_encoder\.|text_encoder\.|logit_scale$)")
_CLASS_BUFFERS = ("prompt_learner.token_prefix", "prompt_learner.token_suffix")
_UNUSED_BMIP = re.compile(r"^prompt_learner\.(proj_v|exchange_layer_[vt]|compound_exchange_[a-z_]*)(\.|$)")
_BMIP_GATE = re.compile(
    r"^(image_encoder|text_encoder)\.transformer\.resblocks\.(\d+)\.learnable_linear([12])\.(weight|bias)$"
)
_GATE_TOWER = {("image_encoder", "1"): "gates_v", ("text_encoder", "2"): "gates_t"}


class OfficialCheckpointError(ValueError):
    """The file is not an official MaPLe/BMIP checkpoint of the expected layout; the message says why."""


def _fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).clone()


def _bmip_gates(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gates of the blocks BMIP prompts, named as ours: block b's gate is entry b-1 (blocks start at 1).

    The blocks are those the release's deep prompts reach: vision blocks 1..len(compound_prompts_text),
    text blocks one fewer (the release's text tower stops one block earlier).
    """
    n_deep = len([k for k in state_dict if re.fullmatch(r"prompt_learner\.compound_prompts_text\.\d+", k)])
    last_block = {"gates_v": n_deep, "gates_t": n_deep - 1}
    gates = {}
    for key in state_dict:
        match = _BMIP_GATE.match(key)
        if not match:
            continue
        tower, block, which, param = match.groups()
        name = _GATE_TOWER.get((tower, which))
        if name is not None and 1 <= int(block) <= last_block[name]:
            gates[f"prompt_learner.{name}.{int(block) - 1}.{param}"] = _fp32(state_dict[key])
    return gates


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], method: str) -> OrderedDict:
    """The trainable tensors of our ``method`` trainer (fp32, our names) from an official state dict."""
    if method not in OFFICIAL_METHODS:
        raise ValueError(f"Official checkpoints can be read for {sorted(OFFICIAL_METHODS)}, not {method!r}")
    converted: OrderedDict[str, torch.Tensor] = OrderedDict()
    if method in _LEARNER_ONLY:
        if "ctx" not in state_dict:
            raise OfficialCheckpointError(f"not a {method} checkpoint: 'ctx' is missing")
        for key, tensor in state_dict.items():
            if key in OFFICIAL_CLASS_BUFFERS:
                continue
            if method == "CoOp" and key != "ctx" or method == "CoCoOp" and not re.fullmatch(r"ctx|meta_net\..+", key):
                raise OfficialCheckpointError(f"unexpected tensor {key!r} in an official {method} checkpoint")
            converted["prompt_learner." + key] = _fp32(tensor)
        return converted
    if method == "BMIP":
        if "prompt_learner.ctx_t" not in state_dict:
            raise OfficialCheckpointError("not a BMIP checkpoint: 'prompt_learner.ctx_t' is missing")
        n_ctx = state_dict["prompt_learner.ctx_t"].shape[0]
        converted.update(_bmip_gates(state_dict))
    elif "prompt_learner.ctx" not in state_dict:
        raise OfficialCheckpointError("not a MaPLe checkpoint: 'prompt_learner.ctx' is missing")
    for key, tensor in state_dict.items():
        if _FROZEN.match(key) or key in _CLASS_BUFFERS:
            continue
        if not key.startswith("prompt_learner."):
            raise OfficialCheckpointError(f"unexpected tensor {key!r} in an official {method} checkpoint")
        if method == "BMIP":
            if _UNUSED_BMIP.match(key):
                continue
            if key == "prompt_learner.ctx_v":
                tensor = tensor[:n_ctx]
        converted[key] = _fp32(tensor)
    return converted


def convert_official_checkpoint(
    source: str, output_dir: str, method: str, allow_pickle: bool = False, epoch: int | None = None
) -> str:
    """Write ``output_dir/<model name>/model.pth.tar-<epoch>`` from an official checkpoint; returns its path.

    ``epoch`` defaults to the file's own. The written file is an ordinary checkpoint of ours (tensors and
    plain values only, no optimizer or scheduler state): evaluate it with ``--eval-only --model-dir
    output_dir --load-epoch <epoch>``.
    """
    checkpoint = load_checkpoint(source, allow_pickle=allow_pickle)
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state_dict, Mapping):
        raise OfficialCheckpointError(f"{source}: expected a dict with a 'state_dict' entry (Dassl's layout)")
    epoch = int(checkpoint.get("epoch", 0)) if epoch is None else epoch
    if epoch < 1:
        raise OfficialCheckpointError(f"{source}: no epoch recorded; pass the epoch to name the converted file")
    try:
        converted = convert_official_state_dict(state_dict, method)
    except OfficialCheckpointError as e:
        raise OfficialCheckpointError(f"{source}: {e}") from e
    val_result = checkpoint.get("val_result")
    state = {
        "state_dict": converted,
        "epoch": epoch,
        "optimizer": None,
        "scheduler": None,
        "val_result": val_result if isinstance(val_result, (int, float)) else None,
    }
    save_dir = os.path.join(output_dir, OFFICIAL_METHODS[method])
    save_checkpoint(state, save_dir)
    return os.path.join(save_dir, f"model.pth.tar-{epoch}")

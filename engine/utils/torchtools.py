"""Checkpoint save/load/resume and parameter counting with Dassl's names and file layout.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``; they are written to a temporary file and moved into place, so an
interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .tools import mkdir_if_missing

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "resume_from_checkpoint",
    "load_pretrained_weights",
    "count_num_param",
    "get_rng_state",
    "set_rng_state",
    "load_state_dict_checked",
]


def _atomic_write(save: Any, fpath: str) -> None:
    """Run ``save(tmp_path)`` then move the result onto ``fpath`` (same directory, so the move is atomic)."""
    tmp = os.path.join(os.path.dirname(fpath), f".{os.path.basename(fpath)}.tmp-{os.getpid()}")
    try:
        save(tmp)
        os.replace(tmp, fpath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_text(text: str, fpath: str) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic_write(save, fpath)


def get_rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) random streams as tensors and plain values.

    Stored in checkpoints so that a resumed run draws the same shuffles and augmentations as an
    uninterrupted one.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the streams saved by :func:`get_rng_state` (CUDA only when the device count matches)."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states is not None and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(
    state: dict[str, Any],
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> None:
    """Save ``state`` as ``save_dir/<model_name or model.pth.tar-<epoch>>`` and point ``checkpoint`` at it.

    ``state`` needs ``state_dict`` and ``epoch``. With ``is_best`` the file is also copied to
    ``model-best.pth.tar``. A ``module.`` prefix (DataParallel) is stripped from parameter names.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = OrderedDict(
            (k[len("module.") :] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
        )
    if not model_name:
        model_name = f"model.pth.tar-{state['epoch']}"
    fpath = os.path.join(save_dir, model_name)
    _atomic_write(lambda tmp: torch.save(state, tmp), fpath)
    print(f"Checkpoint saved to {fpath}")
    _write_text(f"{os.path.basename(fpath)}\n", os.path.join(save_dir, "checkpoint"))
    if is_best:
        best_fpath = os.path.join(save_dir, "model-best.pth.tar")
        _atomic_write(lambda tmp: shutil.copyfile(fpath, tmp), best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')


def load_checkpoint(fpath: str, allow_pickle: bool = False) -> Any:
    """Load a checkpoint onto the GPU when available, else the CPU.

    Ours load with ``weights_only=True``. Checkpoints written by real Dassl pickle scheduler objects:
    they load only with ``allow_pickle=True`` (full unpickling; do this only for files you trust).
    """
    if fpath is None:
        raise ValueError("load_checkpoint: the file path is None")
    if not os.path.exists(fpath):
        raise FileNotFoundError(f'No file found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=not allow_pickle)
    except UnicodeDecodeError:
        # Checkpoints pickled under Python 2.
        return torch.load(fpath, map_location=map_location, weights_only=not allow_pickle, encoding="latin1")
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise
        raise pickle.UnpicklingError(
            f'"{fpath}" contains pickled Python objects, not only tensors and plain values (a checkpoint '
            "written by real Dassl?). If you trust the file, load it with load_checkpoint(path, "
            f"allow_pickle=True). Original error: {str(e).splitlines()[0]}"
        ) from e


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any], strict: bool, source: str) -> None:
    """Load weights; with ``strict=False`` missing keys are fine but unknown keys still raise.

    Non-strict loading serves checkpoints that hold only the trainable tensors.
    """
    if strict:
        model.load_state_dict(state_dict)
        return
    unexpected = model.load_state_dict(state_dict, strict=False).unexpected_keys
    if unexpected:
        raise KeyError(f'"{source}" holds weights the model does not have: {", ".join(unexpected)}')


def resume_from_checkpoint(
    fdir: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    strict: bool = True,
) -> int:
    """Resume from the file named in ``fdir/checkpoint``; returns the epoch to start from.

    Restores weights, optimizer and scheduler state and, for checkpoints of this engine, the random
    streams, so the resumed run continues exactly where the interrupted one stopped.
    """
    pointer = os.path.join(fdir, "checkpoint")
    if not os.path.isfile(pointer):
        raise FileNotFoundError(f'No "checkpoint" pointer file in "{fdir}"')
    with open(pointer) as f:
        fname = f.readline().strip()
    fpath = os.path.join(fdir, fname)
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    load_state_dict_checked(model, checkpoint["state_dict"], strict, fpath)
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if checkpoint.get("rng_state") is not None:
        set_rng_state(checkpoint["rng_state"])
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model: nn.Module, weight_path: str, allow_pickle: bool = False) -> None:
    """Copy the weights whose name and shape match the model; report what was discarded."""
    checkpoint = load_checkpoint(weight_path, allow_pickle=allow_pickle)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(
            f'The pretrained weights "{weight_path}" cannot be loaded: no key matches the model in name and shape',
            stacklevel=2,
        )
    else:
        print(f'Successfully loaded pretrained weights from "{weight_path}"')
        if discarded:
            print(f"** The following layers are discarded due to unmatched keys or layer size: {discarded}")


def count_num_param(model: nn.Module | None = None, params: Iterable[Any] | None = None) -> int:
    """Number of elements of a model's parameters, or of an iterable of tensors / param-group dicts."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        total = 0
        for p in params:
            if isinstance(p, dict):
                total += sum(t.numel() for t in p["params"])
            else:
                total += p.numel()
        return total
    raise ValueError("count_num_param needs a model or params")

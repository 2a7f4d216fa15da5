"""Checkpoint save/load/resume and parameter counting with Dassl's names and file layout.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``; they are written to a temporary file, synced and moved into place, so
an interrupted save never leaves a truncated checkpoint behind. Resume reports an unreadable checkpoint
by name and continues from the newest other complete one. Checkpoints written by real Dassl (pickles
holding scheduler and optimizer objects) are read, on request, by an unpickler that rebuilds tensors and
plain containers only and never imports or runs anything else.
"""

from __future__ import annotations

import functools
import os
import pickle
import random
import re
import shutil
import types
import warnings
import zipfile
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .crash import crash_point
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
    "PickledObject",
    "allow_pickled_checkpoints",
    "CheckpointError",
    "CheckpointMismatchError",
    "has_checkpoint",
    "remove_stray_temp_files",
]

_NUMBERED = re.compile(r"^model\.pth\.tar-(\d+)$")
# The temporary files of _atomic_write: ".<name>.tmp-<pid>".
_TEMP = re.compile(r"^\..+\.tmp-\d+$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or saved for a different model."""


class CheckpointMismatchError(CheckpointError, KeyError):
    """A checkpoint saved for another method or configuration (a ``KeyError`` too, as Dassl raised)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _atomic_write(save: Any, fpath: str, crash_label: str = "") -> None:
    """Run ``save(tmp_path)`` then move the result onto ``fpath`` (same directory, so the move is atomic).

    ``crash_label`` names the crash point between the two steps (see :mod:`engine.utils.crash`).
    """
    tmp = os.path.join(os.path.dirname(fpath), f".{os.path.basename(fpath)}.tmp-{os.getpid()}")
    try:
        save(tmp)
        if crash_label:
            crash_point(crash_label)
        os.replace(tmp, fpath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_text(text: str, fpath: str) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    _atomic_write(save, fpath)


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The ``OSError`` with an errno in ``error``'s chain (torch wraps a failed write in a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


def _save_synced(state: dict[str, Any], fpath: str) -> None:
    """``torch.save`` and fsync, so the rename that follows never exposes a file still in the page cache.

    A failed write (a full disk, a quota) raises one ``OSError`` naming the checkpoint, not torch's
    ``inline_container`` RuntimeError with the reason buried in its context.
    """
    try:
        with open(fpath, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        cause = _os_error_in(e)
        if cause is None:
            raise
        name = os.path.basename(fpath)
        target = os.path.join(os.path.dirname(fpath), name[1:].rsplit(".tmp-", 1)[0]) if ".tmp-" in name else fpath
        error = OSError(f"Cannot write checkpoint {target}: {cause.strerror} (errno {cause.errno})")
        error.errno = cause.errno
        raise error from None


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
    _atomic_write(lambda tmp: _save_synced(state, tmp), fpath, crash_label="checkpoint-temp-written")
    crash_point("checkpoint-renamed")
    print(f"Checkpoint saved to {fpath}")
    _write_text(f"{os.path.basename(fpath)}\n", os.path.join(save_dir, "checkpoint"))
    if is_best:
        best_fpath = os.path.join(save_dir, "model-best.pth.tar")
        _atomic_write(lambda tmp: shutil.copyfile(fpath, tmp), best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')


class PickledObject:
    """Stand-in for an object in a legacy pickle (a Dassl scheduler, an optimizer ...); nothing of it runs.

    ``cls_path`` is the class the file names; ``args`` and ``state`` are what the pickle would have passed
    to it. For a scheduler or optimizer, ``state`` is its ``__dict__``, so its data stays readable.
    """

    cls_path = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # A container subclass pickles its items after the object (SETITEMS / APPENDS): kept as data.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("elements", []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    def __repr__(self) -> str:
        return f"PickledObject({self.cls_path})"


# Globals a legacy checkpoint may use to rebuild tensors and containers; everything else becomes a
# PickledObject. Storage classes are resolved by torch.load itself before this list is consulted.
_LEGACY_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    ("collections", "Counter"): Counter,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
}

# The objects a checkpoint of real Dassl (and the official CoOp-family trainers built on it) pickles:
# Dassl's scheduler state_dict keeps every attribute but its own optimizer, so the warmup scheduler's
# successor is pickled as an object, with the successor's optimizer (whose per-parameter state is a
# ``collections.defaultdict`` keyed by the Parameters). Dassl's build_optimizer/build_lr_scheduler make
# only these classes. They load without ``allow_pickle``, as inert PickledObjects (nothing runs).
_DASSL_CHECKPOINT_CLASSES = (
    "torch.optim.lr_scheduler.StepLR",
    "torch.optim.lr_scheduler.MultiStepLR",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
    "torch.optim.sgd.SGD",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop",
    "dassl.optim.radam.RAdam",
    "dassl.optim.radam.PlainRAdam",
    "dassl.optim.radam.AdamW",
    "dassl.optim.lr_scheduler.ConstantWarmupScheduler",
    "dassl.optim.lr_scheduler.LinearWarmupScheduler",
)


@functools.cache
def _inert_class(cls_path: str) -> type[PickledObject]:
    """The stand-in class for ``cls_path`` (one per name, so the safe loader can allow it by identity)."""
    name = cls_path.rsplit(".", 1)[-1]
    return type(name, (PickledObject,), {"cls_path": cls_path, "__module__": __name__})


def _defaultdict_as_dict(default_factory: Any = None) -> dict:
    """A pickled ``defaultdict`` read as a plain dict (torch's safe loader fills only dict types)."""
    return {}


def _dassl_safe_globals() -> list[Any]:
    """``torch.serialization.safe_globals`` entries for exactly the types a Dassl checkpoint holds."""
    return [
        dict,
        (_defaultdict_as_dict, "collections.defaultdict"),
        *((_inert_class(path), path) for path in _DASSL_CHECKPOINT_CLASSES),
    ]


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; any other class becomes an inert :class:`PickledObject`."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module
        allowed = _LEGACY_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        return _inert_class(f"{module}.{name}")


_tensor_only_pickle = types.ModuleType("engine_tensor_only_pickle")
_tensor_only_pickle.Unpickler = _TensorOnlyUnpickler  # type: ignore[attr-defined]
_tensor_only_pickle.load = lambda f, **kw: _TensorOnlyUnpickler(f, **kw).load()  # type: ignore[attr-defined]

# What a truncated or otherwise damaged checkpoint raises from torch.load.
# A file that is no checkpoint at all (random bytes, text) makes torch's unpickler fail in any of the others.
_UNREADABLE = (EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError,
               IndexError, KeyError, TypeError, OverflowError)  # fmt: skip


# The default of ``load_checkpoint(allow_pickle=None)``: False unless a run opts in for trusted files
# (``train.py --allow-pickle``), which then reaches trainer files that call ``load_checkpoint(path)``.
_ALLOW_PICKLE_DEFAULT = False


def allow_pickled_checkpoints(allow: bool = True) -> None:
    """Let every ``load_checkpoint`` call that does not choose read real-Dassl files (trusted files only)."""
    global _ALLOW_PICKLE_DEFAULT
    _ALLOW_PICKLE_DEFAULT = bool(allow)


def load_checkpoint(fpath: str, allow_pickle: bool | None = None) -> Any:
    """Load a checkpoint onto the GPU when available, else the CPU.

    Loads with ``weights_only=True``, allowing besides tensors and plain values exactly the objects a
    checkpoint of real Dassl pickles (its warmup scheduler's successor and that one's optimizer, see
    ``_DASSL_CHECKPOINT_CLASSES``), rebuilt as inert :class:`PickledObject` stand-ins. A file holding any
    other object is refused unless ``allow_pickle=True``, which rebuilds tensors and plain values and
    turns every other object into a stand-in (nothing in the file is imported or executed). ``None``
    takes the run's choice (:func:`allow_pickled_checkpoints`, False by default). A damaged file raises
    :class:`CheckpointError` naming it.
    """
    if allow_pickle is None:
        allow_pickle = _ALLOW_PICKLE_DEFAULT
    if fpath is None:
        raise ValueError("load_checkpoint: the file path is None")
    if not os.path.exists(fpath):
        raise FileNotFoundError(f'No file found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    if allow_pickle:
        options: dict[str, Any] = {"weights_only": False, "pickle_module": _tensor_only_pickle}
    else:
        options = {"weights_only": True}
    try:
        with torch.serialization.safe_globals(_dassl_safe_globals()):
            try:
                return torch.load(fpath, map_location=map_location, **options)
            except UnicodeDecodeError:
                # Checkpoints pickled under Python 2.
                return torch.load(fpath, map_location=map_location, encoding="latin1", **options)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        payload = re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", str(e))
        if payload is not None and not allow_pickle:
            raise pickle.UnpicklingError(
                f'"{fpath}" holds a pickle payload that calls {payload.group(1)}, not a checkpoint: refused '
                "without running it"
            ) from e
        if allow_pickle or found is None:
            raise CheckpointError(f'Checkpoint "{fpath}" is unreadable (truncated or corrupt?): {_first_line(e)}') from e
        raise pickle.UnpicklingError(
            f'"{fpath}" holds a pickled Python object ({found.group(1)}) that neither this engine nor real Dassl '
            "writes; refused, since unpickling it could run code. If you trust the file, pass --allow-pickle "
            "(train.py, tools.convert_official) or call load_checkpoint(path, allow_pickle=True): tensors and plain "
            "values are read and every other object becomes an inert placeholder (nothing is imported or run), "
            "but a crafted file can still exhaust memory or hand the trainer values it does not expect"
        ) from e
    except _UNREADABLE as e:
        reason = "not a file torch.save wrote" if isinstance(e, _UNREADABLE[6:]) else _first_line(e)
        raise CheckpointError(f'Checkpoint "{fpath}" is unreadable (truncated or corrupt?): {reason}') from e


def _first_line(error: BaseException) -> str:
    """The first sentence of an error (torch's zip errors append a paragraph of advice)."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(error).__name__


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any], strict: bool, source: str) -> None:
    """Load weights; with ``strict=False`` missing keys are fine but unknown keys still raise.

    Non-strict loading serves checkpoints that hold only the trainable tensors. A checkpoint of another
    method or configuration raises :class:`CheckpointError` naming the file and the offending tensors.
    A model with a ``translate_state_dict(state_dict)`` method (one that reads another repository's key
    layout, e.g. the official CoOp's) has it applied first, so the checks see its own names.
    """
    translate = getattr(model, "translate_state_dict", None)
    if translate is not None:
        state_dict = translate(state_dict)
    own = model.state_dict()
    mismatched = [
        f"{k} (checkpoint {list(v.shape)}, model {list(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointMismatchError(
            f'"{source}" does not fit this model: shape mismatch for {", ".join(mismatched)} '
            "(saved with another configuration, e.g. another N_CTX, prompt depth or backbone?)"
        )
    try:
        result = model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as e:
        raise CheckpointMismatchError(f'"{source}" does not fit this model: {" ".join(str(e).split())}') from e
    if result is not None and result.unexpected_keys:
        raise CheckpointMismatchError(
            f'"{source}" does not fit this model: it holds weights the model does not have: '
            f"{', '.join(result.unexpected_keys)} (saved by another method?)"
        )


def _resume_candidates(fdir: str) -> list[str]:
    """The file the ``checkpoint`` pointer names, then the numbered checkpoints, newest first."""
    names = []
    pointer = os.path.join(fdir, "checkpoint")
    if os.path.isfile(pointer):
        with open(pointer, errors="replace") as f:
            name = f.readline(256).strip()
        if name and (os.path.basename(name) != name or name.startswith(".")):
            # A pointer names a file of its own folder; anything else (``../..``, a path) is not ours to read.
            print(f'Warning: Checkpoint pointer "{pointer}" names "{name}", not a file of its folder; ignored')
        else:
            names.append(name)
    numbered = [(int(m.group(1)), n) for n in os.listdir(fdir) if (m := _NUMBERED.match(n))]
    names += [n for _, n in sorted(numbered, reverse=True) if n not in names]
    return [os.path.join(fdir, n) for n in names if n]


def has_checkpoint(fdir: str) -> bool:
    """Whether ``fdir`` holds anything resume could start from (a pointer or a numbered checkpoint)."""
    return os.path.isdir(fdir) and bool(_resume_candidates(fdir))


def remove_stray_temp_files(fdir: str) -> list[str]:
    """Delete the temporary files a killed save left in ``fdir`` (never read; see ``_atomic_write``).

    Call it only when no other process writes into ``fdir``: at the start of a run. Returns their names.
    """
    if not os.path.isdir(fdir):
        return []
    stray = sorted(n for n in os.listdir(fdir) if _TEMP.match(n))
    for name in stray:
        os.remove(os.path.join(fdir, name))
    return stray


def resume_from_checkpoint(
    fdir: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    strict: bool = True,
) -> int:
    """Resume from the file named in ``fdir/checkpoint``; returns the epoch to start from.

    Restores weights, optimizer and scheduler state and, for checkpoints of this engine, the random
    streams, so the resumed run continues exactly where the interrupted one stopped. If that file is
    missing or unreadable, it is reported by name and the newest other ``model.pth.tar-<epoch>`` that
    reads is used instead.
    """
    candidates = _resume_candidates(fdir)
    if not candidates:
        raise FileNotFoundError(f'No "checkpoint" pointer file and no model.pth.tar-<epoch> file in "{fdir}"')
    checkpoint, fpath = None, ""
    for fpath in candidates:
        try:
            checkpoint = load_checkpoint(fpath)
            if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint or "epoch" not in checkpoint:
                checkpoint = None
                raise CheckpointError(f'Checkpoint "{fpath}" is unreadable: not a checkpoint (no state_dict/epoch)')
            break
        except (FileNotFoundError, CheckpointError, pickle.UnpicklingError) as e:
            print(f"Warning: {e}. Trying the next checkpoint")
    if checkpoint is None:
        raise CheckpointError(
            f'No readable checkpoint in "{fdir}" (tried {", ".join(os.path.basename(c) for c in candidates)}); '
            "delete the folder to train from scratch"
        )
    print(f'Loading checkpoint from "{fpath}"')
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


def load_pretrained_weights(model: nn.Module, weight_path: str, allow_pickle: bool | None = None) -> None:
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

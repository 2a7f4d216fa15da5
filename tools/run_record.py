"""What a run folder was made with: its resolved config, a short fingerprint, and the refusal to mix.

``train.py`` writes two files into every output folder before any work: ``config.yaml`` (the resolved
config, yacs' dump) and ``run.json`` (the fingerprint, the settings it covers and the command's
``KEY VALUE`` overrides). A second run into a folder whose ``run.json`` records other settings stops
with one line naming the differing keys, so a folder never holds the results of two configurations
(a folder whose run left no checkpoint and no accuracy, e.g. one stopped by a bad setting, is taken over).

The fingerprint covers every setting that changes results (backbone, trainer and its config, dataset,
label space, shots, seed, every override) and leaves out where things live and how they are printed
(``IGNORED``). A negative seed is recorded as ``unseeded``. An evaluation-only run also records what it
evaluates: the fingerprint of the model folder it loads (its path when that folder has no record) and
the epoch. No torch: readers such as ``tools.tables`` import this module on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "RECORD_FILE",
    "CONFIG_FILE",
    "IGNORED",
    "settings",
    "fingerprint",
    "read_record",
    "differences",
    "holds_results",
    "check_and_write",
]

RECORD_FILE = "run.json"
CONFIG_FILE = "config.yaml"

# Where files live, how much is printed, which device runs it: none of these changes a result.
IGNORED = frozenset(
    {
        "OUTPUT_DIR",
        "RESUME",
        "DATASET.ROOT",
        "DATASET.CHECK_IMAGES",
        "DATALOADER.NUM_WORKERS",
        "TRAIN.PRINT_FREQ",
        "TRAIN.CHECKPOINT_FREQ",
        "TEST.PER_CLASS_RESULT",
        "TEST.COMPUTE_CMAT",
        "VERBOSE",
        "DEVICE",
        "USE_CUDA",
    }
)


def _flatten(node: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key in sorted(node):
        value = node[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.loads(json.dumps(value))  # tuples become lists, as in run.json
    return out


def settings(cfg: Mapping, evaluates: Mapping[str, object] | None = None) -> dict[str, object]:
    """The dotted-key settings a fingerprint covers: ``cfg`` without ``IGNORED``, plus ``EVAL.*``."""
    flat = {k: v for k, v in _flatten(cfg).items() if k not in IGNORED}
    if isinstance(flat.get("SEED"), int) and flat["SEED"] < 0:
        flat["SEED"] = "unseeded"
    for key, value in (evaluates or {}).items():
        flat[f"EVAL.{key}"] = value
    return flat


def fingerprint(cfg: Mapping, evaluates: Mapping[str, object] | None = None) -> str:
    """Twelve hex digits that change whenever a setting that changes results changes (see ``settings``)."""
    text = json.dumps(settings(cfg, evaluates), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_record(folder: str | Path) -> dict | None:
    """The ``run.json`` of ``folder``; None when the folder has none (or it is not a record)."""
    path = Path(folder) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("settings"), dict) else None


def differences(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """``KEY: <old> there, <new> here`` for each setting both sides have and that differs.

    A key only one side has is a setting added or removed by another version of the code, not a
    different run, and is not counted.
    """
    return [f"{k}: {old[k]!r} there, {new[k]!r} here" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]


def holds_results(folder: str | Path) -> bool:
    """Whether a run left anything in ``folder`` that a later run could mix with: a checkpoint or an
    accuracy in a log. A run that stopped on a bad setting before either leaves nothing to protect."""
    folder = Path(folder)
    if any(folder.glob("*/model.pth.tar-*")) or any(folder.glob("*/model-best.pth.tar")):
        return True
    for log in folder.glob("log.txt*"):
        with log.open(errors="replace") as f:
            if any(line.startswith("* accuracy:") for line in f):
                return True
    return False


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text)
    os.replace(temp, path)


def check_and_write(
    folder: str | Path,
    cfg: Mapping,
    config_text: str,
    overrides: Sequence[str] = (),
    evaluates: Mapping[str, object] | None = None,
) -> str:
    """Refuse a folder made by other settings; else write ``run.json`` and ``config.yaml``; the fingerprint.

    Call it while holding the folder's lock (``tools.run_lock``).
    """
    folder = Path(folder)
    now = settings(cfg, evaluates)
    before = read_record(folder)
    if before is not None and holds_results(folder):
        changed = differences(before["settings"], now)
        if changed:
            shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
            raise ValueError(
                f"OUTPUT_DIR {folder} holds a run of other settings ({shown}); its results would be mixed "
                f"with this run's. Use another --output-dir, or delete the folder to replace that run"
            )
    record = {
        "fingerprint": fingerprint(cfg, evaluates),
        "seed": now.get("SEED"),
        "overrides": list(overrides),
        "settings": now,
    }
    _write_atomically(folder / RECORD_FILE, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    _write_atomically(folder / CONFIG_FILE, config_text)
    return record["fingerprint"]

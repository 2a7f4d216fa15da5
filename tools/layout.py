"""Where the method scripts put their runs: the one Python mirror of ``scripts/lib.sh``'s layout.

``scripts/lib.sh`` decides the folders; this module reproduces its patterns so that the table tool
and the sweep runner find the same ``log.txt`` the scripts write. The trainer and config a script
uses (they appear in the folder names, and may depend on the dataset, the shots or ``CFG``) are asked
from the script itself: ``read_script`` sources it in bash with every lib.sh function replaced by a
stub, so ``lib_setup TRAINER CFG LOADEP`` reports its arguments and nothing runs. If lib.sh's layout
changes, change the patterns here and nowhere else.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ScriptInfo",
    "read_script",
    "dataset_dir",
    "base2new_dir",
    "xd_train_dir",
    "xd_test_dir",
    "fewshot_dir",
    "zeroshot_dir",
    "place",
]

_FUNCTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(\)\s*\{", re.MULTILINE)

# Sourced by bash with the script and its arguments. Every lib.sh function becomes a no-op, except
# lib_setup, which prints TRAINER, the effective CFG (lib.sh lets $CFG win), LOADEP and CFG_DIR.
_PROBE = """
source() { :; }
for fn in $LIB_FUNCTIONS; do eval "$fn() { :; }"; done
lib_setup() { printf 'lib_setup\\t%s\\t%s\\t%s\\t%s\\n' "$1" "${CFG:-$2}" "$3" "${4:-$1}"; }
script="$1"
shift
builtin source "$script" "$@"
"""


@dataclass(frozen=True)
class ScriptInfo:
    """What one method script sets up: the trainer name and config that appear in its output paths."""

    path: Path
    trainer: str
    cfg: str
    zero_shot: bool  # lib_setup's LOADEP is "-": nothing to train or load
    cfg_dir: str  # the config is configs/trainers/<cfg_dir>/<cfg>.yaml


@functools.lru_cache(maxsize=4096)
def _probe(path: Path, args: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> ScriptInfo:
    lib = path.parent.parent / "lib.sh"
    functions = sorted(set(_FUNCTION.findall(lib.read_text()))) if lib.is_file() else []
    full_env = {**os.environ, **dict(env), "LIB_FUNCTIONS": " ".join(functions)}
    proc = subprocess.run(
        ["bash", "-c", _PROBE, "probe", str(path), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=path.parent,
        timeout=60,
    )
    calls = [line.split("\t")[1:] for line in proc.stdout.splitlines() if line.startswith("lib_setup\t")]
    if not calls:
        raise ValueError(
            f"{path} {' '.join(args)} never called 'lib_setup TRAINER CFG LOADEP' (the sweep reads the run "
            f"folder from it); bash said: {proc.stderr.strip()[-500:] or 'nothing'}"
        )
    trainer, cfg, loadep, cfg_dir = calls[-1]
    return ScriptInfo(path=path, trainer=trainer, cfg=cfg, zero_shot=loadep == "-", cfg_dir=cfg_dir)


def read_script(
    path: str | Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> ScriptInfo:
    """Trainer, config and zero-shot flag that ``path`` would use when called with ``args`` and ``env``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"method script {path} does not exist")
    return _probe(path, tuple(args), tuple(sorted((env or {}).items())))


@functools.lru_cache(maxsize=1024)
def _dataset_dir(lib: Path, dataset: str, opts: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str:
    proc = subprocess.run(
        ["bash", "-c", 'source "$0" && lib_dataset_dir "$@"', str(lib), dataset, *opts],
        capture_output=True,
        text=True,
        env={**os.environ, **dict(env)},
        cwd=lib.parent.parent,  # the sweep runs the scripts from the repository root
        timeout=60,
    )
    if proc.returncode or not proc.stdout.strip():
        raise ValueError(
            f"{lib}: lib_dataset_dir {dataset} failed: {proc.stderr.strip()[-500:] or 'no output'}"
        )
    return proc.stdout.strip()


def dataset_dir(
    lib: str | Path, dataset: str, opts: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> str:
    """The dataset's folder name in the run layout, asked from lib.sh's ``lib_dataset_dir``.

    It is the dataset name, except for a user's own image folder (``DATASET.IMAGE_FOLDER`` /
    ``DATASET.IMAGE_LIST`` among ``opts``), whose name carries a hash of the folder's path.
    """
    return _dataset_dir(Path(lib).resolve(), dataset, tuple(opts), tuple(sorted((env or {}).items())))


def base2new_dir(
    output: Path, split: str, dataset: str, shots: int, trainer: str, cfg: str, seed: int
) -> Path:
    """``split`` is ``train_base``, ``test_new`` or ``test_all``."""
    return Path(output) / "base2new" / split / dataset / f"shots_{shots}" / trainer / cfg / f"seed{seed}"


def xd_train_dir(output: Path, source: str, trainer: str, cfg: str, shots: int, seed: int) -> Path:
    return Path(output) / source / trainer / f"{cfg}_{shots}shots" / f"seed{seed}"


def xd_test_dir(output: Path, dataset: str, trainer: str, cfg: str, shots: int, seed: int) -> Path:
    """Cross-dataset and domain-generalisation evaluations share this folder pattern."""
    return Path(output) / "evaluation" / trainer / f"{cfg}_{shots}shots" / dataset / f"seed{seed}"


def fewshot_dir(output: Path, dataset: str, shots: int, trainer: str, cfg: str, seed: int) -> Path:
    return Path(output) / "fewshot" / dataset / f"shots_{shots}" / trainer / cfg / f"seed{seed}"


def zeroshot_dir(output: Path, dataset: str, trainer: str, cfg: str) -> Path:
    return Path(output) / "zeroshot" / trainer / cfg / dataset


PATH_SHOWN_KEYS = ("DATASET.NUM_SHOTS", "DATASET.IMAGE_FOLDER", "DATASET.IMAGE_LIST")


def place(folder: Path, overrides: Sequence[str] = ()) -> Path:
    """The folder of a run given these ``KEY VALUE`` overrides (lib.sh's ``lib_place``).

    Without overrides (``DATASET.NUM_SHOTS``, ``DATASET.IMAGE_FOLDER`` and ``DATASET.IMAGE_LIST`` aside: the
    path shows the shots and the dataset folder) it is ``folder``;
    otherwise ``folder`` with ``+overrides-<8 hex digits of their sha256, one per line>`` appended.
    """
    pairs = [(k, v) for k, v in zip(overrides[::2], overrides[1::2]) if k not in PATH_SHOWN_KEYS]
    if not pairs:
        return Path(folder)
    text = "".join(f"{k}\n{v}\n" for k, v in pairs)
    return Path(f"{folder}+overrides-{hashlib.sha256(text.encode()).hexdigest()[:8]}")

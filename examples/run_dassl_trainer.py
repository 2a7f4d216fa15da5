"""Run train.py with Dassl-style trainer files that import ``dassl.*`` (unchanged) on this engine.

    python examples/run_dassl_trainer.py TRAINER_FILE [TRAINER_FILE ...] -- <train.py arguments>

The Dassl alias is switched on first (``engine/dassl_alias.py``), then each file is imported (which
registers its trainers), then ``train.main`` runs with the arguments after ``--``. Example:

    python examples/run_dassl_trainer.py examples/dassl_clip_adapter.py -- --root ./data \\
        --trainer DasslClipAdapter --dataset-config-file configs/datasets/digits.yaml \\
        --config-file examples/dassl_clip_adapter.yaml --output-dir output/dassl_example
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import engine.dassl_alias  # noqa: E402  (before any trainer file imports dassl)


def import_trainer_file(path: str) -> ModuleType:
    """Import a trainer file by path (once), so that its ``@TRAINER_REGISTRY.register()`` runs."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Trainer file {path} does not exist")
    name = "dassl_trainer_" + os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == 0:
        raise SystemExit(__doc__)
    split = argv.index("--")
    if not engine.dassl_alias.is_installed():
        print("Note: a real dassl package is installed; the trainer files use it, not this engine")
    for path in argv[:split]:
        import_trainer_file(path)
    import train

    train.main(argv[split + 1 :])


if __name__ == "__main__":
    main()

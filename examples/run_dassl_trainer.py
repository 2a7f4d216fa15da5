"""Run train.py with Dassl-style trainer files that import ``dassl.*`` (unchanged) on this engine.

    python examples/run_dassl_trainer.py TRAINER_FILE [TRAINER_FILE ...] -- <train.py arguments>

The Dassl alias is switched on first (``engine/dassl_alias.py``), then each file is imported (which
registers its trainers and its ``extend_cfg``), then ``train.main`` runs with the arguments after ``--``.
The same as ``python -m tools.dassl_run --import FILE train.py ARGS`` without the launcher's
``CLIP_OPENAI_FP16``. Example:

    python examples/run_dassl_trainer.py examples/dassl_clip_adapter.py -- --root ./data \\
        --trainer DasslClipAdapter --dataset-config-file configs/datasets/digits.yaml \\
        --config-file examples/dassl_clip_adapter.yaml --output-dir output/dassl_example
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import engine.dassl_alias  # noqa: E402  (before any trainer file imports dassl)
from tools.dassl_run import import_file as import_trainer_file  # noqa: E402


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

"""Convert a checkpoint published by the official CoOp, CoCoOp, MaPLe or BMIP repository for evaluation here.

    python -m tools.convert_official --method BMIP \\
        path/to/MultiModalPromptLearner/model.pth.tar-5 --output-dir converted/eurosat_seed1
    python train.py --eval-only --model-dir converted/eurosat_seed1 --load-epoch 5 --trainer BMIP ...

The official files pickle real Dassl's scheduler and optimizer objects; those load as inert data without
a flag. ``--allow-pickle`` is for files that pickle other objects (only files you trust). The key mapping is described in ``trainers/official.py``. Evaluate with the same
configuration the checkpoint was trained with (N_CTX, PROMPT_DEPTH, backbone, SHARE.* for BMIP):
a mismatch is reported by name when the converted file is loaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trainers.official import OFFICIAL_METHODS, convert_official_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="official checkpoint file (e.g. .../model.pth.tar-5)")
    parser.add_argument("--method", required=True, choices=sorted(OFFICIAL_METHODS), help="trainer it belongs to")
    parser.add_argument("--output-dir", required=True, help="folder to pass as --model-dir to train.py --eval-only")
    parser.add_argument("--epoch", type=int, help="epoch number of the written file (default: the file's own)")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="read files that pickle objects other than Dassl's schedulers and optimizers (only files you trust)"
    )
    args = parser.parse_args(argv)
    path = convert_official_checkpoint(
        args.checkpoint, args.output_dir, args.method, allow_pickle=args.allow_pickle, epoch=args.epoch
    )
    epoch = path.rsplit("-", 1)[-1]
    print(f"Wrote {path}\nEvaluate with: python train.py --trainer {args.method} --eval-only "
          f"--model-dir {args.output_dir} --load-epoch {epoch} <the run's --config-file/--dataset-config-file>")
    return 0


if __name__ == "__main__":
    sys.exit(main())

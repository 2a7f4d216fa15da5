#!/usr/bin/env bash
# MMRL cross-dataset / DG training on all classes of the source dataset (ImageNet): xd_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMRL, official configs (the cross-dataset config).
lib_setup MMRL vit_b16_cross_datasets 1
# The release's cross-dataset scripts pass REG_WEIGHT 0.2 on the command line, which wins over its
# per-dataset table (ImageNet 0.5): so do we (trainers/mmrl.py). Evaluation takes its shapes from the model.
lib_check_args xd_train.sh 2 "<dataset> <seed>" "$@"
xd_train "$1" "$2" TRAINER.MMRL.REG_WEIGHT 0.2 "${@:3}"

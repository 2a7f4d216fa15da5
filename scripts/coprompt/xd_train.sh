#!/usr/bin/env bash
# CoPrompt cross-dataset / DG training on all classes of the source dataset (ImageNet): xd_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# CoPrompt; class descriptions from TRAINER.CoPrompt.DESCRIPTIONS_DIR (default datasets/descriptions, see
# docs/METHODS.md). XD/DG: no official config, the base-to-new one with ImageNet's table row.
lib_setup CoPrompt coprompt 8
xd_train "$@"

#!/usr/bin/env bash
# CoPrompt + BMIP base-to-new evaluation on new and all classes (SUBS): base2new_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Food101 trains 5 epochs (CoPrompt per-dataset table): its evaluations load epoch 5.
[ "${1:-}" = food101 ] && LOADEP="${LOADEP:-5}"
# CoPrompt + BMIP; class descriptions from TRAINER.CoPrompt.DESCRIPTIONS_DIR (default datasets/descriptions, see
# docs/METHODS.md). XD/DG: no official config, the base-to-new one with ImageNet's table row.
lib_setup CoPrompt_BMIP coprompt_bmip 8
base2new_test "$@"

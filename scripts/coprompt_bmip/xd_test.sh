#!/usr/bin/env bash
# CoPrompt + BMIP cross-dataset evaluation of the SOURCE-trained model (SOURCE, default imagenet): xd_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# CoPrompt + BMIP; class descriptions from TRAINER.CoPrompt.DESCRIPTIONS_DIR (default datasets/descriptions, see
# docs/METHODS.md). XD/DG: no official config, the base-to-new one with ImageNet's table row.
lib_setup CoPrompt_BMIP coprompt_bmip 8
xd_test "$@"

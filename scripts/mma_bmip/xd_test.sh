#!/usr/bin/env bash
# MMA_BMIP cross-dataset evaluation of the SOURCE-trained model (SOURCE, default imagenet): xd_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMA + BMIP (no official code; MMA's schedule, BMIP's prompts).
lib_setup MMA_BMIP vit_b16_ep5_imnet 5
xd_test "$@"

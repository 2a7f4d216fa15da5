#!/usr/bin/env bash
# MMA_BMIP base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMA + BMIP (no official code; MMA's schedule, BMIP's prompts).
case "${1:-}" in
    imagenet) lib_setup MMA_BMIP vit_b16_ep5_imnet 5 ;;  # the release's ImageNet config
    *) lib_setup MMA_BMIP vit_b16_ep5 5 ;;
esac
base2new_train "$@"

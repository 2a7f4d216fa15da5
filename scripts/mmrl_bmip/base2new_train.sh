#!/usr/bin/env bash
# MMRL_BMIP base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMRL + BMIP (no official code; MMRL's configs and schedule, BMIP's gates; ImageNet base-to-new uses vit_b16_imagenet, 5 epochs, as the release's scripts choose).
case "${1:-}" in
    imagenet) lib_setup MMRL_BMIP vit_b16_imagenet 5 ;;
    *) lib_setup MMRL_BMIP vit_b16 10 ;;
esac
base2new_train "$@"

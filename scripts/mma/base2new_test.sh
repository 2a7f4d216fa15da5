#!/usr/bin/env bash
# MMA base-to-new evaluation on new and all classes (SUBS): base2new_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMA, official configs (ImageNet uses vit_b16_ep5_imnet, as the release's run_examples.sh does).
case "${1:-}" in
    imagenet) lib_setup MultiModalAdapter vit_b16_ep5_imnet 5 ;;  # the release's ImageNet config
    *) lib_setup MultiModalAdapter vit_b16_ep5 5 ;;
esac
base2new_test "$@"

#!/usr/bin/env bash
# MMRL base-to-new evaluation on new and all classes (SUBS): base2new_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMRL, official configs (ImageNet base-to-new uses vit_b16_imagenet, 5 epochs, as the release's scripts choose).
case "${1:-}" in
    imagenet) lib_setup MMRL vit_b16_imagenet 5 ;;
    *) lib_setup MMRL vit_b16 10 ;;
esac
base2new_test "$@"

#!/usr/bin/env bash
# Zero-shot CLIP on new and all classes: base2new_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# TRAINER=ZeroshotCLIP2 selects the template ensemble; CFG picks the backbone (rn50, rn101, vit_b32, vit_b16).
lib_setup "${TRAINER:-ZeroshotCLIP}" vit_b16 - ZeroshotCLIP
base2new_test "$@"

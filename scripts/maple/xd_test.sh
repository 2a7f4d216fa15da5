#!/usr/bin/env bash
# MaPLe cross-dataset evaluation of the SOURCE-trained model (SOURCE, default imagenet): xd_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MaPLe, official configs (CFG=vit_b16_c2_ep5_batch4_2ctx_dagger for MaPLe-dagger).
lib_setup MaPLe vit_b16_c2_ep5_batch4_2ctx_cross_datasets 2
xd_test "$@"

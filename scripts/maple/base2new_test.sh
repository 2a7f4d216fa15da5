#!/usr/bin/env bash
# MaPLe base-to-new evaluation on new and all classes (SUBS): base2new_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MaPLe, official configs (CFG=vit_b16_c2_ep5_batch4_2ctx_dagger for MaPLe-dagger).
lib_setup MaPLe vit_b16_c2_ep5_batch4_2ctx 5
base2new_test "$@"

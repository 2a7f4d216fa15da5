#!/usr/bin/env bash
# MMRL domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMRL, official configs (the cross-dataset config).
lib_setup MMRL vit_b16_cross_datasets 1
xd_test "$@"

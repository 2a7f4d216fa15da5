#!/usr/bin/env bash
# MMRL_BMIP domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMRL + BMIP (no official code; MMRL's configs and schedule, BMIP's gates; the cross-dataset config).
lib_setup MMRL_BMIP vit_b16_cross_datasets 1
xd_test "$@"

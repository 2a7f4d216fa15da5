#!/usr/bin/env bash
# MMA domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMA, official configs (ImageNet: CFG=vit_b16_ep5_imnet).
lib_setup MultiModalAdapter vit_b16_ep5_imnet 5
xd_test "$@"

#!/usr/bin/env bash
# HiCroPL domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# HiCroPL, official configs (ImageNet base-to-new: CFG=vit_b16_c2_ep40_batch128_16ctx); base-to-new loads model-best (best_val, as released); PRESET paper: CFG=vit_b16_c2_ep50_batch32_16ctx_paper.
lib_setup HiCroPL vit_b16_c2_ep5_batch32_2ctx_cross_datasets 5
xd_test "$@"

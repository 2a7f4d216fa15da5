#!/usr/bin/env bash
# HiCroPL base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# HiCroPL, official configs (ImageNet base-to-new uses the release's vit_b16_c2_ep40_batch128_16ctx); base-to-new
# loads model-best (best_val, as released); PRESET paper: CFG=vit_b16_c2_ep50_batch32_16ctx_paper.
case "${1:-}" in
    imagenet) lib_setup HiCroPL vit_b16_c2_ep40_batch128_16ctx best ;;
    *) lib_setup HiCroPL vit_b16_c2_ep50_batch32_16ctx best ;;
esac
base2new_train "$@"

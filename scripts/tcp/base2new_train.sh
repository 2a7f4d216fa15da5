#!/usr/bin/env bash
# TCP base-to-new training: base2new_train.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Official recipe: 50 epochs (ImageNet and SUN397: 25, the epoch the release's script evaluates),
# batch 32, Adam 0.002 with eps 1e-3, 4 random context tokens, class-aware tokens before text block 8.
case "${1:-}" in
    imagenet | sun397) lib_setup TCP vit_b16_ep25_ctxv1 25 ;;
    *) lib_setup TCP vit_b16_ep50_ctxv1 50 ;;
esac
base2new_train "$@"

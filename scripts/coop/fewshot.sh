#!/usr/bin/env bash
# CoOp few-shot (IJCV paper): fewshot.sh <dataset> <seed> <shots> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# 16 random-init context tokens, class token at the end, unified context (override with
# TRAINER.COOP.N_CTX / CSC / CLASS_TOKEN_POSITION); epochs by shots: 1 -> 50, 2/4 -> 100, 8/16 -> 200,
# ImageNet always 50.
case "${1:-}:${3:-}" in
    imagenet:* | *:1) lib_setup CoOp vit_b16_ep50 50 ;;
    *:2 | *:4) lib_setup CoOp vit_b16_ep100 100 ;;
    *) lib_setup CoOp vit_b16 200 ;;
esac
fewshot "$@"

#!/usr/bin/env bash
# CoOp base-to-new evaluation on new and all classes: base2new_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Base-to-new as run in the CoCoOp paper: "a photo of a" init (4 context tokens), 200 epochs (ImageNet 50).
if [ "${1:-}" = imagenet ]; then
    lib_setup CoOp vit_b16_ep50_ctxv1 50
else
    lib_setup CoOp vit_b16_ctxv1 200
fi
base2new_test "$@"

#!/usr/bin/env bash
# CoOp cross-dataset evaluation: xd_test.sh <dataset> <seed> [KEY VALUE...] (model from SOURCE, default imagenet)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Cross-dataset / domain generalisation: ImageNet, 16 shots, all classes, 50 epochs, "a photo of a" init.
lib_setup CoOp vit_b16_ep50_ctxv1 50
xd_test "$@"

#!/usr/bin/env bash
# CoCoOp cross-dataset evaluation: xd_test.sh <dataset> <seed> [KEY VALUE...] (model from SOURCE, default imagenet)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Config of the CoCoOp paper for base-to-new, cross-dataset and domain generalisation.
lib_setup CoCoOp vit_b16_c4_ep10_batch1_ctxv1 10
xd_test "$@"

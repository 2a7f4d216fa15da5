#!/usr/bin/env bash
# CoCoOp training on the source dataset: xd_train.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Config of the CoCoOp paper for base-to-new, cross-dataset and domain generalisation.
lib_setup CoCoOp vit_b16_c4_ep10_batch1_ctxv1 10
xd_train "$@"

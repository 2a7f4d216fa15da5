#!/usr/bin/env bash
# CoCoOp domain generalisation evaluation: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Config of the CoCoOp paper for base-to-new, cross-dataset and domain generalisation.
lib_setup CoCoOp vit_b16_c4_ep10_batch1_ctxv1 10
xd_test "$@"

#!/usr/bin/env bash
# TCP domain generalisation evaluation: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# The release ships no cross-dataset script: the ImageNet base-to-new recipe (25 epochs) on all classes.
lib_setup TCP vit_b16_ep25_ctxv1 25
xd_test "$@"

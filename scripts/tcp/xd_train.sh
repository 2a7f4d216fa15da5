#!/usr/bin/env bash
# TCP training on all classes of the source dataset (ImageNet): xd_train.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# The release ships no cross-dataset script: the ImageNet base-to-new recipe (25 epochs) on all classes.
lib_setup TCP vit_b16_ep25_ctxv1 25
xd_train "$@"

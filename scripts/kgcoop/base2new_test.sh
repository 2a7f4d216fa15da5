#!/usr/bin/env bash
# KgCoOp base-to-new evaluation on new and all classes: base2new_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Official config: 100 epochs, batch 128, SGD 0.002, "a photo of a" init, W 8 (cross-dataset: the same
# config on 16 shots; the release's xd_train.sh uses 4 shots per dataset, a few-shot run by another name).
lib_setup KgCoOp vit_b16_ep100_ctxv1 100
base2new_test "$@"

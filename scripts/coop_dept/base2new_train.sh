#!/usr/bin/env bash
# CoOp_DePT base-to-new training: base2new_train.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# DePT's official CoOp recipe (10 epochs, batch 4, LR 0.0035, head x6.5); the same config on ImageNet for xd.
lib_setup CoOp_DePT vit_b16_ep10_bs4_lr35 10
base2new_train "$@"

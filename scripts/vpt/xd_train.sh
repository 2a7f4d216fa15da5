#!/usr/bin/env bash
# VPT cross-dataset / DG training on all classes of the source dataset (ImageNet): xd_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Deep vision prompting (MaPLe repo's VPT baseline); XD/DG reuse the base-to-new config on ImageNet.
lib_setup VPT vit_b16_c2_ep5_batch4_4 5
xd_train "$@"

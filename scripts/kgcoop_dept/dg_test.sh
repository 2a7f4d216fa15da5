#!/usr/bin/env bash
# KgCoOp_DePT domain generalisation evaluation: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# DePT's official KgCoOp recipe (10 epochs, batch 4, LR 0.0035, KG weight 2); the same config for xd.
lib_setup KgCoOp_DePT vit_b16_ep10_ctxv1_bs4_lr35 10
xd_test "$@"

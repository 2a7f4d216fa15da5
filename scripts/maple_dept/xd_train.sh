#!/usr/bin/env bash
# MaPLe_DePT training on all classes of the source dataset (ImageNet): xd_train.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# DePT's official MaPLe recipe (10 epochs, batch 4, LR 0.0035); the same config for xd.
lib_setup MaPLe_DePT vit_b16_c2_ep10_batch4_2ctx 10
xd_train "$@"

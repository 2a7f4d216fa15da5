#!/usr/bin/env bash
# BMIP_DePT domain generalisation evaluation: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# BMIP's released recipes (model-best by val) plus DePT's head (new: no repository has BMIP+DePT).
lib_setup BMIP_DePT BMIP_ctx2_dp9_lr2_cross_datasets 10
xd_test "$@"

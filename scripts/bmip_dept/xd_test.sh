#!/usr/bin/env bash
# BMIP_DePT cross-dataset evaluation of the SOURCE-trained model: xd_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# BMIP's released recipes (model-best by val) plus DePT's head (new: no repository has BMIP+DePT).
lib_setup BMIP_DePT BMIP_ctx2_dp9_lr2_cross_datasets 10
xd_test "$@"

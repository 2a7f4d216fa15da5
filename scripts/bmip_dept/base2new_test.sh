#!/usr/bin/env bash
# BMIP_DePT base-to-new evaluation on new and all classes: base2new_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# BMIP's released recipes (model-best by val) plus DePT's head (new: no repository has BMIP+DePT).
lib_setup BMIP_DePT BMIP_ctx2_dp9_lr2 best
base2new_test "$@"

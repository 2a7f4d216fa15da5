#!/usr/bin/env bash
# BMIP domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# BMIP (PRESET released = official behaviour; CFG=BMIP_ctx2_dp9_lr2_paper for the paper's method,
# CFG=BMIP_ablation_{add,add_sum,atten,joint} for Table 5). Base-to-new tests load model-best (LOADEP best).
lib_setup BMIP BMIP_ctx2_dp9_lr2_cross_datasets 10
xd_test "$@"

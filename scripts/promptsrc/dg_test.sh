#!/usr/bin/env bash
# PromptSRC domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC, official configs (GPA weights follow OPTIM.MAX_EPOCH; the test loads the last epoch).
lib_setup PromptSRC vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets 20
xd_test "$@"

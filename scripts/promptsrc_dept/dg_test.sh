#!/usr/bin/env bash
# PromptSRC_DePT domain generalisation evaluation: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC's official recipes plus DePT's head (the DePT release has no PromptSRC code).
lib_setup PromptSRC_DePT vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets 20
xd_test "$@"

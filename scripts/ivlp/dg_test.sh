#!/usr/bin/env bash
# IVLP domain generalisation evaluation on an ImageNet variant: dg_test.sh <imagenet_variant> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# IVLP 2+2 tokens, depth 12 (MaPLe repo; BMIP Table 5). CFG=vit_b16_c2_ep5_batch4_4ctx_language_only
# gives language-only deep prompting, CFG=vit_b16_c2_ep20_batch4_4+4ctx (LOADEP=20) PromptSRC's IVLP.
lib_setup IVLP vit_b16_c2_ep5_batch4_2+2ctx 5
xd_test "$@"

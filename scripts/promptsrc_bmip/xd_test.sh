#!/usr/bin/env bash
# PromptSRC + BMIP cross-dataset evaluation of the SOURCE-trained model (SOURCE, default imagenet): xd_test.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC + BMIP as released by BMIP (depth TRAINER.PROMPTSRC.PROMPT_DEPTH; BMIP behaviour from TRAINER.BMIP.*).
lib_setup PromptSRC_BMIP vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets 20
xd_test "$@"

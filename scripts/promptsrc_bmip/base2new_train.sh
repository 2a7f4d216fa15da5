#!/usr/bin/env bash
# PromptSRC + BMIP base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC + BMIP as released by BMIP (depth TRAINER.PROMPTSRC.PROMPT_DEPTH; BMIP behaviour from TRAINER.BMIP.*).
lib_setup PromptSRC_BMIP vit_bitp_ctx4_ep20TT_adam_PromptSRC 20
base2new_train "$@"

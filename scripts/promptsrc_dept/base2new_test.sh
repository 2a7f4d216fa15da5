#!/usr/bin/env bash
# PromptSRC_DePT base-to-new evaluation on new and all classes: base2new_test.sh <dataset> <seed> [KEY VALUE...]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC's official recipes plus DePT's head (the DePT release has no PromptSRC code).
lib_setup PromptSRC_DePT vit_b16_c2_ep20_batch4_4+4ctx 20
base2new_test "$@"

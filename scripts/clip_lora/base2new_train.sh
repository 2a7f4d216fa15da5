#!/usr/bin/env bash
# CLIP-LoRA base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# The release's fixed hyperparameters; the iteration budget sets the epochs, so evaluation loads the final
# model saved as model-best.pth.tar (LOADEP best; no model selection happens).
lib_setup CLIPLoRA vit_b16 best
base2new_train "$@"

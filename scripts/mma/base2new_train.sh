#!/usr/bin/env bash
# MMA base-to-new training on the base classes: base2new_train.sh <dataset> <seed> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# MMA, official configs (ImageNet: CFG=vit_b16_ep5_imnet).
lib_setup MultiModalAdapter vit_b16_ep5 5
base2new_train "$@"

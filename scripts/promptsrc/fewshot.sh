#!/usr/bin/env bash
# PromptSRC few-shot training and test on all classes: fewshot.sh <dataset> <seed> <shots> [KEY VALUE...]
# Data root from DATA (default ./data); see scripts/lib.sh for OUTPUT, CFG, LOADEP, SHOTS, SUBS.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# PromptSRC few-shot (official): GPA 30/30, or 45/5 on StanfordCars, OxfordFlowers, FGVCAircraft, DTD, EuroSAT.
lib_setup PromptSRC vit_b16_c2_ep50_batch4_4+4ctx_few_shot 50
case "${1:-}" in
    stanford_cars | oxford_flowers | fgvc_aircraft | dtd | eurosat)
        set -- "$1" "$2" "$3" TRAINER.PROMPTSRC.GPA_MEAN 45.0 TRAINER.PROMPTSRC.GPA_STD 5.0 "${@:4}" ;;
esac
fewshot "$@"

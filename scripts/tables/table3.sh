#!/usr/bin/env bash
# Table 3 (domain generalization: prompts trained on ImageNet, evaluated on ImageNet-V2/-Sketch/-A/-R).
# Runs every run the table needs (methods x datasets x seeds), skipping finished ones, then prints the
# table with the paper's numbers beside ours. Options go to tools.sweep (see docs/EVALUATION.md), e.g.
#   bash scripts/tables/table3.sh --executor slurm --slurm-partition gpu
#   bash scripts/tables/table3.sh --dry-run            # list the runs still to do
#   DATA=/data bash scripts/tables/table3.sh --format markdown
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec "${PYTHON:-python}" -m tools.sweep --table 3 --print-table "$@"

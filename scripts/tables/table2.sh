#!/usr/bin/env bash
# Table 2 (cross-dataset transfer: prompts trained on ImageNet, evaluated on 10 datasets).
# Runs every run the table needs (methods x datasets x seeds), skipping finished ones, then prints the
# table with the paper's numbers beside ours. Options go to tools.sweep (see docs/EVALUATION.md), e.g.
#   bash scripts/tables/table2.sh --executor slurm --slurm-partition gpu
#   bash scripts/tables/table2.sh --dry-run            # list the runs still to do
#   DATA=/data bash scripts/tables/table2.sh --format markdown
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec "${PYTHON:-python}" -m tools.sweep --table 2 --print-table "$@"

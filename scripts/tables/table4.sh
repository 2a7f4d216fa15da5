#!/usr/bin/env bash
# Table 4 (BMIP added to MaPLe, PromptSRC and CoPrompt; open-world averages over 11 datasets).
# Runs every run the table needs (methods x datasets x seeds), skipping finished ones, then prints the
# table with the paper's numbers beside ours. Options go to tools.sweep (see docs/EVALUATION.md), e.g.
#   bash scripts/tables/table4.sh --executor slurm --slurm-partition gpu
#   bash scripts/tables/table4.sh --dry-run            # list the runs still to do
#   DATA=/data bash scripts/tables/table4.sh --format markdown
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec "${PYTHON:-python}" -m tools.sweep --table 4 --print-table "$@"

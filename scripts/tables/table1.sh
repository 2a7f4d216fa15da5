#!/usr/bin/env bash
# Table 1 (open-world generalization: HM of base/new accuracy, Acc on all classes; 5 methods x 11 datasets).
# Runs every run the table needs (methods x datasets x seeds), skipping finished ones, then prints the
# table with the paper's numbers beside ours. Options go to tools.sweep (see docs/EVALUATION.md), e.g.
#   bash scripts/tables/table1.sh --executor slurm --slurm-partition gpu
#   bash scripts/tables/table1.sh --dry-run            # list the runs still to do
#   DATA=/data bash scripts/tables/table1.sh --format markdown
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec "${PYTHON:-python}" -m tools.sweep --table 1 --print-table "$@"

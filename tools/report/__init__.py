"""Reproduction report of an output folder: ``python -m tools.report OUTPUT_DIR`` (docs/EVALUATION.md)."""

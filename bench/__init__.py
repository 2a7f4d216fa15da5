"""Benchmarks (not tests): training step time, evaluation throughput, text-tower cost, peak memory.

Run ``python -m bench.run --help``; docs/PERFORMANCE.md explains the figures and records results.
"""

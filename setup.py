"""Installs the dependencies of the BMIP toolkit.

The project runs from its root (``python train.py ...``), like every repository of the CoOp/MaPLe
family. Its top-level packages ``clip`` and ``datasets`` would shadow OpenAI's ``clip`` and
HuggingFace's ``datasets`` if installed, so this distribution installs no modules at all: only the
requirements below. What running needs is ``requirements.txt``; testing, linting and SLURM sweeps are
extras, so a user who only trains does not install them.
"""

from pathlib import Path

from setuptools import setup

requirements = [
    line.strip()
    for line in (Path(__file__).parent / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

_SLURM = ["submitit"]  # tools.sweep --executor slurm/local (imported only there)
_TEST = ["pytest", "pytest-xdist", *_SLURM]  # the sweep tests run submitit's local executor
_LINT = ["ruff"]
EXTRAS = {"test": _TEST, "lint": _LINT, "slurm": _SLURM, "dev": sorted({*_TEST, *_LINT})}

setup(
    name="bmip-toolkit",
    version="0.1.0",
    description="BMIP and the CLIP prompt-learning methods it is compared with, on a Dassl-compatible engine",
    python_requires=">=3.10",
    packages=[],
    py_modules=[],
    install_requires=requirements,
    extras_require=EXTRAS,
)

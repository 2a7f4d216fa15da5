"""Our Dassl-compatible engine: the subset of Dassl.pytorch's API that CoOp/MaPLe/BMIP-style code uses.

The module tree mirrors Dassl's (``engine.config``, ``engine.utils``, ``engine.data``, ``engine.optim``,
``engine.evaluation``, ``engine.metrics``, ``engine.engine``); see docs/ENGINE.md for the symbol map.
"""

__version__ = "0.6.3-compat"

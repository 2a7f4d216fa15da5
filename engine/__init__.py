"""Our Dassl-compatible engine: the subset of Dassl.pytorch's API that CoOp/MaPLe/BMIP-style code uses.

The module tree mirrors Dassl's (``engine.config``, ``engine.utils``, ``engine.data``, ``engine.optim``,
``engine.evaluation``, ``engine.metrics``, ``engine.engine``); see docs/ENGINE.md for the symbol map.
"""

__version__ = "0.6.3-compat"

import os as _os

if _os.environ.get("ENGINE_DASSL_ALIAS", "").strip().lower() not in ("", "0", "false", "no"):
    from . import dassl_alias  # noqa: F401  (importing it activates the dassl.* alias; docs/DASSL_COMPAT.md)

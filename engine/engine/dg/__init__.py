"""Dassl's ``dassl.engine.dg``: of its domain-generalisation trainers, the baseline ``Vanilla``.

Importing it registers ``Vanilla`` (as a built-in name). The ``dassl`` alias imports it together with
``dassl.engine``, as Dassl's package does; this project's own runs never see it.
"""

from ..build import TRAINER_REGISTRY

with TRAINER_REGISTRY.builtins():
    from .vanilla import Vanilla

__all__ = ["Vanilla"]

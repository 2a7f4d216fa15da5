"""Opt-in import alias: ``dassl.*`` resolves to ``engine.*`` when the real Dassl is not installed.

Trainer files written for Dassl.pytorch (``from dassl.engine import TRAINER_REGISTRY, TrainerX``) then
run on this engine without edits. Turn it on with either

* ``import engine.dassl_alias`` (or ``engine.dassl_alias.install()``) before such a file is imported, or
* the environment variable ``ENGINE_DASSL_ALIAS=1`` (any value but empty/0/false/no; read when
  ``engine`` is first imported, so it covers ``python train.py ...``).

Every ``dassl.X.Y`` is the module object ``engine.X.Y`` itself (not a copy), so registries, classes and
``isinstance`` checks are shared: a trainer registered through ``dassl.engine.TRAINER_REGISTRY`` is found
by ``train.py``; ``dassl.engine`` also registers Dassl's ``Vanilla``. A Dassl module we do not provide
(``dassl.engine.da``, ``dassl.engine.ssl`` ...) fails with
an ``ImportError`` naming it. When a real ``dassl`` package is importable the alias stays off and
``install()`` returns False: the real package always wins.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

__all__ = ["install", "is_installed", "uninstall"]

_ALIAS, _TARGET = "dassl", "engine"
# Dassl's ``dassl.engine`` registers its generic trainers when imported; the alias does the same.
_ALSO_IMPORT = {"dassl.engine": ("engine.engine.dg",)}


def _target_name(fullname: str) -> str:
    return _TARGET + fullname[len(_ALIAS) :]


class _AliasLoader(importlib.abc.Loader):
    """Hands out the already-imported ``engine`` module for a ``dassl`` name (nothing is executed twice)."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the engine module was executed under its own name."""


class _DasslAliasFinder(importlib.abc.MetaPathFinder):
    """Meta path finder answering ``dassl`` and ``dassl.*`` with the matching ``engine`` modules."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        target_name = _target_name(fullname)
        try:
            module = importlib.import_module(target_name)
        except ModuleNotFoundError as e:
            if e.name is None or not target_name.startswith(e.name):
                raise
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: the Dassl alias maps it to {target_name!r}, which this engine "
                "does not provide (see docs/ENGINE.md for the supported Dassl API)",
                name=fullname,
            ) from e
        for extra in _ALSO_IMPORT.get(fullname, ()):
            importlib.import_module(extra)
        is_package = hasattr(module, "__path__")
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module), is_package=is_package)


_FINDER = _DasslAliasFinder()


def _real_dassl_available() -> bool:
    """True when a ``dassl`` other than this alias can be imported."""
    if _ALIAS in sys.modules and not is_installed():
        return True
    return any(
        finder is not _FINDER and hasattr(finder, "find_spec") and finder.find_spec(_ALIAS, None) is not None
        for finder in sys.meta_path
    )


def is_installed() -> bool:
    """Whether the alias finder is active in this interpreter."""
    return _FINDER in sys.meta_path


def install() -> bool:
    """Activate the alias unless a real ``dassl`` is importable; returns whether the alias is active."""
    if is_installed():
        return True
    if _real_dassl_available():
        return False
    sys.meta_path.insert(0, _FINDER)
    return True


def uninstall() -> None:
    """Remove the alias and forget every ``dassl`` module it handed out (tests, interactive sessions)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if n == _ALIAS or n.startswith(_ALIAS + ".")]:
        del sys.modules[name]


install()

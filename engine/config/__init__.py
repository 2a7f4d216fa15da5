"""Dassl's ``dassl.config``: the yacs defaults tree and helpers around it.

Two additions for trainer files written for other repositories (docs/DASSL_COMPAT.md):

* config hooks: ``register_cfg_hook(extend_cfg)`` makes every later :func:`get_cfg_default` (and
  ``train.py``, after its own keys) apply a file's ``extend_cfg``, so its keys need not be re-typed;
* value adapters: a key of ours whose type differs from the one another repository uses for it (KgCoOp's
  ``TRAINER.COOP.CTX_INIT: True`` against our string) registers a conversion, which merges from a file or
  a ``KEY VALUE`` list apply before yacs' type check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from yacs.config import CfgNode as _YacsNode

from .defaults import _C as cfg_default

__all__ = [
    "CfgNode",
    "apply_cfg_hooks",
    "clean_cfg",
    "get_cfg_default",
    "register_cfg_hook",
    "register_value_adapter",
]

CfgHook = Callable[[_YacsNode], None]
_CFG_HOOKS: list[CfgHook] = []
# full key -> [(type of the incoming value, type of our key, conversion)]
_VALUE_ADAPTERS: dict[str, list[tuple[type, type, Callable[[Any], Any]]]] = {}


def register_cfg_hook(hook: CfgHook) -> None:
    """Apply ``hook(cfg)`` (a trainer file's ``extend_cfg``) to every config built from now on; once per hook."""
    if hook not in _CFG_HOOKS:
        _CFG_HOOKS.append(hook)


def apply_cfg_hooks(cfg: _YacsNode) -> None:
    """Run the registered hooks in registration order (a hook's keys replace defaults of the same name)."""
    for hook in _CFG_HOOKS:
        hook(cfg)


def register_value_adapter(key: str, from_type: type, to_type: type, convert: Callable[[Any], Any]) -> None:
    """Merging a ``from_type`` value into ``key`` while the key holds a ``to_type`` stores ``convert(value)``."""
    _VALUE_ADAPTERS.setdefault(key, []).append((from_type, to_type, convert))


def _adapt(key: str, value: Any, current: Any) -> Any:
    for from_type, to_type, convert in _VALUE_ADAPTERS.get(key, ()):
        if type(value) is from_type and type(current) is to_type:
            return convert(value)
    return value


def _walk(node: _YacsNode, prefix: str = "") -> Iterable[tuple[_YacsNode, str, str]]:
    for name, value in node.items():
        full = prefix + name
        if isinstance(value, _YacsNode):
            yield from _walk(value, full + ".")
        else:
            yield node, name, full


def _lookup(cfg: _YacsNode, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, _YacsNode) or part not in node:
            return False, None
        node = node[part]
    return True, node


class CfgNode(_YacsNode):
    """yacs' ``CfgNode`` whose merges first apply the registered value adapters (module docstring).

    Only the root is of this class: its subtrees stay plain yacs nodes, because yacs' type check asks
    that a merged subtree has exactly the type of the one it meets (trainer files add ``yacs.CfgNode()``).
    """

    @classmethod
    def _decode_cfg_value(cls, value: Any) -> Any:
        if isinstance(value, dict):  # a merged subtree: a plain yacs node, like the one it meets
            return _YacsNode(value)
        return super()._decode_cfg_value(value)

    def merge_from_file(self, cfg_filename: str) -> None:
        with open(cfg_filename) as f:
            cfg = _YacsNode.load_cfg(f)
        self.merge_from_other_cfg(cfg)

    def merge_from_other_cfg(self, cfg_other: _YacsNode) -> None:
        for node, name, full in _walk(cfg_other):
            found, current = _lookup(self, full)
            if found:
                dict.__setitem__(node, name, _adapt(full, node[name], current))
        super().merge_from_other_cfg(cfg_other)

    def merge_from_list(self, cfg_list: list) -> None:
        adapted = list(cfg_list)
        for i in range(0, len(adapted) - 1, 2):
            key = adapted[i]
            found, current = _lookup(self, key) if key in _VALUE_ADAPTERS else (False, None)
            if found:
                adapted[i + 1] = _adapt(key, self._decode_cfg_value(adapted[i + 1]), current)
        super().merge_from_list(adapted)


def get_cfg_default() -> CfgNode:
    """A fresh copy of the defaults with the registered config hooks applied; callers extend and merge freely."""
    cfg = CfgNode()
    dict.update(cfg, cfg_default.clone())  # plain yacs subtrees (see CfgNode)
    apply_cfg_hooks(cfg)
    return cfg


def clean_cfg(cfg: _YacsNode, trainer: str) -> None:
    """Drop every ``TRAINER`` subtree except ``NAME`` and the one of ``trainer`` (case-insensitive).

    Keeps a printed config short; like Dassl, the caller decides whether to use it.
    """
    for key in list(cfg.TRAINER.keys()):
        if key == "NAME" or key.upper() == trainer.upper():
            continue
        cfg.TRAINER.pop(key)

"""Name -> class registries (trainers, datasets, evaluators), as in Dassl.

A name registered inside :meth:`Registry.builtins` (how this project registers its own trainers) yields
to a registration from outside, e.g. the official ``coop.py`` registering ``CoOp``, whichever comes
first: the outside one wins and a note says so. Two outside registrations of one name still clash, unless the second
passes ``force=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Registry"]


class Registry:
    """Maps ``obj.__name__`` to ``obj``; usable as a decorator or a direct call."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}
        self._builtin: set[str] = set()  # names an outside registration may take over
        self._registering_builtins = False

    @contextlib.contextmanager
    def builtins(self) -> Iterator[None]:
        """Registrations inside this block are built-ins: a later registration of the same name replaces them."""
        self._registering_builtins = True
        try:
            yield
        finally:
            self._registering_builtins = False

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            old = self._obj_map[name]
            outside_first = self._registering_builtins and name not in self._builtin
            if outside_first or (name in self._builtin and not self._registering_builtins):
                kept, other = (old, obj) if outside_first else (obj, old)
                print(
                    f'Note: {kept.__module__}.{kept.__qualname__} takes the name "{name}" in the {self._name} '
                    f"registry from the built-in {other.__module__}.{other.__qualname__} (still importable from there)"
                )
                if outside_first:
                    return
            else:
                raise KeyError(
                    f'An object named "{name}" was already registered in "{self._name}" registry '
                    f"(by {old.__module__}.{old.__qualname__}); rename the new one or register it with "
                    "register(force=True) to replace the old one"
                )
        self._obj_map[name] = obj
        if self._registering_builtins:
            self._builtin.add(name)
        else:
            self._builtin.discard(name)

    def register(self, obj: Any = None, force: bool = False) -> Callable | None:
        if obj is None:

            def wrapper(fn_or_class: Any) -> Any:
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return None

    def get(self, name: str) -> Any:
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in "{self._name}" registry; '
                f"known: {', '.join(sorted(self._obj_map))}"
            )
        return self._obj_map[name]

    def unregister(self, name: str) -> None:
        """Remove ``name``: lets tests register temporary classes without leaking them to other tests."""
        if name not in self._obj_map:
            raise KeyError(f'Object name "{name}" is not registered in "{self._name}" registry')
        del self._obj_map[name]
        self._builtin.discard(name)

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` holds a built-in that an outside registration may still take over."""
        return name in self._builtin

    def registered_names(self) -> list[str]:
        return list(self._obj_map.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

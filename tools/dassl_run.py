"""Run a Dassl entry point (Dassl's ``tools/train.py``, a repository's own ``train.py``) on this engine.

    python -m tools.dassl_run [--import FILE ...] SCRIPT [SCRIPT ARGUMENTS ...]

From the root of this project (or with it on ``PYTHONPATH``). Before anything imports ``dassl`` this
turns the ``dassl.*`` alias on (``ENGINE_DASSL_ALIAS=1``, inherited by DataLoader workers and child
processes) and makes ``clip.build_model`` return OpenAI's fp16 weights (``CLIP_OPENAI_FP16=1``), then
runs SCRIPT as ``__main__`` with ``sys.argv = [SCRIPT, ARGUMENTS...]``. SCRIPT's folder comes first on
``sys.path``, as with ``python SCRIPT``, so the repository's own ``trainers``, ``datasets`` and ``clip``
win; this project's come last, as a fallback (e.g. its ``Digits`` dataset).

``--import FILE`` imports a trainer file first (for entry points that import no trainers, like Dassl's
``tools/train.py``); a module-level ``extend_cfg(cfg)`` in it is registered as a config hook, so
``get_cfg_default()`` already holds its keys. ``--import NAME`` (not ending in ``.py``) imports a module by name,
e.g. ``--import datasets`` for this project's dataset readers. Registering a name that one of this project's trainers
holds (``CoOp``) takes the name over, with a note. See docs/DASSL_COMPAT.md.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVIRONMENT = {"ENGINE_DASSL_ALIAS": "1", "CLIP_OPENAI_FP16": "1"}


def import_file(path: str) -> ModuleType:
    """Import a trainer file by path (once), or a module by name, and register its ``extend_cfg`` as a
    config hook."""
    from engine.config import register_cfg_hook

    if not path.endswith(".py"):
        module = importlib.import_module(path)
        name = path
    else:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--import {path}: no such file")
        name = "dassl_client_" + os.path.splitext(os.path.basename(path))[0]
        module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    hook = getattr(module, "extend_cfg", None)
    if callable(hook):
        register_cfg_hook(hook)
    return module


def split_arguments(argv: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """(files to import, script, script arguments) from the launcher's command line."""
    imports, rest = [], list(argv)
    while rest and rest[0] in ("--import", "-i"):
        if len(rest) < 2:
            raise SystemExit(f"{rest[0]} needs a file\n\n{__doc__}")
        imports.append(rest[1])
        rest = rest[2:]
    if not rest or rest[0].startswith("-"):
        raise SystemExit(__doc__)
    return imports, rest[0], rest[1:]


def main(argv: Sequence[str] | None = None) -> None:
    imports, script, arguments = split_arguments(sys.argv[1:] if argv is None else argv)
    if not os.path.isfile(script):
        raise SystemExit(f"dassl_run: {script}: no such file")
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    script = os.path.abspath(script)
    sys.path[:] = [os.path.dirname(script)] + [p for p in sys.path if p not in ("", ROOT, os.getcwd())] + [ROOT]
    from engine import dassl_alias

    if not dassl_alias.install():
        print("Note: a real dassl package is installed; the script uses it, not this engine")
    for path in imports:
        import_file(path)
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

"""Run a Dassl entry point (Dassl's ``tools/train.py``, a repository's own ``train.py``) on this engine.

    python -m tools.dassl_run [--import FILE ...] SCRIPT [SCRIPT ARGUMENTS ...]

From the root of this project (or with it on ``PYTHONPATH``). Before anything imports ``dassl`` this
turns the ``dassl.*`` alias on (``ENGINE_DASSL_ALIAS=1``, inherited by DataLoader workers and child
processes) and makes ``clip.build_model`` return OpenAI's fp16 weights (``CLIP_OPENAI_FP16=1``), then
runs SCRIPT as ``__main__`` with ``sys.argv = [SCRIPT, ARGUMENTS...]``. SCRIPT's folder comes first on
``sys.path``, as with ``python SCRIPT``, so the repository's own ``trainers``, ``datasets`` and ``clip``
win; this project's come last, as a fallback (e.g. its ``Digits`` dataset). Where the repository has its own
``datasets``/``clip``, our readers are registered anyway and its ``clip._MODELS`` answers ``random:*``/``toy:clip``
(:func:`serve_project_names`).

``--import FILE`` imports a trainer file first (for entry points that import no trainers, like Dassl's
``tools/train.py``), inside its package when it has one; a module-level ``extend_cfg(cfg)`` in it is
registered as a config hook, so ``get_cfg_default()`` already holds its keys. ``--import REPO`` (a folder,
or its ``train.py``) registers the repository's ``extend_cfg`` and imports the trainers its train.py does. ``--import NAME`` (not ending in ``.py``) imports a module by name,
e.g. ``--import datasets`` for this project's dataset readers. Registering a name that one of this project's trainers
holds (``CoOp``) takes the name over, with a note. See docs/DASSL_COMPAT.md.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import runpy
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVIRONMENT = {"ENGINE_DASSL_ALIAS": "1", "CLIP_OPENAI_FP16": "1"}


# Packages every Dassl repository ships: ours are used, theirs answer the submodules ours lack.
FALLBACK_PACKAGES = ("clip", "datasets")
# The repository's modules of a top-level package whose name ours also use (``trainers``), per folder:
# they live outside ``sys.modules`` except while that folder's files are imported.
_SET_ASIDE: dict[tuple[str, str], dict[str, ModuleType]] = {}


def import_file(path: str) -> ModuleType:
    """Import what ``--import`` names and register its ``extend_cfg`` as a config hook.

    * a repository folder, or its ``train.py``: the entry script is imported (not run), its
      ``extend_cfg`` is registered and the trainers it imports (``import trainers.x``) come with it;
    * a trainer file: inside its package when its folder has an ``__init__.py`` (relative imports
      work), else as a lone module; its own ``extend_cfg`` is registered;
    * a module name (no ``.py``): imported as is, e.g. ``datasets``.

    A repository's own ``trainers`` package never replaces ours in ``sys.modules``; its ``clip`` and
    ``datasets`` folders serve the submodules ours lack (``datasets.imagenet_templates``).
    """
    from engine.config import register_cfg_hook

    if os.path.isfile(os.path.join(path, "train.py")):
        path = os.path.join(path, "train.py")
    if not path.endswith(".py"):
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError:
            if os.path.isdir(path):
                raise FileNotFoundError(f"--import {path}: a repository folder needs a train.py") from None
            raise
    else:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--import {path}: no such file")
        module = _import_path(path)
    hook = getattr(module, "extend_cfg", None)
    if callable(hook):
        register_cfg_hook(hook)
    return module


def _import_path(path: str) -> ModuleType:
    """The module of a file, imported in its package (or as the repository's entry script)."""
    root, name = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
    if os.path.basename(path) == "train.py":
        name = "dassl_repository_train"  # the entry script, imported for its extend_cfg and trainers
    else:
        while os.path.isfile(os.path.join(root, "__init__.py")):
            root, package = os.path.split(root)
            name = f"{package}.{name}"
        if "." not in name:
            name = f"dassl_client_{name}"
    _add_fallback_folders(root)
    packages = {"trainers", name.split(".")[0]} if "." in name else {"trainers"}
    with _repository_packages(root, packages - set(FALLBACK_PACKAGES)):
        if "." in name or name in sys.modules:
            return importlib.import_module(name)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


def _add_fallback_folders(root: str) -> None:
    """Let the repository's ``clip``/``datasets`` folders answer the submodules ours lack."""
    for package in FALLBACK_PACKAGES:
        folder = os.path.join(root, package)
        ours = importlib.import_module(package)
        if os.path.isdir(folder) and folder not in ours.__path__ and _is_ours(ours):
            ours.__path__.append(folder)


def _is_ours(module: ModuleType) -> bool:
    return os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or ""))) == ROOT


def serve_project_names(repository: str) -> None:
    """A repository whose own ``datasets``/``clip`` packages hide ours still reaches this project's names.

    Our dataset readers are imported (under our package, then set aside so the repository imports its
    own ``datasets``) and register as built-ins in the shared ``DATASET_REGISTRY``; the repository's
    ``clip._MODELS`` answers this project's generated backbones (``random:<arch>``, ``toy:clip``) and its
    ``clip._download`` hands out their weights (an OpenAI-layout state dict from our ``clip``), so its own
    ``load_clip_to_cpu`` and ``build_model`` read them. Nothing of the repository is edited.
    """
    own = [p for p in FALLBACK_PACKAGES if os.path.isdir(os.path.join(repository, p))]
    if not own:
        return
    ours: dict[str, dict[str, ModuleType]] = {}
    sys.path.insert(0, ROOT)
    try:
        for package in own:
            importlib.import_module(package)
            if package == "clip":
                importlib.import_module("clip.pretrained")
            ours[package] = {n: m for n, m in sys.modules.items() if n.split(".")[0] == package}
            for name in ours[package]:
                del sys.modules[name]
    finally:
        sys.path.remove(ROOT)
    if "clip" in ours:
        _answer_generated_backbones(ours["clip"])


def _answer_generated_backbones(our_clip: dict[str, ModuleType]) -> None:
    """Add ``random:<arch>``/``toy:clip`` to the repository's ``clip._MODELS`` and serve them in its ``_download``."""
    # The repository's package; its files reach the table as ``from clip import clip; clip._MODELS``.
    theirs = importlib.import_module("clip")
    theirs = getattr(theirs, "clip", theirs) if not hasattr(theirs, "_download") else theirs
    pretrained = our_clip["clip.pretrained"]
    names = [f"random:{arch}" for arch in our_clip["clip.factory"].ARCHS] + ["toy:clip"]
    original = theirs._download

    def _download(url: str, *args: object, **kwargs: object) -> str:
        if not isinstance(url, str) or not url.startswith(pretrained.GENERATED_PREFIXES):
            return original(url, *args, **kwargs)
        with _modules_in_place(our_clip):  # our clip imports its own modules lazily
            return pretrained._download(url)

    theirs._MODELS.update({name: name for name in names})
    theirs._download = _download


@contextlib.contextmanager
def _modules_in_place(modules: dict[str, ModuleType]) -> Iterator[None]:
    """``modules`` in ``sys.modules`` for the duration, whatever held their names before."""
    held = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in {m.split(".")[0] for m in modules}}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        sys.modules.update(held)


@contextlib.contextmanager
def _repository_packages(root: str, names: set[str]) -> Iterator[None]:
    """Import from ``root`` with the repository's own packages ``names`` (``trainers``) in place of ours."""
    ours = {n: m for n, m in sys.modules.items() if n.split(".")[0] in names}
    for n in ours:
        del sys.modules[n]
    for package in names:
        sys.modules.update(_SET_ASIDE.get((root, package), {}))
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)
        for package in names:
            theirs = {n: m for n, m in sys.modules.items() if n.split(".")[0] == package}
            _SET_ASIDE[(root, package)] = theirs
            for n in theirs:
                del sys.modules[n]
        sys.modules.update(ours)


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
    if os.path.dirname(script) != ROOT:
        serve_project_names(os.path.dirname(script))
    for path in imports:
        import_file(path)
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

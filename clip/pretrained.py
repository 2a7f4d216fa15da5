"""Where OpenAI's released CLIP checkpoints come from and how they are read from disk.

Files are cached in ``~/.cache/clip`` (override with the ``CLIP_CACHE_DIR`` environment variable or a
``download_root`` argument). A download is verified against the sha256 that OpenAI embeds as the
second-to-last component of each URL. Both TorchScript archives (what OpenAI publishes) and plain state
dicts (optionally nested under ``"state_dict"``) are accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "CLIP_CACHE_DIR"

_BASE_URL = "https://openaipublic.azureedge.net/clip/models"
# Backbones built here rather than downloaded: the seeded random test CLIPs and the shipped toy CLIP.
GENERATED_PREFIXES = ("random:", "toy:")


class _ModelTable(dict):
    """OpenAI's name -> URL table; ``random:<arch>`` and ``toy:`` names answer with themselves, so
    CoOp-style code (``clip._download(clip._MODELS[name])``) also runs on the backbones built here."""

    def __missing__(self, name: str) -> str:
        if isinstance(name, str) and name.startswith(GENERATED_PREFIXES):
            return name
        raise KeyError(name)


_MODELS: dict[str, str] = _ModelTable({
    "RN50": f"{_BASE_URL}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE_URL}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE_URL}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_BASE_URL}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_BASE_URL}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": f"{_BASE_URL}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE_URL}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE_URL}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": (
        f"{_BASE_URL}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt"
    ),
})

_TIMEOUT_S = 60  # seconds without data before a download is abandoned

# Keys OpenAI's TorchScript archives carry besides the weights (dropped by build_model).
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def available_models() -> list[str]:
    """Names of the released OpenAI checkpoints ``clip.load`` can fetch."""
    return list(_MODELS)


def default_cache_dir() -> Path:
    """``$CLIP_CACHE_DIR`` if set, else ``~/.cache/clip`` (OpenAI's location, so existing caches are reused)."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path("~/.cache/clip").expanduser()


class WeightsUnavailableError(OSError, RuntimeError):
    """CLIP weights that cannot be had: offline without the file, a bad checksum, an unreadable file.

    An ``OSError`` so that ``train.py`` reports it as one line, a ``RuntimeError`` as OpenAI's loader raised.
    """


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, root: Optional[str | os.PathLike] = None) -> str:
    """Return the verified local copy of ``url`` in ``root``, downloading it if needed.

    A cached file with a wrong checksum is re-downloaded; a download with a wrong checksum raises and is
    not kept. Offline, the error names the exact file to place and the URL to get it from.
    """
    root_dir = Path(root).expanduser() if root is not None else default_cache_dir()
    if url.startswith(GENERATED_PREFIXES):
        return _random_checkpoint(url, root_dir)
    expected = url.split("/")[-2]
    target = root_dir / os.path.basename(url)
    if target.exists() and not target.is_file():
        raise WeightsUnavailableError(f"{target} exists and is not a regular file")
    if target.is_file():
        if _sha256(target) == expected:
            return str(target)
        logger.warning("%s exists but its sha256 does not match %s; downloading it again", target, expected)
    root_dir.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s", url, target)
    fd, tmp_name = tempfile.mkstemp(dir=root_dir, prefix=target.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as output, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as source:
            shutil.copyfileobj(source, output, length=1 << 20)
    except (urllib.error.URLError, OSError) as error:
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"could not download the CLIP checkpoint ({error}). Without network access, place the file "
            f"{target.name} at {target} (get it from {url}), or set {CACHE_ENV_VAR} to the folder that holds it"
        ) from error
    actual = _sha256(tmp)
    if actual != expected:
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailableError(f"sha256 of the file downloaded from {url} is {actual}, expected {expected}")
    tmp.replace(target)
    return str(target)


def _random_checkpoint(name: str, root_dir: Path) -> str:
    """The state dict of ``clip.build_clip(name)`` saved in ``root_dir``, for ``random:<arch>`` (seed 0)
    and ``toy:`` names."""
    from .factory import build_clip

    target = root_dir / (name.replace(":", "-").replace("/", "-") + ".pt")
    if not target.is_file():
        root_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=root_dir, prefix=target.name, suffix=".part")
        with os.fdopen(fd, "wb") as output:
            torch.save(build_clip(name).state_dict(), output)
        Path(tmp_name).replace(target)
    return str(target)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; ``torch.save`` zips have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of a checkpoint file: a TorchScript archive or a (possibly nested) state dict, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint {path} does not exist or is not a file")
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsUnavailableError(
                f"{path} is neither a TorchScript archive nor a torch.save'd state dict ({error})"
            ) from error
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsUnavailableError(f"{path} does not hold a CLIP state dict (a mapping of names to tensors)")
    return state_dict

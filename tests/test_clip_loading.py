"""Checkpoint loading: equivalence with open_clip, TorchScript archives, cache, sha256, tokenizer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

import clip
from clip import pretrained

TEXTS = ["a photo of a cat.", "an aeroplane, flying high above the clouds at dusk", "x"]


def _perturb_batchnorm(model: torch.nn.Module) -> None:
    """Random BN statistics, so a wrong BN wiring cannot hide behind identity-like defaults."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.weight.shape
            module.weight.data = torch.rand(size, generator=generator) + 0.5
            module.bias.data = torch.randn(size, generator=generator) * 0.1
            module.running_mean = torch.randn(size, generator=generator) * 0.1
            module.running_var = torch.rand(size, generator=generator) + 0.5


@pytest.mark.parametrize("name", ["ViT-B-16-quickgelu", "RN50-quickgelu"])
def test_features_match_open_clip(name: str) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = open_clip.create_model(name, pretrained=None).eval()
    _perturb_batchnorm(reference)
    ours = clip.build_model(reference.state_dict())
    assert set(ours.state_dict()) == set(reference.state_dict())
    assert ours.text_projection.data_ptr() != reference.text_projection.data_ptr(), "weights are copied"
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ids = clip.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), reference.encode_image(images), atol=1e-5, rtol=0)
        assert torch.allclose(ours.encode_text(ids), reference.encode_text(ids), atol=1e-5, rtol=0)


class _OpenAIStyleArchive(torch.nn.Module):
    """Holds a CLIP's weights at OpenAI's key names plus the metadata buffers OpenAI's archives carry."""

    def __init__(self, model: clip.CLIP) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, parameter in model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for key, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
            self.register_buffer(key, torch.tensor(value))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_load_torchscript_archive(tmp_path: Path) -> None:
    """A TorchScript archive laid out like OpenAI's loads through clip.load."""
    source = clip.build_clip("random:tiny", seed=4)
    images, ids = torch.randn(1, 3, 224, 224), clip.tokenize(["a cat"])
    traced = torch.jit.trace(_OpenAIStyleArchive(source), images, check_trace=False)
    assert "vocab_size" in traced.state_dict()
    archive = tmp_path / "tiny.pt"
    traced.save(str(archive))

    model, preprocess = clip.load(str(archive))
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), source.encode_image(images))
        assert torch.equal(model.encode_text(ids), source.encode_text(ids))
    tensor = preprocess(Image.new("L", (300, 260), color=128))
    assert tensor.shape == (3, 224, 224)
    with pytest.raises(ValueError, match="jit=True"):
        clip.load(str(archive), jit=True)


def test_load_plain_and_nested_state_dicts(tmp_path: Path) -> None:
    source = clip.to_precision(clip.build_clip("random:tiny", seed=7), "fp16")
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "nested.pth")
    for name in ("plain.pt", "nested.pth"):
        model = clip.build_clip(str(tmp_path / name))
        assert model.dtype == torch.float32 and not model.training
        assert torch.equal(model.text_projection, source.text_projection.float())


def test_bad_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no_such_file.pt"):
        clip.build_clip(str(tmp_path / "no_such_file.pt"))
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="other.pt"):
        clip.build_clip(str(tmp_path / "other.pt"))
    torch.save({"visual.proj": torch.zeros(2, 2)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="visual.conv1.weight"):
        clip.build_clip(str(tmp_path / "partial.pt"))


def _published(tmp_path: Path, payload: bytes, digest: str | None = None) -> str:
    """A file:// URL laid out like OpenAI's (the sha256 is the second-to-last path component)."""
    digest = digest or hashlib.sha256(payload).hexdigest()
    folder = tmp_path / "server" / digest
    folder.mkdir(parents=True)
    (folder / "Model.pt").write_bytes(payload)
    return (folder / "Model.pt").as_uri()


def test_download_verifies_and_caches(tmp_path: Path) -> None:
    url = _published(tmp_path, b"weights")
    cache = tmp_path / "cache"
    target = clip._download(url, str(cache))
    assert Path(target) == cache / "Model.pt" and Path(target).read_bytes() == b"weights"
    Path(target).write_bytes(b"corrupted")
    assert Path(clip._download(url, str(cache))).read_bytes() == b"weights", "bad cache is fetched again"


def test_download_rejects_sha256_mismatch(tmp_path: Path) -> None:
    url = _published(tmp_path, b"tampered", digest="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="sha256"):
        clip._download(url, str(cache))
    assert not any(cache.iterdir()), "a file with the wrong checksum must not be kept"


def test_offline_without_file_names_file_and_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "unreachable" / ("a" * 64) / "ViT-B-16.pt").as_uri()
    monkeypatch.setitem(pretrained._MODELS, "ViT-B/16", url)
    monkeypatch.setenv(clip.CACHE_ENV_VAR, str(tmp_path / "env_cache"))
    assert clip.default_cache_dir() == tmp_path / "env_cache"
    with pytest.raises(RuntimeError) as info:
        clip.build_clip("ViT-B/16")
    message = str(info.value)
    assert str(tmp_path / "env_cache" / "ViT-B-16.pt") in message and url in message
    assert clip.CACHE_ENV_VAR in message


def test_model_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"ViT-B/16", "ViT-B/32", "ViT-L/14", "ViT-L/14@336px", "RN50", "RN101"} <= set(clip.available_models())
    for name, url in clip._MODELS.items():
        digest = url.split("/")[-2]
        assert len(digest) == 64 and int(digest, 16) >= 0, name
    monkeypatch.delenv(clip.CACHE_ENV_VAR, raising=False)
    assert clip.default_cache_dir() == Path.home() / ".cache" / "clip"


def test_tokenize_matches_open_clip_and_openai_semantics() -> None:
    ids = clip.tokenize(TEXTS)
    assert ids.dtype == torch.long and ids.shape == (3, 77)
    assert torch.equal(ids, open_clip.tokenize(TEXTS))
    lengths = [len(clip.encode(text)) for text in TEXTS]
    assert torch.equal(ids.argmax(-1), torch.tensor(lengths) + 1)
    assert ids[0, 0] == 49406 and int(ids.max()) == 49407
    assert clip.encode("a photo") == ids[0, 1:3].tolist()
    long_text = " ".join(["word"] * 100)
    with pytest.raises(RuntimeError, match="context length 77"):
        clip.tokenize(long_text)
    truncated = clip.tokenize(long_text, truncate=True)
    assert truncated[0, -1] == 49407 and truncated[0].argmax() == 76 and torch.all(truncated[0, 1:-1] > 0)
    assert clip.tokenize("a cat", context_length=8).shape == (1, 8)

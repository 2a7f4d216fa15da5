"""OpenAI-API compatibility of ``clip``: ``clip.simple_tokenizer`` and the (L, N, D) layout of models that
``clip.build_model`` / ``clip.load`` return, so CoOp's ``TextEncoder`` (permute -> transformer -> permute)
computes our ``encode_text``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import clip
from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer

TEXTS = ["a photo of a dog.", "a photo of a sea lion, a type of pinniped.", "X X X X forest"]


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return clip.build_clip("random:tiny", seed=3).state_dict()


class CoOpTextEncoder(nn.Module):
    """The text encoder of the official CoOp/MaPLe trainers: OpenAI's LND layout around ``transformer``."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


def _coop_features(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return CoOpTextEncoder(model)(model.token_embedding(ids).type(model.dtype), ids)


def test_coop_text_encoder_matches_encode_text_on_build_model(tiny_state_dict) -> None:
    model = clip.build_model(tiny_state_dict)
    assert model.transformer.batch_first is False and model.visual.transformer.batch_first is False
    ids = clip.tokenize(TEXTS)
    with torch.no_grad():
        ours = model.encode_text(ids)
        image = model.encode_image(torch.zeros(1, 3, 224, 224))
    assert torch.allclose(_coop_features(model, ids), ours, atol=1e-5, rtol=0)
    # The towers are unaffected by the layout of direct calls.
    own = clip.build_clip("random:tiny", seed=3)
    assert own.transformer.batch_first is True
    with torch.no_grad():
        assert torch.equal(own.encode_text(ids), ours)
        assert torch.equal(own.encode_image(torch.zeros(1, 3, 224, 224)), image)
    # ...and the batch-first model is exactly what the LND code must not be given.
    assert not torch.allclose(_coop_features(own, ids), ours, atol=1e-3)


def test_direct_vision_transformer_call_takes_lnd(tiny_state_dict) -> None:
    model = clip.build_model(tiny_state_dict)
    tokens = torch.randn(2, 50, model.vision_width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch_first = model.visual.transformer(tokens, batch_first=True)
        lnd = model.visual.transformer(tokens.permute(1, 0, 2))
    assert torch.equal(lnd.permute(1, 0, 2), batch_first)


def test_clip_load_returns_the_openai_layout(tiny_state_dict, tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_state_dict, path)
    model, _ = clip.load(str(path))
    assert model.transformer.batch_first is False and model.visual.transformer.batch_first is False
    ids = clip.tokenize(TEXTS[:2])
    with torch.no_grad():
        assert torch.allclose(_coop_features(model, ids), model.encode_text(ids), atol=1e-5, rtol=0)


def test_simple_tokenizer_is_openais() -> None:
    tokenizer = _Tokenizer()
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    assert (sot, eot) == (49406, 49407) and len(tokenizer.encoder) == 49408
    assert tokenizer.decoder[eot] == "<|endoftext|>" and tokenizer.decoder[tokenizer.encoder["dog</w>"]] == "dog</w>"
    ids = tokenizer.encode("A photo of a  Sea-Lion.")
    assert tokenizer.decode(ids) == "a photo of a sea - lion . "
    assert ids == clip.encode("a photo of a sea-lion.")
    # What CoOp measures with it: the class-name length, and tokenize = [SOT] + encode + [EOT].
    assert len(tokenizer.encode("sea lion")) == 2
    assert clip.tokenize("sea lion")[0, :4].tolist() == [sot, *tokenizer.encode("sea lion"), eot]
    assert tokenizer.encode("<|endoftext|>") == [eot]  # OpenAI's pattern keeps the special token whole

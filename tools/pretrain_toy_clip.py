"""Contrastively pretrain the toy CLIP (``toy:clip``) on rendered shapes and Digits; see docs/TOY_CLIP.md.

    python -m tools.pretrain_toy_clip                       # writes clip/weights/toy_clip.pt.gz
    python -m tools.pretrain_toy_clip --steps 3 --output /tmp/t.pt.gz --no-eval   # a quick check

Every batch is drawn afresh from a seeded generator: ToyShapes renderings (datasets/toy_shapes.py) of
every colour-shape composition except ``HELD_OUT`` ones, with compositional captions, and Digits' train
images (never its val or test ones) with digit captions. The loss is CLIP's symmetric contrastive loss
with every caption of the same concept counted as a positive (a batch has many images per concept).
Single-threaded on CPU it is deterministic for a seed: the same seed writes the same bytes.
The evaluation at the end reports zero-shot accuracy ("a photo of a {}.") on freshly rendered images of
the seen compositions, the held-out ones, the shifted rendering, and on the Digits test images.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import clip
from clip.toy import TOY_MODELS, new_toy_clip, save_toy_clip
from clip.transform import OPENAI_MEAN, OPENAI_STD
from datasets import digits as digits_data
from datasets import toy_shapes as shapes

# Compositions never rendered during pretraining (one per colour, three in the base half, three in new):
# their zero-shot accuracy measures composition of words learned apart.
HELD_OUT = (("red", "circle"), ("blue", "triangle"), ("purple", "cross"),
            ("green", "triangle"), ("yellow", "cross"), ("orange", "circle"))  # fmt: skip
SHIFTED_RATE = 0.05  # share of shape images drawn in the domain-shifted rendering ("a striped ...")
DIGIT_RATE = 0.2
DUSK_RATE = 0.3  # share of (unshifted) shape images drawn in dusk light, captioned "a dusk photo of a ..."


def shape_captions(colour: str, shape: str, background: str, shifted: bool, dusk: bool = False) -> list[str]:
    """The captions one rendered image may get (one is drawn uniformly)."""
    if dusk:
        return [f"a dusk photo of a {colour} {shape}.", f"a {colour} {shape} at dusk.",
                f"a photo of a {colour} {shape} at dusk."]  # fmt: skip
    if shifted:
        return [f"a photo of a striped {colour} {shape}.", f"a {colour} {shape} with stripes."]
    return [
        f"a photo of a {colour} {shape}.",
        f"a {colour} {shape}.",
        f"a {colour} {shape} on a {background} background.",
        f"a photo of a {colour} {shape} on a {background} background.",
    ]


def digit_captions(name: str) -> list[str]:
    return [f"a photo of the digit {name}.", f"a photo of a {name}.", f"a handwritten {name}.", f"the number {name}."]


class Batches:
    """An endless, seeded stream of (images uint8 (N, 32, 32, 3), captions, concept ids)."""

    def __init__(self, seed: int, batch_size: int) -> None:
        from PIL import Image
        from sklearn.datasets import load_digits

        self.rng = np.random.default_rng(seed)
        self.batch_size = batch_size
        self.pairs = [p for p in shapes.compositions() if p not in HELD_OUT]
        loaded = load_digits()
        self.digits = []
        for i in digits_data.train_indices(loaded.target):
            gray = (255 - loaded.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(gray).resize((shapes.IMAGE_SIZE,) * 2, Image.Resampling.BICUBIC)
            self.digits.append((np.asarray(image.convert("RGB")), int(loaded.target[i])))

    def next(self) -> tuple[np.ndarray, list[str], list[str]]:
        images, captions, concepts = [], [], []
        for _ in range(self.batch_size):
            if self.rng.random() < DIGIT_RATE:
                pixels, label = self.digits[int(self.rng.integers(len(self.digits)))]
                dy, dx = self.rng.integers(-2, 3, size=2)
                pixels = np.roll(pixels, (int(dy), int(dx)), axis=(0, 1))
                name = digits_data.CLASSNAMES[label]
                options, concept = digit_captions(name), f"digit {name}"
            else:
                colour, shape = self.pairs[int(self.rng.integers(len(self.pairs)))]
                shifted = bool(self.rng.random() < SHIFTED_RATE)
                dusk = not shifted and bool(self.rng.random() < DUSK_RATE)
                background = shapes.BACKGROUNDS[int(self.rng.integers(len(shapes.BACKGROUNDS)))]
                pixels = shapes.render(colour, shape, self.rng, background, shifted=shifted, dusk=dusk)
                options = shape_captions(colour, shape, background, shifted, dusk)
                concept = f"{colour} {shape}" + (" at dusk" if dusk else "")  # another concept than daylight
            images.append(pixels)
            captions.append(options[int(self.rng.integers(len(options)))])
            concepts.append(concept)
        return np.stack(images), captions, concepts


def _upsampler(size: int, out: int) -> torch.Tensor:
    """(out, size) matrix of 1-D bicubic upsampling: bicubic is separable, so ``U x U^T`` is
    ``F.interpolate(x, out, mode="bicubic")`` at a fraction of its cost."""
    eye = torch.eye(size).view(size, 1, 1, size)
    return F.interpolate(eye, size=(1, out), mode="bicubic", align_corners=False).view(size, out).t()


_UPSAMPLE = _upsampler(shapes.IMAGE_SIZE, 224)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> the normalised (N, 3, 224, 224) batch the evaluation pipeline produces."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (_UPSAMPLE @ x @ _UPSAMPLE.t()).clamp(0, 1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(model: clip.CLIP, images: np.ndarray, captions: list[str], concepts: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE over the batch's distinct captions; same-concept pairs are all positives."""
    texts = sorted(set(captions))
    text_concept = {}
    for caption, concept in zip(captions, concepts):
        text_concept[caption] = concept
    image_f = F.normalize(model.encode_image(to_input(images)), dim=-1)
    text_f = F.normalize(model.encode_text(clip.tokenize(texts)), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image_f @ text_f.t()
    positive = torch.tensor([[text_concept[t] == c for t in texts] for c in concepts], dtype=torch.float32)
    to_text = -(F.log_softmax(logits, dim=1) * positive / positive.sum(1, keepdim=True)).sum(1).mean()
    to_image = -(F.log_softmax(logits.t(), dim=1) * positive.t() / positive.t().sum(1, keepdim=True)).sum(1).mean()
    return (to_text + to_image) / 2


def zero_shot(model: clip.CLIP, images: np.ndarray, labels: np.ndarray, names: list[str], template: str) -> float:
    """Top-1 accuracy (%) of ``template`` prompts over ``names``."""
    with torch.no_grad():
        text_f = F.normalize(model.encode_text(clip.tokenize([template.format(n) for n in names])), dim=-1)
        preds = []
        for start in range(0, len(images), 256):
            image_f = F.normalize(model.encode_image(to_input(images[start : start + 256])), dim=-1)
            preds.append((image_f @ text_f.t()).argmax(1))
    return float((torch.cat(preds).numpy() == labels).mean() * 100)


def evaluate(model: clip.CLIP, seed: int = 12345, per_class: int = 20) -> dict[str, float]:
    """Zero-shot accuracies on fresh renderings (never the training stream) and on the Digits test images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    names = list(shapes.CLASSNAMES)
    results = {}
    for label_set, shifted, dusk in (("seen", False, False), ("held_out", False, False), ("shifted", True, False),
                                     ("seen_dusk", False, True)):  # fmt: skip
        images, labels = [], []
        for label, (colour, shape) in enumerate(shapes.compositions()):
            if label_set in ("seen", "held_out") and (label_set == "held_out") != ((colour, shape) in HELD_OUT):
                continue
            for _ in range(per_class):
                images.append(shapes.render(colour, shape, rng, shifted=shifted, dusk=dusk))
                labels.append(label)
        images, labels = np.stack(images), np.array(labels)
        results[f"toyshapes_{label_set}"] = zero_shot(model, images, labels, names, "a photo of a {}.")
        if dusk:  # the prompt that names the light: the headroom prompt learning has on the benchmark
            results[f"toyshapes_{label_set}_told"] = zero_shot(model, images, labels, names, "a dusk photo of a {}.")
    loaded = load_digits()
    train = set(digits_data.train_indices(loaded.target))
    held = [i for i in range(len(loaded.target)) if i not in train]
    images = []
    for i in held:
        gray = (255 - loaded.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(gray).resize((shapes.IMAGE_SIZE,) * 2, Image.Resampling.BICUBIC)
        images.append(np.asarray(image.convert("RGB")))
    results["digits_val_test"] = zero_shot(
        model, np.stack(images), loaded.target[held], list(digits_data.CLASSNAMES), "a photo of the digit {}."
    )
    return results


def caption_token_ids() -> torch.Tensor:
    """Every token id any pretraining caption contains (their embedding rows are the only trained ones)."""
    texts = [c for colour, shape in shapes.compositions() for b in shapes.BACKGROUNDS
             for shifted, dusk in ((False, False), (True, False), (False, True))
             for c in shape_captions(colour, shape, b, shifted, dusk)]  # fmt: skip
    texts += [c for name in digits_data.CLASSNAMES for c in digit_captions(name)]
    return torch.unique(clip.tokenize(texts))


def pretrain(seed: int, steps: int, batch_size: int, lr: float, log_every: int = 20) -> clip.CLIP:
    """The trained toy CLIP (train mode, fp32); cosine schedule with a linear warm-up."""
    torch.manual_seed(seed)
    model = new_toy_clip(seed).train()
    batches = Batches(seed, batch_size)
    # conv1 sees images upscaled 7x: each of its weights acts on 1/49 of a source pixel, so Adam's per-weight
    # step would move the effective pixel weights 49x faster than the rest; its learning rate is divided.
    conv = model.visual.conv1.weight
    groups = [{"params": [conv], "lr": lr / 49}, {"params": [p for p in model.parameters() if p is not conv]}]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    start = time.time()
    for step in range(steps):
        loss = contrastive_loss(model, *batches.next())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
    # Rows of tokens no caption contains kept their random initialisation: zero them (a word the toy CLIP
    # never read then means nothing, and the shipped file compresses to a third).
    unused = torch.ones(model.vocab_size, dtype=torch.bool)
    unused[caption_token_ids()] = False
    with torch.no_grad():
        model.token_embedding.weight[unused] = 0
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=TOY_MODELS["clip"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = the deterministic reference)")
    parser.add_argument("--no-eval", action="store_true", help="skip the zero-shot report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    model = pretrain(args.seed, args.steps, args.batch_size, args.lr)
    save_toy_clip(model, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB) after {time.time() - start:.0f}s")
    if not args.no_eval:
        from clip.toy import load_toy_clip

        for key, value in evaluate(load_toy_clip(args.output)).items():  # the saved (fp16-rounded) weights
            print(f"zero-shot {key}: {value:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

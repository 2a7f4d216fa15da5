"""Gaussian prompt aggregation (GPA, PromptSRC): a Gaussian-weighted average of the prompts over epochs.

Epoch ``e`` (1-based, of ``E``) gets the weight ``N(e; mean, std^2)``, the weights normalised to sum 1.
After each epoch the trainable tensors are added to a running sum with that epoch's weight; after the
last epoch the sum replaces them, so the last checkpoint and the final test use the aggregated prompts.

Two deliberate differences from the release (docs/METHODS.md, "PromptSRC"), neither changes the result
of an uninterrupted run:

* only the trainable tensors are summed, in fp32 or, for an fp64 model, fp64 (the release sums a deep copy of the whole state dict,
  frozen CLIP included; frozen tensors are constant and the weights sum to 1, so the average is the same);
* the running sum is a persistent buffer that checkpoints hold (the release keeps it in a trainer
  attribute, so a resumed run silently averaged only the epochs after the resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["GaussianPromptAggregator", "gaussian_epoch_weights"]


def gaussian_epoch_weights(mean: float, std: float, n_epochs: int) -> list[float]:
    """Normalised Gaussian weights of epochs ``1..n_epochs`` (PromptSRC's ``GPA_MEAN`` / ``GPA_STD``)."""
    if std <= 0:
        raise ValueError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0, got {std}")
    if n_epochs < 1:
        raise ValueError(f"GPA needs OPTIM.MAX_EPOCH >= 1, got {n_epochs}")
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, n_epochs + 1)]
    total = sum(density)
    if total == 0.0:
        raise ValueError(
            f"TRAINER.PROMPTSRC.GPA_MEAN {mean} with GPA_STD {std} gives every epoch 1..{n_epochs} zero weight "
            "(the Gaussian underflows); choose a mean within or near the epoch range"
        )
    return [d / total for d in density]


class GaussianPromptAggregator(nn.Module):
    """Running Gaussian-weighted sum of ``params`` over epochs; its buffers belong in checkpoints.

    Buffers: ``running_sum`` (all parameters flattened, at least fp32) and ``epochs_done`` (how many epochs the
    sum holds), so a resumed run continues the same average and a mismatch is caught, not averaged.
    """

    def __init__(self, params: Sequence[nn.Parameter], weights: Sequence[float]) -> None:
        super().__init__()
        if not params:
            raise ValueError("GaussianPromptAggregator needs at least one parameter to aggregate")
        self._params = list(params)
        self.weights = [float(w) for w in weights]
        numel = sum(p.numel() for p in self._params)
        device, dtype = self._params[0].device, torch.promote_types(self._params[0].dtype, torch.float32)
        self.register_buffer("running_sum", torch.zeros(numel, dtype=dtype, device=device))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long, device=device))

    @property
    def n_epochs(self) -> int:
        return len(self.weights)

    def _flat(self) -> Tensor:
        return torch.cat([p.detach().to(self.running_sum.dtype).reshape(-1) for p in self._params])

    @torch.no_grad()
    def accumulate(self, epoch: int) -> None:
        """Add the current parameters with the weight of ``epoch`` (0-based, as the engine counts)."""
        done = int(self.epochs_done)
        if epoch != done:
            raise RuntimeError(
                f"GPA holds the sum of {done} epoch(s) but is asked to add epoch {epoch + 1}: the checkpoint "
                "this run resumed from does not carry the GPA state of the epochs before it"
            )
        if not 0 <= epoch < self.n_epochs:
            raise IndexError(f"GPA has weights for {self.n_epochs} epochs, asked for epoch {epoch + 1}")
        self.running_sum.add_(self._flat().to(self.running_sum.device), alpha=self.weights[epoch])
        self.epochs_done.add_(1)

    @torch.no_grad()
    def apply(self) -> None:
        """Write the aggregated values into the parameters (after the last epoch)."""
        if int(self.epochs_done) != self.n_epochs:
            raise RuntimeError(f"GPA is applied after {int(self.epochs_done)} of {self.n_epochs} epochs")
        offset = 0
        for p in self._params:
            n = p.numel()
            p.copy_(self.running_sum[offset : offset + n].view_as(p).to(p.dtype))
            offset += n

"""ProGrad's gradient rule (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning").

ProGrad updates a prompt only along directions that do not contradict general (zero-shot) knowledge:
with ``g`` the gradient of the task loss (cross-entropy) and ``h`` the gradient of the knowledge loss
(the KL divergence to zero-shot CLIP), a step that conflicts with ``h`` (``g . h < 0``) loses its
component along ``h``: ``g - lambda * (g . h) / |h|^2 * h``; otherwise ``g`` is used as it is. The forks of
Dassl shipped with ProGrad and KgCoOp apply this rule to each parameter tensor separately, which is what
:func:`project_conflicting_gradient` does for one tensor.
"""

from __future__ import annotations

import torch

__all__ = ["project_conflicting_gradient"]


def project_conflicting_gradient(grad: torch.Tensor, guide: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """``grad`` without ``lambda_`` times its component along ``guide`` when the two point apart.

    The dot products are taken in fp32 (an fp16 prompt's gradients would overflow them); the result has
    ``grad``'s dtype. A zero ``guide`` (or ``grad``) is no conflict: ``grad`` comes back unchanged.
    """
    g, h = grad.float().flatten(), guide.float().flatten()
    dot = torch.dot(g, h)
    if not dot < 0:
        return grad
    projected = g - lambda_ * dot / torch.dot(h, h) * h
    return projected.view_as(grad).to(grad.dtype)

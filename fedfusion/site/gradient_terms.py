"""Data-independent terms of a site's local training: FedProx's proximal term, ridge and lasso.

All three act on the plain torch optimizer through its step hooks, never on the loss:

- before each step (``register_step_pre_hook``) the gradient gets ``mu * (w - w_global)`` (FedProx, ``w_global``
  the weights the round started from) and ``l2 * w`` on weight matrices (ridge);
- after each step (``register_step_post_hook``) every weight matrix is soft-thresholded,
  ``w <- sign(w) * max(|w| - lr * l1, 0)`` (lasso as a proximal step, which gives exact zeros).

Weight matrices are the parameters with two or more dimensions: biases and LayerNorm gains are not penalised.

Why hooks: under DP, Opacus' ``DPOptimizer.step`` first overwrites each ``p.grad`` with the clipped, noised,
averaged per-patient gradients (``opacus/optimizers/optimizer.py``: ``pre_step`` -> ``add_noise`` sets
``p.grad = summed_grad + noise``, ``scale_grad`` divides by the expected batch size) and only then calls the
wrapped optimizer's ``step``, which runs these hooks. A penalty added to the loss instead would be silently dropped
under DP: its gradient reaches ``p.grad`` but not the per-patient gradients (``grad_sample``) that Opacus clips and
sums, and ``p.grad`` is replaced (``tests/site/test_gradient_terms.py`` shows both). Added after privatization, the
terms depend only on the weights, never on a patient, so they are post-processing of the DP gradient and leave each
patient's bound (clipping norm / expected batch size per step) and the privacy accounting unchanged. Without DP the
same hooks run on the same optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedfusion.models.fusion_model import is_weight_matrix
from fedfusion.study.config import StudyConfig


@dataclass(frozen=True)
class GradientTerms:
    """The study's proximal, ridge and lasso strengths (0: off)."""

    proximal_mu: float = 0.0
    l2_penalty: float = 0.0
    l1_penalty: float = 0.0

    @classmethod
    def of(cls, study: StudyConfig) -> GradientTerms:
        """The study's ``proximal-mu``, ``l2-penalty`` and ``l1-penalty``."""
        return cls(study.proximal_mu, study.l2_penalty, study.l1_penalty)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the terms on ``optimizer`` (the plain torch optimizer, before ``make_private`` wraps it).

        The proximal term's anchor is the parameters' values now: attach at the start of the round.
        """
        if self.proximal_mu or self.l2_penalty:
            anchors = {id(p): p.detach().clone() for group in optimizer.param_groups for p in group["params"]}

            def add_gradient_terms(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                with torch.no_grad():
                    for p in _params(opt):
                        if p.grad is None:  # a parameter the step does not move
                            continue
                        if self.proximal_mu:
                            p.grad.add_(p - anchors[id(p)], alpha=self.proximal_mu)
                        if self.l2_penalty and is_weight_matrix(p.shape):
                            p.grad.add_(p, alpha=self.l2_penalty)

            optimizer.register_step_pre_hook(add_gradient_terms)
        if self.l1_penalty:

            def soft_threshold(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                with torch.no_grad():
                    for group in opt.param_groups:
                        threshold = float(group["lr"]) * self.l1_penalty
                        for p in group["params"]:
                            if is_weight_matrix(p.shape):
                                p.copy_(p.sign() * (p.abs() - threshold).clamp(min=0))

            optimizer.register_step_post_hook(soft_threshold)


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]

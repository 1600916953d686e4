"""Patient-level DP-SGD for one round of local training (Opacus, Poisson sampling, the site's noise).

One dataset item is one patient, so per-sample clipping bounds each patient's contribution. The engine is
recreated every round with the ledger restored (epsilon stays cumulative) and the model is unwrapped and
its hooks removed at the end, so a module is never wrapped twice.

Opacus' ``secure_mode`` is off: it needs ``torchcsprng``, which has no build for this torch (2.13). Instead
noise and Poisson sampling come from torch generators that the site trainer seeds with 63 bits from the OS
(never from the study seed, which the coordinator chooses), so no other party can regenerate the noise.
The generator itself (Philox/Mersenne) is not a CSPRNG: a known gap, to close when torchcsprng is available.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from opacus import PrivacyEngine
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader

from fedfusion.models.survival_loss import LOSS_REDUCTION
from fedfusion.privacy.accounting import AccountantHistory, history_of, restore_accountant
from fedfusion.study.config import StudyConfig

GRAD_SAMPLE_MODE = "hooks"
"""Opacus per-sample-gradient mode. With the tile-level Linear layers on ``[B, K, F]`` inputs and the small
Kronecker projection, "hooks" gave the lowest DP/no-DP epoch-time ratio in benchmarks/dp_overhead.py
(about 1.2-1.5x vs 1.4-1.7x for "ew"); both are exact (tests/privacy/test_dp_sgd.py checks both)."""

ItemT = TypeVar("ItemT")
"""A dataset item of the loader (one patient)."""


@dataclass
class PrivateTraining(Generic[ItemT]):
    """The private counterparts of a model, optimizer and loader for one round, and their engine."""

    model: AbstractGradSampleModule
    optimizer: DPOptimizer
    loader: DataLoader[ItemT]
    engine: PrivacyEngine

    def history(self) -> AccountantHistory:
        """The ledger so far: restored rounds plus this round's steps."""
        return history_of(self.engine.accountant)

    def step_without_patients(self) -> None:
        """The DP step of an empty Poisson batch: noise only, still counted by the accountant.

        Skipping the step would break the Poisson-sampling analysis, and a zero-patient forward pass is not
        possible in every mode ("ew" refuses it; Opacus replaces a first empty batch with zero tensors), so
        the step is taken on zero-length per-patient gradients without running the model.
        """
        self.optimizer.zero_grad(set_to_none=True)
        for param in self.optimizer.params:
            param.grad_sample = param.new_zeros((0, *param.shape))
        self.optimizer.step()

    def release(self) -> nn.Module:
        """Remove Opacus' hooks and attributes and return the plain module (no ``_module.`` prefix)."""
        module: nn.Module = self.model.to_standard_module()
        return module


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[ItemT], study: StudyConfig,
                 *, noise_multiplier: float, history: Sequence[Sequence[float]] = (), noise_seed: int | None = None,
                 grad_sample_mode: str = GRAD_SAMPLE_MODE) -> PrivateTraining[ItemT]:
    """Wrap for DP-SGD with ``noise_multiplier`` (the site's: ``fedfusion.privacy.calibration``), the study's
    clipping norm and accountant, resuming ``history``.

    ``loader`` must yield one patient per item; it is replaced by a Poisson-sampling loader that keeps its
    generator. ``noise_seed`` seeds the Gaussian noise (on the model's device).
    """
    with warnings.catch_warnings():  # "Secure RNG turned off": handled as described in the module docstring
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        engine = PrivacyEngine(accountant=study.accountant)
    engine.accountant = restore_accountant(study.accountant, history)
    noise_generator = None
    if noise_seed is not None:
        device = next(model.parameters()).device
        noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=study.max_grad_norm, loss_reduction=LOSS_REDUCTION, poisson_sampling=True,
        noise_generator=noise_generator, grad_sample_mode=grad_sample_mode,
    )
    return PrivateTraining(private_model, private_optimizer, private_loader, engine)

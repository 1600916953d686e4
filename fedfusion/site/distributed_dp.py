"""A site's part of one distributed-DP round (DP-FedSGD): its clipped gradient sum, then its noisy integer words.

At the train message (``clipped_gradient_sum``) the site Poisson-samples its training patients at the study's
``sample-rate`` with an OS-seeded generator, computes each sampled patient's gradient of ``patient_loss`` at the
global weights (Opacus' per-sample machinery; one item = one patient), clips each to ``max-grad-norm`` C and sums
them (no division). The sum stays at the site. At stage 3 (``masked_noisy_sum``), knowing the round's key list,
it scales the sum into the integer domain, rounds it without bias, adds its Skellam noise share and masks the
words (``fedfusion.secure_aggregation.integer_noise``). Removing one patient moves the sum by at most C.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import NDArray
from opacus import GradSampleModule

from fedfusion.errors import PrivacyError
from fedfusion.models.survival_loss import patient_loss
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.integer_noise import DistributedNoise, flatten, noisy_words, os_seeded_generator
from fedfusion.secure_aggregation.messages import MaskedInput
from fedfusion.secure_aggregation.quantize import layout_of
from fedfusion.secure_aggregation.site import SecAggSite
from fedfusion.site.patient_bags import PatientBagDataset, PatientBatch
from fedfusion.site.trainer import SiteTrainer

CLIP_EPSILON = 1e-6
"""Added to a patient's gradient norm before dividing (Opacus' convention)."""


def clipped_gradient_sum(trainer: SiteTrainer, weights: dict[str, torch.Tensor], *, seed: int,
                         rng: np.random.Generator | None = None) -> tuple[dict[str, NDArray[np.float64]], int]:
    """The sum of the Poisson-sampled patients' clipped gradients at ``weights``, by state-dict name, and how many
    patients were sampled (which stays at the site).

    ``seed`` drives tile sampling and dropout; the Poisson sample comes from ``rng`` (OS-seeded when ``None``:
    leave it so outside tests). Entries of the state dict that are not parameters get a zero sum.
    """
    study = trainer.study
    patients = trainer.cohort.train
    rng = rng if rng is not None else os_seeded_generator()
    sampled = np.flatnonzero(rng.random(len(patients)) < study.sample_rate)
    with trainer.seeded(seed), trainer.leased(weights) as model:
        sums = {name: torch.zeros_like(tensor, dtype=torch.float64) for name, tensor in model.state_dict().items()}
        parameters = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        per_patient = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        dataset = PatientBagDataset(patients, study, seed=seed)
        for start in range(0, len(sampled), study.batch_size):
            items = [dataset[int(index)] for index in sampled[start : start + study.batch_size]]
            batch = PatientBatch(*(torch.stack(column) for column in zip(*items, strict=True))).to(trainer.device)
            per_patient.zero_grad(set_to_none=True)
            losses = patient_loss(per_patient(*batch.model_inputs()), batch.targets, study.tasks)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                losses.sum().backward()  # type: ignore[no-untyped-call]
            grads = {name: _grad_sample(p, len(items)) for name, p in parameters}
            squared = torch.zeros(len(items), dtype=torch.float64, device=trainer.device)
            for grad in grads.values():
                squared += (grad.flatten(1).double() ** 2).sum(dim=1)
            norms = torch.sqrt(squared)
            factors = torch.clamp(study.max_grad_norm / (norms + CLIP_EPSILON), max=1.0)
            for name, grad in grads.items():
                sums[name] += torch.einsum("b,b...->...", factors, grad.double())
        per_patient.to_standard_module()  # hooks removed: the leased model is kept for the next round
    return {name: total.cpu().numpy() for name, total in sums.items()}, len(sampled)


def _grad_sample(parameter: torch.Tensor, batch: int) -> torch.Tensor:
    """A parameter's per-patient gradients ``[batch, ...]`` (zeros when the batch did not reach it)."""
    grad_sample = getattr(parameter, "grad_sample", None)
    if grad_sample is None:
        return parameter.new_zeros((batch, *parameter.shape))
    if not isinstance(grad_sample, torch.Tensor) or grad_sample.shape[0] != batch:
        raise PrivacyError("distributed DP: per-patient gradients do not have one row per patient")
    return grad_sample


def check_threshold(config: SecAggConfig, noise: DistributedNoise) -> None:
    """``PrivacyError`` unless the round's SecAgg threshold keeps fewer than n - t survivors from unmasking."""
    needed = noise.required_survivors(config.num_sites)
    if config.threshold < needed:
        raise PrivacyError(f"distributed DP with tolerance {noise.tolerance} needs a secure-aggregation threshold "
                           f"of at least {needed} of {config.num_sites} sites, the round asks {config.threshold}")


def masked_noisy_sum(secagg: SecAggSite, ciphertexts: Mapping[int, bytes],
                     gradient_sum: Mapping[str, NDArray[np.floating]], noise: DistributedNoise,
                     rng: np.random.Generator | None = None) -> MaskedInput:
    """Stage 3 of a distributed-DP round: the gradient sum in the integer domain, plus this site's Skellam share
    (variance sigma**2 C**2 / (gamma**2 (n - t))), masked. Gamma follows from the round's key list."""
    check_threshold(secagg.config, noise)
    num_sites = secagg.config.num_sites
    gamma = noise.scale(secagg.announced_weight, num_sites)
    words = noisy_words(flatten(gradient_sum), gamma, noise.share_variance(num_sites, gamma),
                        rng if rng is not None else os_seeded_generator())
    return secagg.masked_words(ciphertexts, layout_of(gradient_sum), words)

"""A site's training and evaluation of the study model on its own patients, independent of Flower.

The Flower ClientApp is a thin adapter around ``SiteTrainer``: it passes global weights and the site's
privacy ledger in, and sends the returned weights and aggregate metrics out. Nothing patient-level leaves.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader

from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.devices import resolve_device
from fedfusion.errors import ConfigError, DataError
from fedfusion.evaluation.task_metrics import empty_metrics, task_metrics
from fedfusion.models.fusion_model import StudyModel
from fedfusion.models.survival_loss import batch_loss, patient_loss, risk_score
from fedfusion.privacy.accounting import AccountantHistory, epsilon_spent, validated_history
from fedfusion.privacy.dp_sgd import GRAD_SAMPLE_MODE, make_private
from fedfusion.protocol import (
    DELTA_KEY,
    EPSILON_KEY,
    MAX_GRAD_NORM_KEY,
    NOISE_MULTIPLIER_KEY,
    WEIGHT_KEY,
)
from fedfusion.site.gradient_terms import GradientTerms
from fedfusion.site.model_cache import leased_model
from fedfusion.site.patient_bags import PatientBagDataset, PatientBatch, check_record, collate_full_bags
from fedfusion.study.config import StudyConfig

INFERENCE_BATCH_PATIENTS = 32
"""Patients per forward pass at inference (full bags, so memory grows with the longest bag)."""


@dataclass(frozen=True)
class TrainOutcome:
    """What one call of ``SiteTrainer.train`` hands back to the federation layer."""

    weights: dict[str, torch.Tensor]
    """CPU tensors keyed like the unwrapped model's ``state_dict``."""
    num_patients: int
    """Training patients (the FedAvg weight)."""
    metrics: dict[str, float]
    """"train-loss", "epsilon" (cumulative; 0.0 with dp off), "delta", "noise-multiplier", "max-grad-norm",
    "steps" (this call), "total-steps" (all accounted DP steps so far; with dp off, this call's steps),
    "train-seconds" (wall time of the local epochs, without setup and accounting)."""
    accountant_history: AccountantHistory
    """``(noise_multiplier, sample_rate, steps)`` over all rounds so far (passed through unchanged with dp off)."""


class SiteTrainer:
    """Local training (DP-SGD when the study says so) and evaluation on one site's cohort."""

    def __init__(self, cohort: SiteCohort, study: StudyConfig, device: str = "auto", *,
                 grad_sample_mode: str = GRAD_SAMPLE_MODE) -> None:
        for record in [*cohort.train, *cohort.test]:
            check_record(record, study)
        self.cohort = cohort
        self.study = study
        self.device = resolve_device(device)
        self.grad_sample_mode = grad_sample_mode

    def train(self, weights: dict[str, torch.Tensor], *, accountant_history: Sequence[tuple[float, float, int]] = (),
              seed: int = 0, dp_seed: int | None = None, noise_multiplier: float | None = None,
              epochs: int | None = None, train_only: str = "",
              after_epoch: Callable[[int, nn.Module], bool] | None = None) -> TrainOutcome:
        """Run ``epochs`` (default ``study.local_epochs``) epochs over the training patients from ``weights``.

        ``noise_multiplier`` is the site's DP noise (``fedfusion.privacy.calibration.study_noise_multiplier``, or
        the one its ledger recorded for the study); ``None`` means the study's fixed ``noise-multiplier``, which a
        study with a ``target-epsilon`` does not have (``ConfigError``). With ``train_only`` only the parameters
        whose name starts with it are trained (and clipped); the others stay as received (personalization trains
        the task heads, ``"heads."``). ``after_epoch(epoch, model)`` (0-based epoch, the plain module in training)
        is called after every epoch; when it returns True training stops there (early stopping of the simulation's
        centralized baseline).

        ``seed`` drives tile sampling and dropout. DP noise and Poisson sampling are drawn from ``dp_seed``;
        leave it ``None`` outside tests: then 63 bits come from the OS, so no other party (the coordinator
        chooses the study seed) can regenerate the noise and subtract it from the update. The study's proximal,
        ridge and lasso terms (``gradient_terms.py``) act on each local step, FedProx's anchored at ``weights``.
        """
        if not self.cohort.train:
            raise DataError(f"site '{self.cohort.site}' has no training patients")
        history = validated_history(accountant_history)
        sigma = self._noise_multiplier(noise_multiplier)
        with self.seeded(seed), self.leased(weights) as model:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith(train_only))
            sampling_seed = seed if not self.study.dp else (secrets.randbits(63) if dp_seed is None else dp_seed)
            loader = DataLoader(PatientBagDataset(self.cohort.train, self.study, seed=seed),
                                batch_size=self.study.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(sampling_seed),
                                pin_memory=self.device.type == "cuda")
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                         lr=self.study.learning_rate)
            GradientTerms.of(self.study).attach(optimizer)  # FedProx, ridge, lasso: after DP privatization
            private = None
            trained: nn.Module = model
            if self.study.dp:
                private = make_private(model, optimizer, loader, self.study, noise_multiplier=sigma, history=history,
                                       noise_seed=sampling_seed, grad_sample_mode=self.grad_sample_mode)
                trained, optimizer, loader = private.model, private.optimizer, private.loader
            steps, loss_sum, seen = 0, 0.0, 0
            started = time.perf_counter()
            for epoch in range(self.study.local_epochs if epochs is None else epochs):
                for items in loader:
                    batch = PatientBatch(*items).to(self.device)
                    steps += 1
                    if private is not None and len(batch.tiles) == 0:
                        private.step_without_patients()  # only Poisson sampling yields empty batches
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    outputs: tuple[torch.Tensor, ...] = trained(*batch.model_inputs())
                    losses = patient_loss(outputs, batch.targets, self.study.tasks)
                    with warnings.catch_warnings():
                        # Opacus' hooks on the first layer fire although tile features need no gradient: harmless.
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        # Tensor.backward has no annotations in torch (strict mypy refuses the call otherwise).
                        batch_loss(losses).backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    loss_sum, seen = loss_sum + float(losses.detach().sum()), seen + len(losses)
                if after_epoch is not None and after_epoch(epoch, model):
                    break
            train_seconds = time.perf_counter() - started
            if private is not None:
                history = private.history()
                private.release()  # the leased module itself, its Opacus hooks removed
            state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
        epsilon = epsilon_spent(self.study.accountant, history, self.study.delta) if self.study.dp else 0.0
        accounted = sum(entry[2] for entry in history) if self.study.dp else steps
        metrics = {
            "train-loss": loss_sum / seen if seen else float("nan"),
            EPSILON_KEY: epsilon,
            DELTA_KEY: self.study.delta,
            NOISE_MULTIPLIER_KEY: sigma if self.study.dp else 0.0,
            MAX_GRAD_NORM_KEY: self.study.max_grad_norm if self.study.dp else 0.0,
            "steps": float(steps),
            "total-steps": float(accounted),
            "train-seconds": train_seconds,
        }
        return TrainOutcome(state, len(self.cohort.train), metrics, history)

    def evaluate(self, weights: dict[str, torch.Tensor], split: str = "test") -> dict[str, float]:
        """Aggregate metrics on ``split`` ("test" or "train"): every task's metrics (``task_metrics``), the mean
        loss and the patient count."""
        splits = {"test": self.cohort.test, "train": self.cohort.train}
        if split not in splits:
            raise ConfigError(f"site '{self.cohort.site}': unknown split '{split}', expected one of {sorted(splits)}")
        patients = splits[split]
        if not patients:
            return {**empty_metrics(self.study.spec), "loss": float("nan"), WEIGHT_KEY: 0.0}
        outputs, losses = self._infer(weights, patients)
        metrics = task_metrics(self.study.spec, outputs, patients, self.cohort.train)
        return {**metrics, "loss": float(losses.mean()), WEIGHT_KEY: float(len(patients))}

    def predict_risk(self, weights: dict[str, torch.Tensor],
                     patients: Sequence[PatientRecord]) -> npt.NDArray[np.float32]:
        """Risk score per patient of the study's primary survival task (higher = shorter predicted survival), from
        full bags in eval mode."""
        survival = self.study.spec.survival_tasks
        if not survival:
            raise ConfigError("the study has no survival task: no risk score to predict")
        for record in patients:
            check_record(record, self.study)
        return risk_score(self._infer(weights, patients)[0][self.study.tasks.index(survival[0])]).numpy()

    def _infer(self, weights: dict[str, torch.Tensor],
               patients: Sequence[PatientRecord]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Each task's outputs and the per-patient losses (CPU) for ``patients``, in eval mode."""
        outputs: list[tuple[torch.Tensor, ...]] = []
        losses: list[torch.Tensor] = []
        with self.leased(weights) as model, torch.no_grad():
            model.eval()
            for start in range(0, len(patients), INFERENCE_BATCH_PATIENTS):
                chunk = patients[start : start + INFERENCE_BATCH_PATIENTS]
                batch = collate_full_bags(chunk, self.study).to(self.device)
                chunk_outputs = model(*batch.model_inputs())
                losses.append(patient_loss(chunk_outputs, batch.targets, self.study.tasks).cpu())
                outputs.append(tuple(output.cpu() for output in chunk_outputs))
        return tuple(torch.cat(column) for column in zip(*outputs, strict=True)), torch.cat(losses)

    def _noise_multiplier(self, given: float | None) -> float:
        """``given``, else the study's fixed noise multiplier (refused for a study with a target epsilon)."""
        if given is not None:
            return given
        if self.study.dp and self.study.target_epsilon > 0:
            raise ConfigError(f"site '{self.cohort.site}': a study with target-epsilon trains with the site's "
                              "calibrated noise multiplier, and none was given")
        return self.study.noise_multiplier

    def leased(self, weights: Mapping[str, torch.Tensor]) -> AbstractContextManager[StudyModel]:
        """The study's model holding ``weights`` on the site's device, kept there between rounds of this process
        (``model_cache``: in training mode, every parameter trainable); ``ConfigError`` if the weights do not fit."""
        return leased_model(self.study, self.device, weights, self.cohort.site)

    @contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """Seed torch's global RNG (dropout) for the block and restore it afterwards."""
        cuda_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            yield

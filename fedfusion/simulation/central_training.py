"""The centralized ceiling, trained to convergence without looking at the held-out patients.

A comparison whose "ceiling" is under-trained flatters federation (a centralized model of a fixed 2x the federated
epochs once scored below the federated non-private model). So the number of epochs is chosen on data the
comparison does not score: the pooled training patients are split once more (``VALIDATION_FRACTION`` of them, by
the same hash rule as the study's train/test split, with another salt), the model trains on the rest while its
validation C-index is read after every epoch, training stops ``PATIENCE`` epochs after the last improvement (or at
``max_epochs``), and the model is then trained again from the initial weights on all pooled training patients
for the best epoch count. The held-out patients are touched only to score the final model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.data.patient_split import is_test_patient
from fedfusion.evaluation.metrics import concordance
from fedfusion.models.fusion_model import build_model
from fedfusion.simulation.outcomes import known_outcome, survival_outcomes
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig

VALIDATION_FRACTION = 0.2
"""Share of the pooled training patients that choose the centralized model's epoch count."""
PATIENCE = 8
"""Epochs without a better validation C-index before the search stops."""
MAX_EPOCHS = 60
"""The longest centralized run considered (``--central-epochs`` overrides it)."""
VALIDATION_SALT = 7_919
"""Added to the study's split seed, so the validation split is not the train/test split again."""


@dataclass(frozen=True)
class CentralModel:
    """A centralized model trained to convergence: its weights and the epoch count the validation split chose."""

    weights: dict[str, torch.Tensor]
    epochs: int


def train_to_convergence(pooled: SiteCohort, study: StudyConfig, *, max_epochs: int = MAX_EPOCHS,
                         patience: int = PATIENCE) -> CentralModel:
    """Choose the epoch count on a validation split of ``pooled.train``, then train on all of it (non-private)."""
    study = study.replace(dp=False)
    fit, validation = _validation_split(pooled.train, study)
    epochs = _best_epoch_count(SiteCohort(site=pooled.site, train=fit, test=validation), study, max_epochs, patience)
    initial = build_model(study, seed=study.training_seed).state_dict()
    weights = SiteTrainer(pooled, study.replace(local_epochs=epochs)).train(
        initial, seed=study.training_seed * 100_003 + 1).weights
    return CentralModel(weights, epochs)


def _validation_split(patients: Sequence[PatientRecord],
                      study: StudyConfig) -> tuple[list[PatientRecord], list[PatientRecord]]:
    validation = [p for p in known_outcome(patients) if is_test_patient(p.patient_id, study.seed + VALIDATION_SALT,
                                                         VALIDATION_FRACTION)]
    chosen = {p.patient_id for p in validation}
    return [p for p in patients if p.patient_id not in chosen], validation


def _best_epoch_count(split: SiteCohort, study: StudyConfig, max_epochs: int, patience: int) -> int:
    """The epoch (1-based) with the best validation C-index of the primary survival task in one run."""
    trainer = SiteTrainer(split, study.replace(local_epochs=max_epochs))
    times, events = survival_outcomes(split.test)
    scores: list[float] = []

    def after_epoch(epoch: int, model: nn.Module) -> bool:
        risks = trainer.predict_risk(model.state_dict(), split.test)
        scores.append(concordance(times, np.asarray(risks, dtype=np.float64), events).c_index)
        best = int(np.argmax(scores))
        return epoch - best > patience

    initial = build_model(study, seed=study.training_seed).state_dict()
    trainer.train(initial, seed=study.training_seed * 100_003 + 1, after_epoch=after_epoch)
    return int(np.argmax(scores)) + 1

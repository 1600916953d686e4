"""The table a consortium needs before it federates: does federation pay, and does fusion pay?

On the same held-out patients (every site's test split, pooled: possible only in a simulation, where one
researcher holds all the data) it compares the federated model with
- a centralized, non-private model trained on all sites' training patients pooled (the ceiling),
- centralized, non-private single-modality models (WSI only, omics only, clinical only),
- each site's model trained alone with the study's own recipe (DP included) for as many epochs,
- the oracle risk planted by the synthetic generator (the best achievable C-index).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.evaluation.metrics import concordance
from fedfusion.evaluation.task_metrics import survival_outcomes
from fedfusion.models.fusion_model import build_model
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig


@dataclass(frozen=True)
class BaselineResult:
    """One row of the comparison table."""

    model: str
    training: str
    modalities: str
    test_c_index: float
    training_patients: int


def run_baselines(
    study: StudyConfig,
    cohorts: Sequence[SiteCohort],
    federated_weights: Mapping[str, torch.Tensor],
    oracle_risk: Mapping[tuple[str, str], float] | None,
    emit: Callable[[str], None] = print,
) -> list[BaselineResult]:
    """Train the baselines and score every model on the pooled held-out patients."""
    test = [p for c in cohorts for p in c.test]
    pooled = SiteCohort(site="pooled", train=[p for c in cohorts for p in c.train], test=test)
    epochs = study.num_server_rounds * study.local_epochs
    federated_recipe = "federated, DP" if study.dp else "federated, non-private"
    rows = [BaselineResult("federated", federated_recipe, study.modalities,
                           held_out_c_index(SiteTrainer(pooled, study), dict(federated_weights), test),
                           len(pooled.train))]
    central = study.replace(dp=False)
    for modalities in [study.modalities, *sorted(study.modality_set)]:
        if modalities in study.modality_set and len(study.modality_set) == 1:
            continue
        emit(f"baseline: centralized non-private model on {modalities} ({epochs} epochs)")
        single = central.with_modalities(modalities.split(","))
        trainer = SiteTrainer(pooled, single)
        weights = _train_epochs(trainer, single, epochs)
        rows.append(BaselineResult("centralized", "pooled data, non-private", modalities,
                                   held_out_c_index(trainer, weights, test), len(pooled.train)))
    for cohort in cohorts:
        emit(f"baseline: {cohort.site} alone ({epochs} epochs, {'DP' if study.dp else 'non-private'})")
        weights = _train_epochs(SiteTrainer(cohort, study), study, epochs)
        rows.append(BaselineResult(f"{cohort.site} alone", "own data only, " + ("DP" if study.dp else "non-private"),
                                   study.modalities, held_out_c_index(SiteTrainer(pooled, study), weights, test),
                                   len(cohort.train)))
    if oracle_risk is not None:
        risks = np.array([oracle_risk[(site, p.patient_id)] for site, p in _with_sites(cohorts)])
        rows.append(BaselineResult("oracle", "planted true risk", "all", _c_index(study, test, risks), 0))
    return rows


def _train_epochs(trainer: SiteTrainer, study: StudyConfig, epochs: int) -> dict[str, torch.Tensor]:
    """Train from the study's initial model for ``epochs`` passes, carrying the accountant across calls."""
    weights = build_model(study, seed=study.seed).state_dict()
    history: list[tuple[float, float, int]] = []
    for call in range(epochs // study.local_epochs):
        outcome = trainer.train(weights, accountant_history=history, seed=study.seed * 100_003 + call + 1)
        weights, history = outcome.weights, list(outcome.accountant_history)
    return weights


def held_out_c_index(trainer: SiteTrainer, weights: dict[str, torch.Tensor], patients: list[PatientRecord]) -> float:
    """C-index of the model ``weights`` (architecture of ``trainer``'s study) on ``patients``."""
    return _c_index(trainer.study, patients, trainer.predict_risk(weights, patients))


def _c_index(study: StudyConfig, patients: Sequence[PatientRecord], risks: np.ndarray) -> float:
    index = study.tasks.index(study.spec.survival_tasks[0])
    times, events, known = survival_outcomes(patients, index)
    return concordance(times[known], risks[known], events[known]).c_index


def _with_sites(cohorts: Sequence[SiteCohort]) -> list[tuple[str, PatientRecord]]:
    return [(c.site, p) for c in cohorts for p in c.test]


def format_table(rows: Sequence[BaselineResult]) -> str:
    """A Markdown table of the comparison."""
    lines = ["| model | training | modalities | held-out C-index | training patients |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.training} | {r.modalities} | {r.test_c_index:.3f} | {r.training_patients} |"
              for r in rows]
    return "\n".join(lines)

"""The table a consortium needs before it federates: does federation pay, and does fusion pay?

Every model is scored on the same patients: the pooled held-out patients of the participating sites (each site's
test split, fixed by the study's ``seed``; pooling is possible only in a simulation, where one researcher holds
all the data). The **federated figure** is defined once, here (``federated_scores``): the held-out C-index of
the final global model on those pooled patients; the table and the final console line both use it. (The live
"pooled C-index" of the rounds is another number: it counts pairs of patients within each site only, because no
per-patient prediction leaves a site.) The table compares it with

- centralized, non-private models trained on all sites' training patients pooled: one on the study's modalities
  (the ceiling) and, for a multimodal study, one per single modality, each trained to convergence
  (``central_training``: the epoch count is chosen on a validation split of the pooled training patients, never on
  the held-out ones, then the model is trained again on all of them),
- each site's model trained alone with the study's own recipe (DP included) for as many rounds and epochs as the
  federation (beside a distributed-DP federation, whose recipe has no local training, the local-DP recipe:
  ``fedfusion.study.config.local_dp_recipe``),
- the oracle risk planted by the synthetic generator (the best achievable C-index).

Each model is trained with every training seed (``training_seeds``: the study's ``training-seed`` and the next
ones; the held-out patients stay the same) and reported as mean +- sd over seeds with a bootstrap 95% CI over
patients (``held_out_stats``); the verdict lines are paired bootstrap differences.

Reading a record's outcome, reading a study's modalities and switching them each happen in one function
(``fedfusion.simulation.outcomes``, ``_modalities``, ``_with_modalities``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.calibration import study_noise_multiplier
from fedfusion.simulation.central_training import MAX_EPOCHS, train_to_convergence
from fedfusion.simulation.held_out_stats import BOOTSTRAP_RESAMPLES, Difference, HeldOutPatients, Summary
from fedfusion.simulation.outcomes import known_outcome, survival_outcomes
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig, local_dp_recipe

Risks = npt.NDArray[np.float64]
Weights = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ModelScores:
    """One model of the comparison: what it is and its risks on the held-out patients, one array per seed."""

    model: str
    training: str
    modalities: str
    training_patients: int
    risks: tuple[Risks, ...]


@dataclass(frozen=True)
class BaselineRow:
    """One row of the comparison table: a model and its held-out C-index summary."""

    model: str
    training: str
    modalities: str
    training_patients: int
    summary: Summary

    def as_record(self) -> dict[str, object]:
        """The row as ``baselines.csv`` writes it."""
        return {"model": self.model, "training": self.training, "modalities": self.modalities,
                "training_patients": self.training_patients, "seeds": len(self.summary.per_seed),
                "c_index_mean": self.summary.mean, "c_index_sd": self.summary.sd, "ci95_low": self.summary.ci_low,
                "ci95_high": self.summary.ci_high,
                "c_index_per_seed": ";".join(f"{c:.4f}" for c in self.summary.per_seed)}


@dataclass(frozen=True)
class BaselineReport:
    """The comparison: rows (the federated model first), verdict lines, and what the patients were."""

    rows: tuple[BaselineRow, ...]
    verdicts: tuple[str, ...]
    held_out_patients: int
    sites: tuple[str, ...]

    @property
    def federated(self) -> BaselineRow:
        """The federated model's row (the federated figure)."""
        return self.rows[0]

    def federated_line(self) -> str:
        """The final console line: the federated figure."""
        s = self.federated.summary
        seeds = (f" +- {s.sd:.3f} over {len(s.per_seed)} training seeds" if len(s.per_seed) > 1
                 else " (1 training seed)")
        return (f"federated model: held-out C-index {s.mean:.3f}{seeds} [95% CI {s.ci_low:.3f}, {s.ci_high:.3f}] "
                f"on the {self.held_out_patients} pooled held-out patients of {', '.join(self.sites)}")

    def to_frame(self) -> pd.DataFrame:
        """The rows as ``baselines.csv``."""
        return pd.DataFrame([row.as_record() for row in self.rows])

    def to_markdown(self) -> str:
        """The table, the verdicts and how the numbers were made, as ``baselines.md``."""
        lines = ["| model | training | modalities | held-out C-index (mean +- sd) | 95% CI | per training seed "
                 "| training patients |", "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            s = row.summary
            sd = f" +- {s.sd:.3f}" if not math.isnan(s.sd) else ""
            lines.append(f"| {row.model} | {row.training} | {row.modalities} | {s.mean:.3f}{sd} | "
                         f"{s.ci_low:.3f} - {s.ci_high:.3f} | {' / '.join(f'{c:.3f}' for c in s.per_seed)} | "
                         f"{row.training_patients} |")
        lines += ["", *self.verdicts, "",
                  f"Every model is scored on the same {self.held_out_patients} pooled held-out patients of "
                  f"{', '.join(self.sites)}. 95% CI: {BOOTSTRAP_RESAMPLES} bootstrap resamples of those patients "
                  "(fixed RNG), of the mean over training seeds; verdicts are paired differences on the same "
                  "resamples (the best site alone is picked on these same patients, which favours it)."]
        return "\n".join(lines)


def training_seeds(study: StudyConfig, seeds: int) -> list[int]:
    """The training seeds of a comparison: the study's ``training-seed`` and the ``seeds - 1`` after it."""
    return [study.training_seed + offset for offset in range(seeds)]


def held_out(cohorts: Sequence[SiteCohort]) -> list[PatientRecord]:
    """The pooled held-out patients of the participating sites with a known primary survival label, in site order."""
    return known_outcome([p for c in cohorts for p in c.test])


def held_out_patients(cohorts: Sequence[SiteCohort]) -> HeldOutPatients:
    """The pooled held-out patients' outcomes and bootstrap resamples, which every model is scored on."""
    return HeldOutPatients(*survival_outcomes(held_out(cohorts)))


def federated_scores(study: StudyConfig, cohorts: Sequence[SiteCohort],
                     final_models: Sequence[Weights]) -> ModelScores:
    """The federated figure's scores: each seed's final global model on the pooled held-out patients."""
    pooled = _pooled(cohorts)
    recipe = "federated, DP" if study.dp else "federated, non-private"
    return ModelScores("federated", recipe, _modalities(study), len(pooled.train),
                       tuple(_risks(pooled, study, weights) for weights in final_models))


def federated_report(study: StudyConfig, cohorts: Sequence[SiteCohort],
                     final_models: Sequence[Weights]) -> BaselineReport:
    """The comparison with the federated model alone (a run without ``--baselines``)."""
    return _report([federated_scores(study, cohorts, final_models)], cohorts)


def run_baselines(
    study: StudyConfig,
    cohorts: Sequence[SiteCohort],
    final_models: Sequence[Weights],
    oracle_risk: Mapping[tuple[str, str], float] | None,
    *,
    central_epochs: int | None = None,
    emit: Callable[[str], None] = print,
) -> BaselineReport:
    """Train every baseline with each training seed (one per federated final model) and compare on the same
    held-out patients. ``central_epochs`` caps the centralized models' epochs (default ``MAX_EPOCHS``). Each site
    alone trains under the local-DP recipe (``local_dp_recipe``), also beside a distributed-DP federation."""
    seeds = training_seeds(study, len(final_models))
    pooled = _pooled(cohorts)
    max_epochs = central_epochs or MAX_EPOCHS
    scores = [federated_scores(study, cohorts, final_models)]
    central = study.replace(dp=False)
    for modalities in _modality_variants(study):
        plural = "s" if len(seeds) > 1 else ""
        emit(f"baseline: centralized non-private model on {modalities} (epochs chosen on a validation split of the "
             f"pooled training patients, at most {max_epochs}; {len(seeds)} training seed{plural})")
        model_study = _with_modalities(central, modalities)
        models = [train_to_convergence(pooled, model_study.replace(training_seed=s), max_epochs=max_epochs)
                  for s in seeds]
        epochs = "/".join(str(m.epochs) for m in models)
        scores.append(ModelScores("centralized", f"pooled data, non-private, {epochs} epochs (early stopping)",
                                  modalities, len(pooled.train),
                                  tuple(_risks(pooled, model_study, m.weights) for m in models)))
    recipe = "DP" if study.dp else "non-private"
    alone = local_dp_recipe(study)
    for cohort in cohorts:
        emit(f"baseline: {cohort.site} alone ({alone.num_server_rounds} rounds x {alone.local_epochs} epochs, "
             f"{recipe})")
        risks = tuple(_risks(pooled, alone, _train_like_federation(cohort, alone.replace(training_seed=s)))
                      for s in seeds)
        scores.append(ModelScores(f"{cohort.site} alone", f"own data only, {recipe}", _modalities(study),
                                  len(cohort.train), risks))
    if oracle_risk is not None:
        planted = np.array([oracle_risk[(c.site, p.patient_id)] for c in cohorts for p in c.test])
        scores.append(ModelScores("oracle", "planted true risk", "all", 0, (planted,)))
    return _report(scores, cohorts)


def _report(scores: Sequence[ModelScores], cohorts: Sequence[SiteCohort]) -> BaselineReport:
    patients = held_out_patients(cohorts)
    rows = tuple(BaselineRow(s.model, s.training, s.modalities, s.training_patients, patients.summarize(s.risks))
                 for s in scores)
    return BaselineReport(rows, tuple(_verdicts(patients, scores, rows)), len(patients), tuple(c.site for c in cohorts))


def _verdicts(patients: HeldOutPatients, scores: Sequence[ModelScores], rows: Sequence[BaselineRow]) -> list[str]:
    """Federated vs the best site alone (the verdict) and vs the centralized ceiling, as paired differences."""
    federated = scores[0]
    alone = [(row, s) for row, s in zip(rows, scores, strict=True) if s.model.endswith(" alone")]
    lines = []
    if alone:
        best = max(alone, key=lambda pair: pair[0].summary.mean)[1]
        diff: Difference = patients.difference(federated.risks, best.risks)
        lines.append(f"federated vs best site alone ({best.model.removesuffix(' alone')}): {diff.describe()}")
    ceiling = next((s for s in scores if s.model == "centralized" and s.modalities == federated.modalities), None)
    if ceiling is not None:
        lines.append(f"federated vs centralized (pooled, non-private): "
                     f"{patients.difference(federated.risks, ceiling.risks).describe()}")
    return lines


def _modalities(study: StudyConfig) -> str:
    """The study's modalities, comma-separated: the one place a baseline reads them."""
    return study.modalities


def _with_modalities(study: StudyConfig, modalities: str) -> StudyConfig:
    """``study`` on other modalities (comma-separated): the one place a baseline switches modalities."""
    return study.with_modalities(modalities.split(","))


def _modality_variants(study: StudyConfig) -> list[str]:
    """The centralized models' modalities: the study's own, then each single one of a multimodal study."""
    singles = sorted(study.modality_set) if len(study.modality_set) > 1 else []
    return [_modalities(study), *singles]


def _pooled(cohorts: Sequence[SiteCohort]) -> SiteCohort:
    return SiteCohort(site="pooled", train=[p for c in cohorts for p in c.train], test=held_out(cohorts))


def _risks(pooled: SiteCohort, study: StudyConfig, weights: Weights) -> Risks:
    """Risk of each pooled held-out patient under ``weights`` (a model of ``study``'s architecture)."""
    return np.asarray(SiteTrainer(pooled, study).predict_risk(dict(weights), pooled.test), dtype=np.float64)


def _train_like_federation(cohort: SiteCohort, study: StudyConfig) -> dict[str, torch.Tensor]:
    """``num_server_rounds`` calls of ``local_epochs`` epochs on one site, seeded as the federation's rounds are,
    carrying the DP accountant across calls; its noise calibrated once, as the federation's site does (to the
    study's target epsilon by the study's accountant, or the fixed noise multiplier)."""
    weights = build_model(study, seed=study.training_seed).state_dict()
    trainer = SiteTrainer(cohort, study)
    sigma = study_noise_multiplier(study, len(cohort.train), study.accountant) if study.dp else None
    history: list[tuple[float, float, int]] = []
    for server_round in range(1, study.num_server_rounds + 1):
        outcome = trainer.train(weights, accountant_history=history,
                                seed=study.training_seed * 100_003 + server_round, noise_multiplier=sigma)
        weights, history = outcome.weights, list(outcome.accountant_history)
    return weights

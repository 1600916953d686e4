"""``fedfusion simulate``: a whole study on one machine, from cohort files to a results folder.

Steps: classify the cohort folder (``cohort_folder``: a new or empty one gets a synthetic cohort, an existing one is
only read); prepare each site's slide features and, when the study fuses radiology, its volumes' radiomics features
(``fedfusion site prepare``'s steps, into the site's feature cache)
and load each site once, so the simulated sites only read caches; list the held-out patients per site
(``<results>/held-out/<site>.csv``: simulation only, a deployed site's patient ids never leave it); write each
simulated site's privacy policy (it follows the study); run the Flower app in Flower's simulation engine once per
training seed; score the final global model on the pooled held-out patients (the federated figure,
``baselines.federated_scores``) and optionally train and score the baselines on the same patients.

A study in which no round aggregated is "not trained": the ServerApp writes no final model, this says so and
returns ``trained=False`` (the command exits 1), and no figure or baseline is computed from the untrained model.
A results folder holding the checkpoint of an interrupted run of the same study resumes it (the ServerApp does; a
checkpoint of another study or config is refused here, before any work). With several training seeds the first
runs in the results folder itself and seed ``t`` in ``<results>/seeds/training-seed-<t>/``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fedfusion.atomic_io import atomic_write_text
from fedfusion.coordinator.checkpoint import CoordinatorCheckpoint
from fedfusion.coordinator.run_recorder import MODEL_FILE, TRAINING_FILE, TrainingOutcome
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import CohortSite, read_oracle
from fedfusion.data.patient_records import SiteCohort
from fedfusion.data.radiology.prepare import prepare_volume_features
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.errors import ConfigError, DataError
from fedfusion.simulation.baselines import BaselineReport, federated_report, run_baselines, training_seeds
from fedfusion.simulation.cohort_folder import SimulationCohort, SiteChoice, open_cohort, plan_cohort
from fedfusion.simulation.flower_engine import run_in_simulation_engine
from fedfusion.simulation.simulated_nodes import (
    simulated_node_configs,
    simulated_nodes,
    site_split,
    write_site_policies,
)
from fedfusion.site.node_context import DEFAULT_DEVICE
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

BASELINES_CSV = "baselines.csv"
BASELINES_MD = "baselines.md"
HELD_OUT_DIR = "held-out"
"""``<results>/held-out/<site>.csv``: the site's held-out patient ids (simulation only)."""
SEEDS_DIR = "seeds"
RUN_SUMMARY_FILE = "run.json"


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation produced: its results folder, whether every training seed's study trained, the report."""

    results_dir: Path
    trained: bool
    report: BaselineReport | None = None
    """The federated figure (and, with baselines, the comparison); None when not trained."""


def simulate_study(
    study: StudyConfig,
    results_dir: Path,
    cohort_dir: Path,
    *,
    sites: SiteChoice | None = None,
    device: str = DEFAULT_DEVICE,
    with_baselines: bool = False,
    seeds: int = 1,
    central_epochs: int | None = None,
    emit: Callable[[str], None] = print,
) -> SimulationResult:
    """Run the study in simulation on the chosen sites of ``cohort_dir`` with ``seeds`` training seeds.

    ``cohort_dir`` is classified by ``fedfusion.simulation.cohort_folder``; ``sites`` is ``--sites``; ``device`` is
    every simulated site's node config ``device``; ``central_epochs`` is the centralized baselines' training length.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if central_epochs is not None and central_epochs < 1:
        raise ConfigError(f"--central-epochs must be >= 1, got {central_epochs}")
    started = time.monotonic()
    plan = plan_cohort(cohort_dir, sites or SiteChoice())
    results_dir = results_dir.resolve()
    runs = [_seed_run(study.replace(training_seed=seed), results_dir, index)
            for index, seed in enumerate(training_seeds(study, seeds))]
    resumed = [(run, CoordinatorCheckpoint(folder, run.study, run.study_id).load()) for run, folder in runs]
    cohort = open_cohort(plan, seed=study.seed, emit=emit)
    if len(cohort.sites) < study.min_sites:
        raise ConfigError(f"the study needs at least {study.min_sites} sites ('min-sites'), "
                          f"{len(cohort.sites)} were chosen")
    for (_, folder), (_, saved) in zip(runs, resumed, strict=True):
        if saved is not None:
            emit(f"{folder} holds this study after round {saved.completed_round} of {saved.num_rounds}: "
                 + ("nothing left to train" if saved.finished else "resuming"))
    cohorts = prepare_sites(study, cohort, device, emit)
    _write_held_out_ids(results_dir, cohorts)

    final_models = []
    for run, folder in runs:
        outcome = _run_federation(run, folder, cohort, len(cohorts), device, emit)
        if not outcome.trained:
            emit(f"the study did not train (training seed {run.study.training_seed}: no round aggregated, see "
                 f"{folder / TRAINING_FILE}): no C-index is reported and no baseline is run")
            _write_summary(results_dir, cohorts, started, status="not trained", outcome=outcome)
            return SimulationResult(results_dir, trained=False)
        if outcome.status != "trained":
            emit(f"training seed {run.study.training_seed}: {outcome.describe()}")
        final_models.append(torch.load(folder / MODEL_FILE, weights_only=True))

    if with_baselines:
        report = run_baselines(study, cohorts, final_models, _oracle_risk(cohort.oracle_path),
                               central_epochs=central_epochs, emit=emit)
        atomic_write_text(results_dir / BASELINES_CSV, report.to_frame().to_csv(index=False))
        atomic_write_text(results_dir / BASELINES_MD, report.to_markdown() + "\n")
        emit("\n" + report.to_markdown())
    else:
        report = federated_report(study, cohorts, final_models)
    _write_summary(results_dir, cohorts, started, status="trained", report=report)
    emit(report.federated_line())
    emit(f"done in {round(time.monotonic() - started, 1)} s; results in {results_dir}")
    return SimulationResult(results_dir, trained=True, report=report)


def _seed_run(study: StudyConfig, results_dir: Path, index: int) -> tuple[StudyRun, Path]:
    """A training seed's study run and its results folder (the first seed's is the results folder itself)."""
    folder = results_dir if index == 0 else results_dir / SEEDS_DIR / f"training-seed-{study.training_seed}"
    return StudyRun.of(study, coordinator=CoordinatorSettings(results_dir=str(folder))), folder


def _run_federation(run: StudyRun, folder: Path, cohort: SimulationCohort, num_sites: int, device: str,
                    emit: Callable[[str], None]) -> TrainingOutcome:
    """One federated study in Flower's engine; which of its rounds aggregated (none if the ServerApp wrote none)."""
    study = run.study
    policies = write_site_policies(study, cohort.sites, folder, emit)
    emit(f"starting Flower's simulation engine: {num_sites} sites, {study.num_server_rounds} rounds, "
         + (_privacy_line(study) if study.dp else "no DP")
         + f", training seed {study.training_seed}" + (f", results in {folder}" if folder.parent.name == SEEDS_DIR
                                                       else ""))
    nodes = simulated_node_configs(cohort.sites, folder, device, policies)
    with simulated_nodes(nodes, folder):
        run_in_simulation_engine(run, num_sites, folder / "flower-app")
    return TrainingOutcome.read(folder) or TrainingOutcome(study.num_server_rounds, (), ())


def _privacy_line(study: StudyConfig) -> str:
    """How a DP study protects its patients, as the start line says it."""
    distributed = study.dp_mode == "distributed"
    derived = "one study-wide noise, shared inside secure aggregation" if distributed else "each site derives its noise"
    budget = (f"target epsilon {study.target_epsilon:g} per site at delta {study.delta:g} ({derived})"
              if study.target_epsilon else f"DP noise {study.noise_multiplier}")
    mode = f"distributed DP at sample rate {study.sample_rate:g}, " if distributed else ""
    return f"{mode}{budget}, clip {study.max_grad_norm}"


def prepare_sites(study: StudyConfig, cohort: SimulationCohort, device: str,
                  emit: Callable[[str], None]) -> list[SiteCohort]:
    """Prepare each site's slide features (as its admin would, on ``device``), then load the site once."""
    cohorts = []
    for site in cohort.sites:
        if "wsi" in study.modality_set:
            summary = prepare_slide_features(site.site_dir, study, device=device, workers=os.cpu_count() or 1,
                                             progress=emit)
            emit(summary.describe())
        if "radiology" in study.modality_set:
            volumes = prepare_volume_features(site.site_dir, study, progress=emit, device=device)
            emit(volumes.describe())
            if not volumes.ok:
                raise DataError(volumes.report())
        cohorts.append(_load_site(study, site, emit))
    return cohorts


def _load_site(study: StudyConfig, site: CohortSite, emit: Callable[[str], None]) -> SiteCohort:
    started = time.monotonic()
    loaded = load_site_cohort(site.site_dir, study, split=site_split(site, study))
    emit(f"{site.name}: {len(loaded.train)} training + {len(loaded.test)} held-out patients "
         f"({time.monotonic() - started:.1f} s)" + "".join(f"\n  note: {n}" for n in loaded.notes))
    return loaded


def _write_held_out_ids(results_dir: Path, cohorts: Sequence[SiteCohort]) -> None:
    """``<results>/held-out/<site>.csv``: each site's held-out patient ids (a simulation's researcher holds them)."""
    for cohort in cohorts:
        table = pd.DataFrame({"patient_id": [p.patient_id for p in cohort.test]})
        atomic_write_text(results_dir / HELD_OUT_DIR / f"{cohort.site}.csv", table.to_csv(index=False))


def _write_summary(results_dir: Path, cohorts: Sequence[SiteCohort], started: float, *, status: str,
                   outcome: TrainingOutcome | None = None, report: BaselineReport | None = None) -> None:
    """``run.json``: sites, time, whether the study trained and (trained) the federated figure."""
    summary: dict[str, object] = {"sites": [c.site for c in cohorts], "status": status,
                                  "seconds": round(time.monotonic() - started, 1)}
    if outcome is not None:
        summary["training"] = outcome.describe()
    if report is not None:
        s = report.federated.summary
        summary["federated_c_index"] = {"mean": s.mean, "sd": None if math.isnan(s.sd) else s.sd,
                                        "ci95": [s.ci_low, s.ci_high], "per_training_seed": list(s.per_seed),
                                        "held_out_patients": report.held_out_patients}
        summary["verdicts"] = list(report.verdicts)
    atomic_write_text(results_dir / RUN_SUMMARY_FILE, json.dumps(summary, indent=2))


def _oracle_risk(oracle_path: Path | None) -> dict[tuple[str, str], float] | None:
    """The planted risk per (site, patient) of a synthetic cohort; None for a real one."""
    if oracle_path is None:
        return None
    table = read_oracle(oracle_path)
    return {(str(site), str(patient)): float(risk)
            for site, patient, risk in zip(table["site"], table["patient_id"], table["oracle_risk"], strict=True)}

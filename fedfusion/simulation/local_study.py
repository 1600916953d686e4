"""``fedfusion simulate``: a whole study on one machine, from cohort files to a results folder.

Steps: make (or reuse) the synthetic cohort; prepare each site's slide features (``fedfusion site prepare``'s
step: tiling, stain normalisation, encoder, into the site's feature cache) and load each site once, so the
simulated sites only read caches; run the Flower app in Flower's simulation engine; optionally
train and score the baselines on the same held-out patients. A results folder holding the checkpoint of an
interrupted run of the same study resumes it (the ServerApp does; a checkpoint of another study or config is
refused here, before any work).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from fedfusion.atomic_io import atomic_write_text
from fedfusion.coordinator.checkpoint import CoordinatorCheckpoint
from fedfusion.coordinator.run_recorder import MODEL_FILE
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import CohortIndex, CohortSite, read_cohort_index, read_gene_panel, read_oracle
from fedfusion.data.patient_records import SiteCohort
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.synthetic import generate_cohort
from fedfusion.errors import ConfigError
from fedfusion.simulation.baselines import format_table, run_baselines
from fedfusion.simulation.flower_engine import run_in_simulation_engine
from fedfusion.simulation.simulated_nodes import simulated_node_configs, simulated_nodes
from fedfusion.site.node_context import DEFAULT_DEVICE
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

BASELINES_CSV = "baselines.csv"
BASELINES_MD = "baselines.md"


def simulate_study(
    study: StudyConfig,
    num_sites: int,
    results_dir: Path,
    cohort_dir: Path,
    *,
    device: str = DEFAULT_DEVICE,
    with_baselines: bool = False,
    emit: Callable[[str], None] = print,
) -> Path:
    """Run the study in simulation on the first ``num_sites`` sites of ``cohort_dir``; return the results folder.

    ``cohort_dir`` without a ``cohort.json`` gets a synthetic cohort; ``device`` is every simulated site's node
    config ``device``.
    """
    started = time.monotonic()
    cohort_dir = cohort_dir.resolve()
    if not (cohort_dir / "cohort.json").exists():
        emit(f"generating a synthetic cohort of {num_sites} sites in {cohort_dir}")
        generate_cohort(cohort_dir, num_sites=num_sites, seed=study.seed, progress=emit)
    index = read_cohort_index(cohort_dir)
    if len(index.sites) < num_sites:
        raise ConfigError(f"cohort {cohort_dir} has {len(index.sites)} sites, {num_sites} were asked for; "
                          "pass --cohort-dir with a new folder to generate a larger cohort")
    results_dir = results_dir.resolve()
    run = StudyRun.of(study, coordinator=CoordinatorSettings(results_dir=str(results_dir)))
    saved = CoordinatorCheckpoint(results_dir, study, run.study_id).load()
    if saved is not None:
        emit(f"{results_dir} holds this study after round {saved.completed_round} of {saved.num_rounds}: "
             + ("nothing left to train" if saved.finished else "resuming"))
    panel = read_gene_panel(index.gene_panel_path)
    if study.omics_dim != len(panel):
        raise ConfigError(f"study 'omics-dim' is {study.omics_dim} but the gene panel "
                          f"{index.gene_panel_path} lists {len(panel)} genes")

    cnv_panel = read_gene_panel(index.cnv_panel_path) if index.cnv_panel_path is not None and study.cnv_dim else None
    cohorts = _prepare_sites(study, index.sites[:num_sites], panel, cnv_panel, device, emit)
    emit(f"starting Flower's simulation engine: {num_sites} sites, {study.num_server_rounds} rounds, "
         + (f"DP noise {study.noise_multiplier}, clip {study.max_grad_norm}" if study.dp else "no DP"))
    nodes = simulated_node_configs(index, index.sites[:num_sites], results_dir, device)
    with simulated_nodes(nodes, results_dir):
        run_in_simulation_engine(run, num_sites, results_dir / "flower-app")

    if with_baselines:
        weights = torch.load(results_dir / MODEL_FILE, weights_only=True)
        rows = run_baselines(study, cohorts, weights, _oracle_risk(index), emit=emit)
        atomic_write_text(results_dir / BASELINES_CSV, pd.DataFrame([asdict(r) for r in rows]).to_csv(index=False))
        table = format_table(rows)
        atomic_write_text(results_dir / BASELINES_MD, table + "\n")
        emit("\n" + table)
    summary = {"sites": [c.site for c in cohorts], "seconds": round(time.monotonic() - started, 1)}
    atomic_write_text(results_dir / "run.json", json.dumps(summary, indent=2))
    emit(f"done in {summary['seconds']} s; results in {results_dir}")
    return results_dir


def _prepare_sites(study: StudyConfig, sites: list[CohortSite], panel: list[str], cnv_panel: list[str] | None,
                   device: str, emit: Callable[[str], None]) -> list[SiteCohort]:
    """Prepare each site's slide features (as its admin would, on ``device``), then load the site once."""
    cohorts = []
    for site in sites:
        started = time.monotonic()
        summary = prepare_slide_features(site.site_dir, study, device=device, workers=os.cpu_count() or 1,
                                         progress=emit)
        emit(summary.describe())
        cohort = load_site_cohort(site.site_dir, study, gene_panel=panel, cnv_panel=cnv_panel)
        emit(f"{site.name}: {len(cohort.train)} training + {len(cohort.test)} held-out patients "
             f"({time.monotonic() - started:.1f} s)" + "".join(f"\n  note: {n}" for n in cohort.notes))
        cohorts.append(cohort)
    return cohorts


def _oracle_risk(index: CohortIndex) -> dict[tuple[str, str], float] | None:
    """The planted risk per (site, patient) of a synthetic cohort; None for a real one."""
    if index.oracle_path is None:
        return None
    table = read_oracle(index.oracle_path)
    return {(str(site), str(patient)): float(risk)
            for site, patient, risk in zip(table["site"], table["patient_id"], table["oracle_risk"], strict=True)}

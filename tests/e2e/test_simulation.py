"""End to end: `fedfusion simulate` through Flower's real simulation engine (Ray), with real Opacus DP-SGD,
on real pyramidal TIFF slides read with OpenSlide. Slow: deselect with -m "not slow"."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
from process_scan import processes_with_marker

from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.synthetic import generate_cohort
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.simulation.baselines import federated_scores, held_out_patients
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR
from fedfusion.study.config import StudyConfig

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, StudyConfig]:
    """Run `fedfusion simulate` (2 sites, 2 rounds) as a user would, in a subprocess."""
    work = tmp_path_factory.mktemp("sim")
    cohort_dir, results_dir = work / "cohort", work / "results"
    generate_cohort(cohort_dir, num_sites=2, seed=3, patients_per_site=[120, 90], slide_size_px=1024)
    marker = f"FEDFUSION_TEST_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.run(
        [sys.executable, "-m", "fedfusion.cli", "simulate", "--sites", "2", "--rounds", "2",
         "--cohort-dir", str(cohort_dir), "--results-dir", str(results_dir), "--baselines",
         # Still DP-SGD (epsilon is checked below), with less noise so that 2 short rounds can learn.
         "--set", "noise-multiplier=0.5", "--set", "local-epochs=3"],
        env=env, capture_output=True, text=True, timeout=600, cwd=work,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for site in ("site-a", "site-b"):  # each site's slides prepared, visibly, before the engine starts
        prepared = proc.stdout.index(f"preparing slide features of site {site}: ")
        assert prepared < proc.stdout.index("starting Flower's simulation engine"), proc.stdout[-3000:]
    leftovers = processes_with_marker(marker)
    for pid in leftovers:  # stop them anyway, then fail: a run must not leave processes behind
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    assert not leftovers, f"simulate left processes running: {leftovers}"
    study = StudyConfig.from_run_config(json.loads((results_dir / "config.json").read_text()))
    return cohort_dir, results_dir, study


def test_results_folder_has_metrics_plot_model_and_config(simulated_run: tuple[Path, Path, StudyConfig]) -> None:
    cohort_dir, results_dir, study = simulated_run
    for name in ("site_metrics.csv", "round_metrics.csv", "metrics.json", "progress.png", "final_model.pt",
                 "config.json", "flower-app/pyproject.toml"):
        assert (results_dir / name).is_file(), name
    sites = pd.read_csv(results_dir / "site_metrics.csv")
    assert set(sites["round"]) == {1, 2}
    assert set(sites["site"]) == {s.name for s in read_cohort_index(cohort_dir).sites[:2]}
    train = sites[sites["phase"] == "train"].sort_values("round")
    # The accountant is carried across rounds: each site's epsilon grows round over round.
    for _, rows in train.groupby("site"):
        eps = rows["epsilon"].tolist()
        assert eps[0] > 0 and eps[1] > eps[0]
    assert study.num_server_rounds == 2 and study.dp
    for site in set(sites["site"]):  # each simulated site's own ledger and egress record, in the run's results
        site_dir = results_dir / SIMULATED_SITES_DIR / site
        # train 1, train 2 (with round 1's evaluation), evaluate 2: each round's evaluation is on the record
        assert EgressRecord(site_dir / EGRESS_FILE).verify_chain() == 3
        entries = EgressRecord(site_dir / EGRESS_FILE).entries()
        assert [(e["kind"], e["round"]) for e in entries] == [("train", 1), ("train", 2), ("evaluate", 2)]
        assert "evaluation/c-index" in entries[1]["metrics"] and "metrics/c-index" in entries[2]["metrics"]
        assert any(site_dir.glob("*.json")), f"no privacy ledger for {site}"
    for (server_round, site), rows in sites[sites["phase"] == "evaluate"].groupby(["round", "site"]):
        assert len(rows) == 1 and rows["comparable-pairs"].notna().all(), (server_round, site)
    assert len(sites[sites["phase"] == "evaluate"]) == 2 * 2


def test_baselines_table_scores_every_model_on_the_same_patients(
    simulated_run: tuple[Path, Path, StudyConfig],
) -> None:
    _, results_dir, _ = simulated_run
    table = pd.read_csv(results_dir / "baselines.csv")
    assert list(table["model"]) == ["federated", "centralized", "centralized", "centralized", "centralized",
                                    "site-a alone", "site-b alone", "oracle"]
    assert set(table.loc[table["model"] == "centralized", "modalities"]) == {"wsi,omics,clinical", "wsi", "omics",
                                                                             "clinical"}
    assert table["c_index_mean"].between(0.0, 1.0).all() and (table["seeds"] == 1).all()
    assert (table["ci95_low"] <= table["c_index_mean"]).all() and (table["c_index_mean"] <= table["ci95_high"]).all()
    assert float(table.loc[table["model"] == "oracle", "c_index_mean"].iloc[0]) > 0.75
    markdown = (results_dir / "baselines.md").read_text()
    assert "| federated |" in markdown and "federated vs best site alone (site-" in markdown


def test_federated_model_beats_untrained_model(simulated_run: tuple[Path, Path, StudyConfig]) -> None:
    cohort_dir, results_dir, study = simulated_run
    index = read_cohort_index(cohort_dir)
    cohorts = [load_site_cohort(site.site_dir, study) for site in index.sites[:2]]
    patients = held_out_patients(cohorts)
    trained = torch.load(results_dir / "final_model.pt", weights_only=True)
    untrained = build_model(study, seed=study.training_seed).state_dict()
    trained_c, untrained_c = (patients.c_index(federated_scores(study, cohorts, [w]).risks[0])
                              for w in (trained, untrained))
    assert trained_c > untrained_c + 0.05 and trained_c > 0.6, (trained_c, untrained_c)
    federated = pd.read_csv(results_dir / "baselines.csv").iloc[0]  # the table's figure is this one
    assert federated["model"] == "federated" and federated["c_index_mean"] == pytest.approx(trained_c)

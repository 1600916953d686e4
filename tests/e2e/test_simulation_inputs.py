"""End to end: `fedfusion simulate` leaves every input file as it was, trains a non-DP study (the simulated sites'
policy follows the study), and says "not trained" (exit 1, no C-index, no baselines) when no round aggregated.
Slow: deselect with -m "not slow"."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import find_sites
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME
from fedfusion.data.synthetic import generate_cohort
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.simulation.baselines import federated_scores, held_out_patients
from fedfusion.simulation.simulated_nodes import NON_DP_NOTE
from fedfusion.study.config import StudyConfig
from tests.study_schemas import copy_schema

pytestmark = pytest.mark.slow


def _simulate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedfusion.cli", "simulate", "--rounds", "2", *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=900, cwd=cwd)


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` but the documented feature cache."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and CACHE_DIRNAME not in p.relative_to(root).parts}


def _real_looking(generated: Path, target: Path) -> Path:
    """A real cohort's layout: site folders under other names, the study schema, a file of the consortium, no
    cohort.json and no oracle."""
    for site, name in zip(find_sites(generated), ["hospital-north", "hospital-south"], strict=True):
        shutil.copytree(site.site_dir, target / name)
    copy_schema(generated, target)
    (target / "README.txt").write_text("data use agreement 2024-17\n")
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("inputs")
    generate_cohort(work / "generated", num_sites=2, seed=3, patients_per_site=[20, 20], slide_size_px=1024)
    return work


@pytest.fixture(scope="module")
def non_dp_run(work: Path) -> tuple[Path, Path, subprocess.CompletedProcess[str], dict[str, str]]:
    """A non-DP study with baselines and 2 training seeds on a real-looking cohort (no cohort.json)."""
    cohort = _real_looking(work / "generated", work / "real")
    before = _digests(cohort)
    proc = _simulate("--cohort-dir", str(cohort), "--results-dir", str(work / "non-dp"), "--no-dp", "--baselines",
                     "--seeds", "2", cwd=work)
    return cohort, work / "non-dp", proc, before


def test_simulate_leaves_every_input_file_byte_identical(
    work: Path, non_dp_run: tuple[Path, Path, subprocess.CompletedProcess[str], dict[str, str]],
) -> None:
    copy = work / "generated-copy"
    shutil.copytree(work / "generated", copy)
    before = _digests(copy)
    proc = _simulate("--cohort-dir", str(copy), "--results-dir", str(work / "dp"), "--sites", "site-a,site-b",
                     cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _digests(copy) == before
    assert any((site.site_dir / CACHE_DIRNAME).is_dir() for site in find_sites(copy))  # the documented cache
    real, _, real_proc, real_before = non_dp_run
    assert real_proc.returncode == 0, real_proc.stdout[-3000:] + real_proc.stderr[-3000:]
    assert _digests(real) == real_before
    assert "using all 2 sites of" in real_proc.stdout and "generating" not in real_proc.stdout


def test_a_non_dp_study_trains_and_beats_the_untrained_model(
    non_dp_run: tuple[Path, Path, subprocess.CompletedProcess[str], dict[str, str]],
) -> None:
    cohort, results, proc, _ = non_dp_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert NON_DP_NOTE in proc.stdout
    assert json.loads((results / "training.json").read_text())["status"] == "trained"
    study = StudyConfig.from_run_config(json.loads((results / "config.json").read_text()))
    assert not study.dp and study.training_seed == 0
    cohorts = [load_site_cohort(site.site_dir, study) for site in find_sites(cohort)]
    patients = held_out_patients(cohorts)
    trained, untrained = (patients.c_index(federated_scores(study, cohorts, [weights]).risks[0]) for weights in
                          (torch.load(results / "final_model.pt", weights_only=True),
                           build_model(study, seed=study.training_seed).state_dict()))
    assert trained > untrained + 0.1 and trained > 0.6, (trained, untrained)
    for site in cohorts:  # the held-out patients per site (simulation only)
        listed = pd.read_csv(results / "held-out" / f"{site.site}.csv", dtype=str)
        assert list(listed.columns) == ["patient_id"] and list(listed["patient_id"]) == [p.patient_id
                                                                                          for p in site.test]


def test_baselines_report_mean_sd_ci_per_seed_and_a_verdict(
    non_dp_run: tuple[Path, Path, subprocess.CompletedProcess[str], dict[str, str]],
) -> None:
    _, results, proc, _ = non_dp_run
    table = pd.read_csv(results / "baselines.csv")
    assert list(table["model"]) == ["federated", "centralized", "centralized", "centralized", "centralized",
                                    "hospital-north alone", "hospital-south alone"]  # a real cohort: no oracle
    assert list(table["seeds"]) == [2] * 7 and table["c_index_sd"].notna().all()
    assert (table["ci95_low"] <= table["c_index_mean"]).all() and (table["c_index_mean"] <= table["ci95_high"]).all()
    assert all(len(str(v).split(";")) == 2 for v in table["c_index_per_seed"])
    assert (results / "seeds" / "training-seed-1" / "final_model.pt").is_file()
    markdown = (results / "baselines.md").read_text()
    assert "federated vs best site alone (hospital-" in markdown and "[95% CI " in markdown
    summary = json.loads((results / "run.json").read_text())
    federated = table.iloc[0]
    assert summary["federated_c_index"]["mean"] == pytest.approx(federated["c_index_mean"])
    assert f"federated model: held-out C-index {federated['c_index_mean']:.3f}" in proc.stdout


def test_a_study_where_no_round_aggregated_exits_1_and_says_not_trained(work: Path) -> None:
    cohort = _real_looking(work / "generated", work / "refusing")
    (cohort / "hospital-south" / POLICY_FILE_NAME).write_text("dp-mandatory = true\n")
    before = _digests(cohort)
    results = work / "refused"
    proc = _simulate("--cohort-dir", str(cohort), "--results-dir", str(results), "--no-dp", "--baselines", cwd=work)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "hospital-south: its own privacy policy" in out and "NOT TRAINED" in out and "did not train" in out
    assert json.loads((results / "run.json").read_text())["status"] == "not trained"
    assert json.loads((results / "training.json").read_text())["aggregated_rounds"] == []
    assert not (results / "final_model.pt").exists() and not (results / "baselines.csv").exists()
    assert "federated model: held-out C-index" not in out and "C-index=" not in out
    assert _digests(cohort) == before

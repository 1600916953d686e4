"""The baselines' report on fixed risks: every study gets a centralized row, one federated figure, the verdict."""

from __future__ import annotations

import numpy as np

from fedfusion.simulation.baselines import (
    BaselineReport,
    BaselineRow,
    ModelScores,
    _modality_variants,
    _verdicts,
    training_seeds,
)
from fedfusion.simulation.held_out_stats import HeldOutPatients
from fedfusion.study.config import StudyConfig


def test_every_study_gets_a_centralized_row_single_modality_ones_too() -> None:
    assert _modality_variants(StudyConfig().with_modalities(["omics"])) == ["omics"]
    assert _modality_variants(StudyConfig().with_modalities(["wsi", "clinical"])) == ["wsi,clinical", "clinical", "wsi"]


def test_training_seeds_start_at_the_studys_and_keep_its_split_seed() -> None:
    study = StudyConfig(seed=7, training_seed=3)
    assert training_seeds(study, 3) == [3, 4, 5]
    assert {study.replace(training_seed=s).seed for s in training_seeds(study, 3)} == {7}


def test_report_rows_verdicts_and_the_federated_line_use_the_same_figure() -> None:
    rng = np.random.default_rng(0)
    n = 120
    times, events = rng.integers(1, 60, n).astype(float), rng.integers(0, 2, n).astype(float)
    truth = -times + rng.normal(scale=8, size=n)
    patients = HeldOutPatients(times, events)
    scores = [
        ModelScores("federated", "federated, DP", "wsi,omics", 300, (truth + rng.normal(size=n), truth)),
        ModelScores("centralized", "pooled data, non-private, 30 epochs", "wsi,omics", 300, (truth, truth)),
        ModelScores("site-a alone", "own data only, DP", "wsi,omics", 100, (rng.normal(size=n), rng.normal(size=n))),
        ModelScores("site-b alone", "own data only, DP", "wsi,omics", 200, (truth + rng.normal(scale=30, size=n),) * 2),
    ]
    rows = tuple(BaselineRow(s.model, s.training, s.modalities, s.training_patients, patients.summarize(s.risks))
                 for s in scores)
    verdicts = _verdicts(patients, scores, rows)
    assert verdicts[0].startswith("federated vs best site alone (site-b): +")
    assert verdicts[1].startswith("federated vs centralized (pooled, non-private): ")
    report = BaselineReport(rows, tuple(verdicts), n, ("site-a", "site-b"))
    federated = report.federated.summary
    assert report.federated_line().startswith(f"federated model: held-out C-index {federated.mean:.3f} +- "
                                              f"{federated.sd:.3f} over 2 training seeds [95% CI ")
    frame = report.to_frame()
    assert list(frame.columns) == ["model", "training", "modalities", "training_patients", "seeds", "c_index_mean",
                                   "c_index_sd", "ci95_low", "ci95_high", "c_index_per_seed"]
    assert frame.loc[0, "c_index_mean"] == federated.mean and frame.loc[0, "c_index_per_seed"].count(";") == 1
    markdown = report.to_markdown()
    assert f"| federated | federated, DP | wsi,omics | {federated.mean:.3f} +- {federated.sd:.3f} |" in markdown
    assert verdicts[0] in markdown and "same 120 pooled held-out patients of site-a, site-b" in markdown

"""A site's clipped gradient sum (distributed DP): one patient moves it by at most the clipping norm C."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from study_schemas import patient, study_with

from fedfusion.data.patient_records import SiteCohort
from fedfusion.models.fusion_model import build_model
from fedfusion.site.distributed_dp import clipped_gradient_sum
from fedfusion.site.trainer import SiteTrainer

CLIP = 0.05
STUDY = study_with(genes=6, hidden_dim=8, tile_feature_dim=4, tiles_per_patient=6, batch_size=5, dropout=0.0,
                   max_grad_norm=CLIP, sample_rate=1.0)


def cohort(n: int = 12) -> SiteCohort:
    rng = np.random.default_rng(0)
    patients = [patient(f"p{i}", rng.normal(size=(int(rng.integers(3, 9)), 4)).astype(np.float32),
                        rng.normal(size=6).astype(np.float32), rng.normal(size=2).astype(np.float32),
                        float(rng.uniform(1, 80)), int(rng.integers(0, 2)), int(rng.integers(0, 3)))
                for i in range(n)]
    return SiteCohort("site", patients, [])


def norm(arrays: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in arrays.values())))


def test_removing_one_patient_moves_the_sum_by_at_most_the_clipping_norm() -> None:
    full = cohort()
    weights = build_model(STUDY, seed=1).state_dict()
    with_all, sampled = clipped_gradient_sum(SiteTrainer(full, STUDY, device="cpu"), weights, seed=3,
                                             rng=np.random.default_rng(0))
    # The last patient is left out: the others see the same tiles (sampled in order) and batches.
    without, _ = clipped_gradient_sum(SiteTrainer(dataclasses.replace(full, train=full.train[:-1]), STUDY,
                                                  device="cpu"), weights, seed=3, rng=np.random.default_rng(0))
    moved = norm({k: with_all[k] - without[k] for k in with_all})
    print(f"12 patients, C = {CLIP}: |sum| = {norm(with_all):.4f}, one patient moved it by {moved:.6f}")
    assert sampled == 12
    assert list(with_all) == list(weights)
    assert moved <= CLIP * (1 + 1e-6)
    assert moved > 0.99 * CLIP  # its gradient was clipped to C, not dropped
    assert norm(with_all) > 2 * CLIP  # the sum holds several patients' clipped gradients


def test_poisson_sample_follows_the_sample_rate_and_empty_samples_give_zero() -> None:
    trainer = SiteTrainer(cohort(40), STUDY.replace(sample_rate=0.25), device="cpu")
    weights = build_model(STUDY, seed=1).state_dict()
    counts = [clipped_gradient_sum(trainer, weights, seed=0, rng=np.random.default_rng(s))[1] for s in range(6)]
    assert 0 < np.mean(counts) < 20 and len(set(counts)) > 1  # binomial(40, 0.25): mean 10
    empty = SiteTrainer(cohort(3), STUDY.replace(sample_rate=1e-9), device="cpu")
    sums, sampled = clipped_gradient_sum(empty, weights, seed=0)
    assert sampled == 0 and norm(sums) == 0.0


@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_sum_equals_patient_by_patient_clipped_gradients(clip: float) -> None:
    study = STUDY.replace(max_grad_norm=clip, tiles_per_patient=8)  # bags of 3-8 tiles: all used, no sampling
    patients = cohort(4)
    weights = build_model(study, seed=1).state_dict()
    total, _ = clipped_gradient_sum(SiteTrainer(patients, study, device="cpu"), weights, seed=3,
                                    rng=np.random.default_rng(0))
    parts = [clipped_gradient_sum(SiteTrainer(dataclasses.replace(patients, train=[p]), study, device="cpu"),
                                  weights, seed=3, rng=np.random.default_rng(0))[0] for p in patients.train]
    for name in total:
        assert torch.allclose(torch.from_numpy(total[name]), torch.from_numpy(sum(part[name] for part in parts)),
                              atol=1e-6)

"""SiteTrainer: learns a planted signal with and without DP, returns loadable weights, is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from study_schemas import planted_cohort, study_with

from fedfusion.data.patient_records import SiteCohort
from fedfusion.devices import resolve_device
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.site.trainer import SiteTrainer

STUDY = study_with(genes=20, hidden_dim=16, tile_feature_dim=8, tiles_per_patient=8, batch_size=32,
                    learning_rate=0.01, local_epochs=6, noise_multiplier=0.5, max_grad_norm=1.0, dropout=0.0)


@pytest.fixture(scope="module")
def cohort() -> SiteCohort:
    return planted_cohort()


@pytest.mark.parametrize("dp", [False, True])
def test_training_learns_planted_signal(cohort: SiteCohort, dp: bool) -> None:
    study = STUDY.replace(dp=dp)
    trainer = SiteTrainer(cohort, study, device="cpu")
    initial = build_model(study, seed=0).state_dict()
    outcome = trainer.train(initial, seed=1)
    before, after = trainer.evaluate(initial)["c-index"], trainer.evaluate(outcome.weights)
    assert after["c-index"] > 0.65 and after["c-index"] > before + 0.1, (before, after)
    assert after["num-examples"] == len(cohort.test) and after["subtype-auc"] > 0.6
    assert outcome.num_patients == len(cohort.train)
    assert (outcome.metrics["epsilon"] > 0) == dp and outcome.metrics["noise-multiplier"] == (0.5 if dp else 0.0)


def test_weights_load_into_fresh_model_and_same_seed_gives_same_weights(cohort: SiteCohort) -> None:
    study = STUDY.replace(local_epochs=1)
    trainer = SiteTrainer(cohort, study, device="cpu")
    initial = build_model(study, seed=0).state_dict()
    first, second = trainer.train(initial, seed=5, dp_seed=5), trainer.train(initial, seed=5, dp_seed=5)
    other = trainer.train(initial, seed=6, dp_seed=6)
    fresh = build_model(study)
    fresh.load_state_dict(first.weights)  # strict: same keys, no "_module." prefix
    assert all(t.device.type == "cpu" for t in first.weights.values())
    assert all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)
    assert not all(torch.equal(first.weights[k], other.weights[k]) for k in first.weights)
    assert first.accountant_history == second.accountant_history


def test_dp_noise_is_not_reproducible_from_the_study_seed(cohort: SiteCohort) -> None:
    """The coordinator picks the study seed: it must not be able to regenerate a site's DP noise."""
    study = STUDY.replace(local_epochs=1)
    assert study.dp
    trainer = SiteTrainer(cohort, study, device="cpu")
    initial = build_model(study, seed=0).state_dict()
    first, second = trainer.train(initial, seed=5), trainer.train(initial, seed=5)
    assert not all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)


def test_predict_risk_uses_full_bags_in_eval_mode(cohort: SiteCohort) -> None:
    trainer = SiteTrainer(cohort, STUDY.replace(dropout=0.5), device="cpu")
    weights = build_model(STUDY, seed=0).state_dict()
    risks = trainer.predict_risk(weights, cohort.test[:5])
    assert risks.shape == (5,)
    np.testing.assert_array_equal(risks, trainer.predict_risk(weights, cohort.test[:5]))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ConfigError):
        resolve_device("tpu-9")

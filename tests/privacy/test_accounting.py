"""Epsilon is cumulative across rounds: restored history equals one accountant that saw every step."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import torch
from opacus.accountants import create_accountant
from study_schemas import patient, study_with

from fedfusion.data.patient_records import SiteCohort
from fedfusion.errors import PrivacyError
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.accounting import PRV_GRID_LIMIT, epsilon_spent, prv_grid_points, restore_accountant
from fedfusion.site.trainer import SiteTrainer

STUDY = study_with(genes=4, hidden_dim=4, tile_feature_dim=3, tiles_per_patient=2, batch_size=4,
                    noise_multiplier=1.1, local_epochs=2)


def cohort() -> SiteCohort:
    rng = np.random.default_rng(0)
    patients = [patient(f"p{i}", rng.normal(size=(3, 3)).astype(np.float32),
                              rng.normal(size=4).astype(np.float32), rng.normal(size=2).astype(np.float32),
                              float(rng.uniform(1, 60)), i % 2, i % 3)
                for i in range(20)]
    return SiteCohort("site-a", patients[:16], patients[16:])


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_three_rounds_with_restored_history_equal_one_long_run(accountant: str) -> None:
    study = STUDY.replace(accountant=accountant)
    trainer = SiteTrainer(cohort(), study, device="cpu")
    weights, history, epsilons = build_model(study, seed=0).state_dict(), [], []
    for round_ in range(3):
        outcome = trainer.train(weights, accountant_history=history, seed=round_)
        weights, history = outcome.weights, outcome.accountant_history
        epsilons.append(outcome.metrics["epsilon"])
    assert epsilons[0] < epsilons[1] < epsilons[2]
    total_steps = int(outcome.metrics["total-steps"])
    assert total_steps == 3 * 2 * 4  # 3 rounds x 2 epochs x 4 Poisson batches (sample rate 1/4)
    single = create_accountant(mechanism=accountant)
    for _ in range(total_steps):
        single.step(noise_multiplier=study.noise_multiplier, sample_rate=1 / 4)
    assert epsilons[2] == pytest.approx(single.get_epsilon(delta=study.delta), abs=1e-6)
    assert epsilons[2] == pytest.approx(epsilon_spent(accountant, history, study.delta), abs=1e-6)


def test_dp_off_does_not_wrap_or_account() -> None:
    study = STUDY.replace(dp=False)
    history = [(1.1, 0.25, 8)]
    outcome = SiteTrainer(cohort(), study, device="cpu").train(build_model(study, seed=0).state_dict(),
                                                                accountant_history=history)
    assert outcome.metrics["epsilon"] == 0.0 and outcome.accountant_history == history
    assert not any(key.startswith("_module.") for key in outcome.weights)
    assert outcome.metrics["steps"] == 2 * 4


def test_malformed_history_is_refused() -> None:
    with pytest.raises(PrivacyError):
        restore_accountant("prv", [(1.0, 1.5, 3)])
    with pytest.raises(PrivacyError):
        restore_accountant("rdp", [("x", 0.1)])


def test_same_module_can_be_made_private_every_round() -> None:
    trainer = SiteTrainer(cohort(), STUDY, device="cpu")
    model = build_model(STUDY, seed=0)
    for round_ in range(2):  # would fail with "Trying to add hooks twice" if hooks stayed behind
        model.load_state_dict(trainer.train(model.state_dict(), seed=round_).weights)
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()


def test_a_history_whose_prv_grid_is_too_large_is_accounted_with_rdp() -> None:
    """Noise 0.3 at sample rate 1.0 over 100 steps: Opacus' PRV grid would hold 5 million points (about 800 MB at its
    peak); the site answers with the RDP accountant's epsilon instead, an upper bound, without that grid."""
    tiny_noise = [(0.3, 1.0, 100)]
    assert prv_grid_points(tiny_noise, 1e-5) > PRV_GRID_LIMIT
    rdp = float(restore_accountant("rdp", tiny_noise).get_epsilon(delta=1e-5))
    assert epsilon_spent("prv", tiny_noise, 1e-5) == rdp
    # A study's usual history stays with PRV, the tighter of the two.
    usual = [(1.0, 0.2, 50)]
    assert prv_grid_points(usual, 1e-5) < PRV_GRID_LIMIT / 10
    prv = float(restore_accountant("prv", usual).get_epsilon(delta=1e-5))
    assert epsilon_spent("prv", usual, 1e-5) == prv < float(restore_accountant("rdp", usual).get_epsilon(delta=1e-5))


def test_a_tiny_noise_multiplier_cannot_exhaust_the_sites_memory() -> None:
    """Noise 0.001 (a hostile or mistaken study): PRV would ask for hundreds of GiB; the answer comes from RDP."""
    resident_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    epsilon = epsilon_spent("prv", [(0.001, 0.2, 50)], 1e-5)
    assert epsilon > 1000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - resident_before < 500_000  # KiB

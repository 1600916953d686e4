"""FedProx, ridge and lasso act after DP privatization: a penalty in the loss is dropped by Opacus, the hooks are
not; with them each patient's bound on a step is unchanged; and each term does what it says in SiteTrainer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from study_schemas import patient, study_with
from torch.utils.data import DataLoader

from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.models.fusion_model import build_model
from fedfusion.models.survival_loss import batch_loss, patient_loss
from fedfusion.privacy.dp_sgd import make_private
from fedfusion.site.gradient_terms import GradientTerms
from fedfusion.site.patient_bags import PatientBagDataset, collate_full_bags
from fedfusion.site.trainer import SiteTrainer

STUDY = study_with(genes=5, time_bins=(10, 20), dp=False, noise_multiplier=0.0, max_grad_norm=0.05, dropout=0.0,
                   hidden_dim=8, tile_feature_dim=6, tiles_per_patient=4)
"""No noise, a small clipping norm (every patient is clipped), no dropout: one DP step is deterministic."""
LR = 0.5
MU = 2.0


def patients(count: int = 6, seed: int = 7) -> list[PatientRecord]:
    rng = np.random.default_rng(seed)
    return [patient(f"p{i}", rng.normal(size=(int(rng.integers(1, 6)), 6)).astype(np.float32),
                    rng.normal(size=5).astype(np.float32), rng.normal(size=2).astype(np.float32),
                    float(rng.uniform(1, 30)), i % 2, i % 3) for i in range(count)]


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def dp_step(batch_records: list[PatientRecord], cohort: list[PatientRecord], terms: GradientTerms,
            loss_mu: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One noiseless DP-SGD step on ``batch_records`` (expected batch size: ``cohort``) from weights moved away
    from the round's global model; returns the update and ``w - w_global``. ``loss_mu`` adds FedProx's term to the
    loss instead (what Opacus drops)."""
    model = build_model(STUDY, seed=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    terms.attach(optimizer)  # anchored at the global model
    anchors = [p.detach().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # local steps have moved the weights (the proximal term is zero at the anchor)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    before = flat(list(model.parameters()))
    loader = DataLoader(PatientBagDataset(cohort, STUDY), batch_size=len(cohort))
    private = make_private(model, optimizer, loader, STUDY, noise_multiplier=STUDY.noise_multiplier)
    assert private.optimizer.expected_batch_size == len(cohort)
    private.optimizer.zero_grad()
    batch = collate_full_bags(batch_records, STUDY)
    loss = batch_loss(patient_loss(private.model(*batch.model_inputs()), batch.targets, STUDY.tasks))
    if loss_mu:
        loss = loss + loss_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchors, strict=True))
    with warnings.catch_warnings():  # Opacus' hooks on the first layer (tile features need no gradient): harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()
    private.optimizer.step()
    after = flat(list(private.release().parameters()))
    return before - after, before - flat(anchors)


def test_a_proximal_term_in_the_loss_is_dropped_by_opacus_the_hook_is_not() -> None:
    cohort = patients()
    plain, offset = dp_step(cohort, cohort, GradientTerms())
    in_loss, _ = dp_step(cohort, cohort, GradientTerms(), loss_mu=MU)
    hooked, _ = dp_step(cohort, cohort, GradientTerms(proximal_mu=MU))
    torch.testing.assert_close(in_loss, plain)  # silently dropped: Opacus replaced p.grad
    torch.testing.assert_close(hooked - plain, LR * MU * offset, atol=1e-6, rtol=1e-5)
    assert float((LR * MU * offset).norm()) > 0.1


@pytest.mark.parametrize("terms", [GradientTerms(proximal_mu=MU), GradientTerms(proximal_mu=MU, l2_penalty=1.0)])
def test_fedprox_with_dp_keeps_the_per_patient_bound(terms: GradientTerms) -> None:
    """Neighbouring cohorts (one patient removed) give steps that differ by at most lr * C / B, although the
    proximal (and ridge) part of each step is far larger: it is the same for both, it touches no patient."""
    cohort = patients()
    full, offset = dp_step(cohort, cohort, terms)
    bound = LR * STUDY.max_grad_norm / len(cohort)
    assert float((LR * MU * offset).norm()) > 50 * bound
    for removed in range(len(cohort)):
        neighbour, _ = dp_step(cohort[:removed] + cohort[removed + 1:], cohort, terms)
        assert float((full - neighbour).norm()) <= bound * (1 + 1e-4), f"patient {removed}"
    first_removed, _ = dp_step(cohort[1:], cohort, terms)
    assert float((full - first_removed).norm()) > 0.9 * bound  # each patient is clipped to C: the bound is tight


TRAIN_STUDY = study_with(genes=5, hidden_dim=8, tile_feature_dim=6, tiles_per_patient=4, batch_size=8,
                         learning_rate=0.02, local_epochs=4, noise_multiplier=0.5, max_grad_norm=1.0, dropout=0.0)


@pytest.fixture(scope="module")
def cohort() -> SiteCohort:
    records = patients(48, seed=11)
    return SiteCohort("terms", records[:40], records[40:])


@pytest.fixture(scope="module")
def free(cohort: SiteCohort) -> dict[str, torch.Tensor]:
    """The same round trained without any term."""
    return _trained(cohort)[1]


def _trained(cohort: SiteCohort, **terms: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    study = TRAIN_STUDY.replace(**terms)
    initial = build_model(study, seed=0).state_dict()
    return initial, SiteTrainer(cohort, study, device="cpu").train(initial, seed=1, dp_seed=1).weights


def _matrices(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return flat([w for w in weights.values() if w.dim() >= 2 and w.is_floating_point()])


def test_fedprox_pulls_the_local_model_toward_the_global_one(cohort: SiteCohort,
                                                             free: dict[str, torch.Tensor]) -> None:
    initial, proximal = _trained(cohort, proximal_mu=5.0)
    start = flat(list(initial.values()))
    moved_free = float((flat(list(free.values())) - start).norm())
    moved_proximal = float((flat(list(proximal.values())) - start).norm())
    print(f"distance to the global model: mu = 0 {moved_free:.4f}, mu = 5 {moved_proximal:.4f}")
    assert moved_proximal < 0.8 * moved_free


def test_ridge_shrinks_the_weight_matrices(cohort: SiteCohort, free: dict[str, torch.Tensor]) -> None:
    _, ridge = _trained(cohort, l2_penalty=5.0)
    print(f"weight-matrix norm: l2 = 0 {_matrices(free).norm():.4f}, l2 = 5 {_matrices(ridge).norm():.4f}")
    assert _matrices(ridge).norm() < 0.95 * _matrices(free).norm()


def test_lasso_gives_exact_zeros_in_weight_matrices_only(cohort: SiteCohort, free: dict[str, torch.Tensor]) -> None:
    _, lasso = _trained(cohort, l1_penalty=0.5)
    zeros = float((_matrices(lasso) == 0).float().mean())
    biases = flat([w for w in lasso.values() if w.dim() == 1 and w.is_floating_point()])
    print(f"exact zeros in weight matrices: l1 = 0 {float((_matrices(free) == 0).float().mean()):.3f}, "
          f"l1 = 0.5 {zeros:.3f}")
    assert float((_matrices(free) == 0).float().mean()) == 0.0 and zeros > 0.3
    assert float((biases == 0).float().mean()) < 0.05  # biases (and LayerNorm gains) are not thresholded

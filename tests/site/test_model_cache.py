"""The site's model kept between rounds of one process: loaded in place, never carrying state into the next round."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from study_schemas import planted_cohort, study_with
from torch import nn

from fedfusion.data.patient_records import SiteCohort
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.site import model_cache
from fedfusion.site.distributed_dp import clipped_gradient_sum
from fedfusion.site.trainer import SiteTrainer, TrainOutcome
from fedfusion.study.config import StudyConfig

STUDY = study_with(genes=20, hidden_dim=16, tile_feature_dim=8, tiles_per_patient=8, batch_size=16,
                    learning_rate=0.01, local_epochs=1, noise_multiplier=0.8, max_grad_norm=1.0, dropout=0.3)
"""DP on, with dropout: a round's result depends on torch's global random generator."""
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cohort() -> SiteCohort:
    return planted_cohort(n_train=48, n_test=24)


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    model_cache.clear()
    yield
    model_cache.clear()


def second_round(trainer: SiteTrainer, first: TrainOutcome) -> TrainOutcome:
    return trainer.train(first.weights, accountant_history=first.accountant_history, seed=2, dp_seed=22)


def assert_same(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert list(left) == list(right)
    assert all(torch.equal(left[name], right[name]) for name in left), "weights differ"


def kept_model(study: StudyConfig = STUDY) -> nn.Module:
    models = model_cache.kept_models()
    assert list(models) == [model_cache.model_key(study, CPU)]
    return next(iter(models.values()))


def test_two_rounds_in_one_process_equal_two_fresh_processes(cohort: SiteCohort) -> None:
    initial = build_model(STUDY, seed=0).state_dict()
    trainer = SiteTrainer(cohort, STUDY, device="cpu")
    first = trainer.train(initial, seed=1, dp_seed=11)
    model = kept_model()
    metrics = trainer.evaluate(first.weights)  # eval mode, no grad: the same kept model
    trainer.train(first.weights, seed=9, dp_seed=9, train_only="heads.")  # personalization freezes the rest
    second = second_round(trainer, first)
    assert kept_model() is model  # built once, kept on the device, loaded in place
    kept_metrics = trainer.evaluate(second.weights)

    model_cache.clear()  # a new process: a new trainer, nothing kept
    fresh_first = SiteTrainer(cohort, STUDY, device="cpu").train(initial, seed=1, dp_seed=11)
    model_cache.clear()
    fresh_trainer = SiteTrainer(cohort, STUDY, device="cpu")
    fresh_second = second_round(fresh_trainer, first)
    assert_same(first.weights, fresh_first.weights)
    assert_same(second.weights, fresh_second.weights)
    assert second.accountant_history == fresh_second.accountant_history
    assert second.metrics["train-loss"] == fresh_second.metrics["train-loss"]
    assert kept_metrics == fresh_trainer.evaluate(second.weights)
    assert metrics["c-index"] == SiteTrainer(cohort, STUDY, device="cpu").evaluate(first.weights)["c-index"]


def test_a_kept_model_holds_no_trace_of_its_round(cohort: SiteCohort) -> None:
    trainer = SiteTrainer(cohort, STUDY, device="cpu")
    trainer.train(build_model(STUDY, seed=0).state_dict(), seed=1, dp_seed=1, train_only="heads.")
    model = kept_model()
    assert model.training
    for parameter in model.parameters():
        assert parameter.grad is None and parameter.requires_grad and not vars(parameter)
    for fresh, kept in zip(build_model(STUDY, seed=0).modules(), model.modules(), strict=True):
        assert set(vars(kept)) == set(vars(fresh))  # Opacus' "activations" removed
        assert not (kept._forward_hooks or kept._forward_pre_hooks or kept._backward_hooks)


def test_a_round_that_fails_midway_is_discarded(cohort: SiteCohort) -> None:
    """An exception after Opacus wrapped the model and computed per-patient gradients: the model is not kept."""
    initial = build_model(STUDY, seed=0).state_dict()
    trainer = SiteTrainer(cohort, STUDY, device="cpu")
    first = trainer.train(initial, seed=1, dp_seed=11)
    failed: list[nn.Module] = []

    def fail(_epoch: int, model: nn.Module) -> bool:
        failed.append(model)
        raise RuntimeError("killed mid-round")

    with pytest.raises(RuntimeError, match="killed mid-round"):
        trainer.train(first.weights, seed=5, dp_seed=5, after_epoch=fail)
    assert failed and not model_cache.kept_models()
    second = second_round(trainer, first)
    assert kept_model() is not failed[0]
    model_cache.clear()
    assert_same(second.weights, second_round(SiteTrainer(cohort, STUDY, device="cpu"), first).weights)


def test_distributed_dp_returns_the_model_unwrapped(cohort: SiteCohort) -> None:
    """The per-patient gradient sum wraps the kept model in Opacus; a DP round after it must wrap it again."""
    study = STUDY.replace(sample_rate=0.5)
    trainer = SiteTrainer(cohort, study, device="cpu")
    weights = build_model(study, seed=0).state_dict()
    first, _ = clipped_gradient_sum(trainer, weights, seed=3, rng=np.random.default_rng(3))
    model = kept_model(study)
    again, _ = clipped_gradient_sum(trainer, weights, seed=3, rng=np.random.default_rng(3))
    assert kept_model(study) is model
    assert all(np.array_equal(first[name], again[name]) for name in first)
    trainer.train(weights, seed=1, dp_seed=1)


def test_weights_that_do_not_fit_name_the_site_and_keep_nothing(cohort: SiteCohort) -> None:
    weights = build_model(STUDY.replace(hidden_dim=8), seed=0).state_dict()
    with pytest.raises(ConfigError, match=f"site '{cohort.site}': received weights do not fit"):
        SiteTrainer(cohort, STUDY, device="cpu").evaluate(weights)
    assert not model_cache.kept_models()


def test_each_study_has_its_own_model(cohort: SiteCohort) -> None:
    other = STUDY.replace(learning_rate=0.02)
    SiteTrainer(cohort, STUDY, device="cpu").evaluate(build_model(STUDY, seed=0).state_dict())
    SiteTrainer(cohort, other, device="cpu").evaluate(build_model(other, seed=0).state_dict())
    assert set(model_cache.kept_models()) == {model_cache.model_key(STUDY, CPU), model_cache.model_key(other, CPU)}

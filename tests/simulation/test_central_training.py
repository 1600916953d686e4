"""The centralized ceiling trains to convergence: its epoch count is chosen on validation patients only."""

from __future__ import annotations

from study_schemas import planted_cohort, study_with

from fedfusion.models.fusion_model import build_model
from fedfusion.simulation import central_training
from fedfusion.simulation.central_training import train_to_convergence

STUDY = study_with(genes=20, hidden_dim=16, tile_feature_dim=8, tiles_per_patient=8, batch_size=32,
                   learning_rate=0.01, dropout=0.0)


def test_validation_split_is_drawn_from_training_patients_only_and_is_disjoint() -> None:
    cohort = planted_cohort(n_train=200, n_test=20)
    fit, validation = central_training._validation_split(cohort.train, STUDY)
    held_out = {p.patient_id for p in cohort.test}
    assert {p.patient_id for p in fit}.isdisjoint({p.patient_id for p in validation})
    assert len(fit) + len(validation) == 200
    assert 20 <= len(validation) <= 60
    assert held_out.isdisjoint({p.patient_id for p in validation})


def test_early_stopping_picks_an_epoch_count_and_learns() -> None:
    cohort = planted_cohort(n_train=160, n_test=80)
    model = train_to_convergence(cohort, STUDY, max_epochs=25, patience=3)
    assert 1 <= model.epochs <= 25
    trainer = central_training.SiteTrainer(cohort, STUDY, device="cpu")
    initial = build_model(STUDY, seed=0).state_dict()
    assert trainer.evaluate(model.weights)["c-index"] > trainer.evaluate(initial)["c-index"] + 0.1


def test_training_stops_patience_epochs_after_the_best() -> None:
    cohort = planted_cohort(n_train=120, n_test=20)
    seen: list[int] = []
    study = STUDY.replace(learning_rate=1e-9)  # nothing improves after the first epoch
    original = central_training.SiteTrainer.train

    def counting(self, weights, **kwargs):  # type: ignore[no-untyped-def]
        callback = kwargs.get("after_epoch")
        if callback is not None:
            kwargs["after_epoch"] = lambda epoch, module: seen.append(epoch) or callback(epoch, module)
        return original(self, weights, **kwargs)

    central_training.SiteTrainer.train = counting  # type: ignore[method-assign]
    try:
        train_to_convergence(cohort, study, max_epochs=40, patience=2)
    finally:
        central_training.SiteTrainer.train = original  # type: ignore[method-assign]
    assert len(seen) < 40

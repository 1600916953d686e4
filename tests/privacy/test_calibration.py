"""The privacy budget as the input: Opacus' calibration, verified, and recorded once per study in the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedfusion.errors import PrivacyError
from fedfusion.privacy.accounting import epsilon_spent, planned_round
from fedfusion.privacy.calibration import (
    CALIBRATION_TOLERANCE,
    calibrate_noise,
    site_calibration,
    study_noise_multiplier,
    study_sampling,
)
from fedfusion.privacy.ledger import PrivacyLedger, StudyCalibration, dataset_id, study_epsilon
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.study.config import StudyConfig

DELTA = 1e-5
RATE, STEPS = 1 / 3, 9


def _ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger", dataset_id("site-x", tmp_path / "data"))


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_a_smaller_target_needs_more_noise_and_each_lands_just_under_its_target(accountant: str) -> None:
    targets = [1.0, 3.0, 8.0]
    sigmas = [calibrate_noise(t, DELTA, RATE, STEPS, accountant) for t in targets]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0
    for target, sigma in zip(targets, sigmas, strict=True):
        spent = epsilon_spent(accountant, [(sigma, RATE, STEPS)], DELTA)
        assert target * (1 - CALIBRATION_TOLERANCE) <= spent <= target


def test_a_target_no_noise_can_reach_is_a_privacy_error() -> None:
    with pytest.raises(PrivacyError, match=r"no noise multiplier up to .* reaches epsilon"):
        calibrate_noise(1e-9, DELTA, 1.0, 10_000, "rdp")


def test_a_study_without_target_keeps_its_fixed_noise_and_plans_rounds_times_steps() -> None:
    study = StudyConfig(target_epsilon=0.0, noise_multiplier=1.3, num_server_rounds=4, batch_size=4, local_epochs=2)
    assert study_noise_multiplier(study, 10, "prv") == 1.3
    assert study_sampling(study, 10) == (1 / 3, 4 * 3 * 2)
    with pytest.raises(Exception, match="'target-epsilon' must be a finite number >= 0"):
        study.replace(target_epsilon=float("inf"))


def test_the_first_calibration_of_a_study_is_recorded_and_kept_when_the_cohort_changes(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    study = StudyConfig(target_epsilon=3.0, num_server_rounds=3, batch_size=4, local_epochs=1)
    first = site_calibration(ledger, study, "study-a", 10, "prv")
    assert (first.sample_rate, first.planned_steps, first.patients) == (RATE, STEPS, 10)
    assert first.noise_multiplier == calibrate_noise(3.0, study.delta, RATE, STEPS, "prv")
    assert first.calibrated_at
    again = site_calibration(PrivacyLedger(ledger.directory, ledger.dataset), study, "study-a", 30, "prv")
    assert again == first  # a restart with a grown cohort keeps the recorded noise
    assert [c.study_id for c in ledger.calibrations()] == ["study-a"]


def _budget(target: float, sigma: float) -> StudyCalibration:
    return StudyCalibration(study_id="study-a", target_epsilon=target, delta=DELTA, accountant="prv",
                            sample_rate=RATE, planned_steps=STEPS, noise_multiplier=sigma, patients=10)


def test_a_round_that_would_push_the_study_over_its_target_is_refused(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    target = 3.0
    budget = _budget(target, calibrate_noise(target, DELTA, RATE, STEPS, "prv"))
    round_plan = planned_round(budget.noise_multiplier, 10, 4, 1)
    other = ledger.charge(run_id=1, server_round=1, planned=round_plan, policy=SitePolicy(), study_id="study-b")
    ledger.settle(other, round_plan)  # another study's round: not this study's budget
    for server_round in (1, 2, 3):
        charge = ledger.charge(run_id=1, server_round=server_round, planned=round_plan, policy=SitePolicy(),
                               study_id="study-a", budget=budget)
        ledger.settle(charge, round_plan)
    assert study_epsilon(ledger.rounds(), budget) <= target
    before = ledger.path.read_bytes()
    with pytest.raises(PrivacyError, match=r"site site-x refuses round 3: rule 'target-epsilon' \(3.0\) of the study"):
        ledger.charge(run_id=2, server_round=3, planned=round_plan, policy=SitePolicy(), study_id="study-a",
                      budget=budget)  # round 3 asked again after a kill: counted again, so over the target
    assert ledger.path.read_bytes() == before


def test_a_calibrated_noise_below_the_policy_floor_is_refused_at_charge(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(PrivacyError, match=r"refuses round 1: rule 'min-noise-multiplier' \(0.5\): .* 0.4"):
        ledger.charge(run_id=1, server_round=1, planned=[(0.4, RATE, 3)], policy=SitePolicy(), study_id="s",
                      budget=_budget(20.0, 0.4))
    assert ledger.rounds() == []


def test_a_ledger_written_before_calibrations_reads_fine_and_keeps_its_rounds(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    charge = ledger.charge(run_id=1, server_round=1, planned=[(1.0, RATE, 3)], policy=SitePolicy(), study_id="old")
    ledger.settle(charge, [(1.0, RATE, 3)])
    document = json.loads(ledger.path.read_text())
    del document["calibrations"]  # the format-1 file as the previous version wrote it
    ledger.path.write_text(json.dumps(document))
    assert ledger.calibrations() == [] and ledger.calibration("old") is None
    rounds = ledger.rounds()
    ledger.record_calibration(_budget(3.0, 1.8))
    assert ledger.rounds() == rounds and [c.study_id for c in ledger.calibrations()] == ["study-a"]


def test_calibration_ends_where_opacus_bisection_would_not() -> None:
    """q = 0.3, 40 steps, epsilon 8 (distributed DP's default study): a coordinator once hung here in Opacus' own
    unbounded bisection; the bounded one returns a noise that spends at most the target, close to it."""
    sigma = calibrate_noise(8.0, DELTA, 0.3, 40, "prv")
    spent = epsilon_spent("prv", [(sigma, 0.3, 40)], DELTA)
    assert 0.98 * 8.0 <= spent <= 8.0

"""The baselines' statistics on fixed arrays: C-index per seed, mean and sd, bootstrap CIs, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedfusion.evaluation.metrics import concordance
from fedfusion.simulation.held_out_stats import HeldOutPatients


def _patients(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = rng.integers(1, 25, n).astype(float)  # many tied times
    events = rng.integers(0, 2, n).astype(float)
    signal = np.round(-0.1 * times + rng.normal(size=n), 1)  # many tied risks
    return times, events, signal


def test_unit_weights_give_exactly_the_projects_c_index() -> None:
    times, events, risks = _patients()
    patients = HeldOutPatients(times, events, resamples=5)
    patients.weights = np.ones((1, len(times)))
    assert patients.resampled_c_index(risks)[0] == pytest.approx(concordance(times, risks, events).c_index,
                                                                 abs=1e-12)


def test_a_resample_counts_a_patient_drawn_twice_twice() -> None:
    times, events = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0])
    risks = np.array([3.0, 1.0, 2.0])  # pairs (0,1) ok, (0,2) ok, (1,2) wrong
    patients = HeldOutPatients(times, events, resamples=1)
    patients.weights = np.array([[0.0, 2.0, 1.0]])  # patient 1 twice, patient 2 once: pairs (1,2) x2, all wrong
    assert patients.resampled_c_index(risks)[0] == 0.0
    patients.weights = np.array([[2.0, 1.0, 0.0]])  # (0,1) x2 concordant; the two copies of 0 tie in time
    assert patients.resampled_c_index(risks)[0] == 1.0


def test_summary_is_mean_and_sd_over_seeds_with_a_ci_around_them() -> None:
    times, events, signal = _patients()
    rng = np.random.default_rng(1)
    seeds = [signal + rng.normal(scale=0.5, size=len(signal)) for _ in range(3)]
    summary = HeldOutPatients(times, events).summarize(seeds)
    per_seed = [concordance(times, r, events).c_index for r in seeds]
    assert summary.per_seed == pytest.approx(per_seed)
    assert summary.mean == pytest.approx(np.mean(per_seed)) and summary.sd == pytest.approx(np.std(per_seed, ddof=1))
    assert summary.ci_low < summary.mean < summary.ci_high and summary.ci_high - summary.ci_low < 0.3
    assert math.isnan(HeldOutPatients(times, events).summarize(seeds[:1]).sd)


def test_resamples_are_fixed_so_the_same_patients_give_the_same_interval() -> None:
    times, events, signal = _patients()
    first = HeldOutPatients(times, events).summarize([signal])
    assert HeldOutPatients(times, events).summarize([signal]) == first
    assert HeldOutPatients(times, events, seed=7).summarize([signal]) != first


def test_paired_difference_of_a_model_with_itself_is_exactly_zero_and_a_better_model_wins() -> None:
    times, events, signal = _patients(n=150)
    noise = np.random.default_rng(2).normal(size=len(signal))
    patients = HeldOutPatients(times, events)
    same = patients.difference([signal], [signal])
    assert (same.value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
    better = patients.difference([signal], [noise])
    expected = concordance(times, signal, events).c_index - concordance(times, noise, events).c_index
    assert better.value == pytest.approx(expected) and better.ci_low > 0
    assert better.describe().startswith(f"{better.value:+.3f} [95% CI +")


def test_risks_of_the_wrong_length_are_refused() -> None:
    times, events, signal = _patients()
    with pytest.raises(ValueError, match="risks for 80 patients"):
        HeldOutPatients(times, events).summarize([signal[:-1]])

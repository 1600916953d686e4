"""C-index on known orderings, pooling from pair counts, time-dependent AUC, integrated Brier score, subtype AUC,
MCC and balanced accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.metrics import integrated_brier_score as sksurv_integrated_brier_score
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from fedfusion.coordinator.strategies.patient_weighted_fedavg import WEIGHT_KEY, aggregate_evaluate_metrics
from fedfusion.evaluation.metrics import (
    balanced_accuracy,
    concordance,
    integrated_brier_score,
    subtype_auc,
    subtype_mcc,
    time_dependent_auc,
)


def test_perfect_reversed_and_tied_risk_orderings() -> None:
    times = np.array([1.0, 2.0, 3.0, 4.0])
    events = np.ones(4)
    assert concordance(times, np.array([4.0, 3.0, 2.0, 1.0]), events).c_index == 1.0
    assert concordance(times, np.array([1.0, 2.0, 3.0, 4.0]), events).c_index == 0.0
    tied = concordance(times, np.zeros(4), events)
    assert tied.c_index == 0.5 and tied.comparable == 6 and tied.concordant == 3.0


def test_censored_earlier_patient_is_not_comparable() -> None:
    result = concordance(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 1.0]), np.array([0, 1, 1]))
    assert result.comparable == 1 and result.c_index == 1.0


def test_pooled_from_counts_equals_direct_when_pairs_are_within_sites() -> None:
    rng = np.random.default_rng(0)
    # Site A's patients are all censored before site B's first time: the earlier patient of every cross-site
    # pair is censored, so only within-site pairs are comparable.
    times_a, events_a, risks_a = rng.uniform(0, 40, 25), np.zeros(25), rng.normal(size=25)
    times_b, events_b, risks_b = rng.uniform(50, 100, 30), rng.integers(0, 2, 30), rng.normal(size=30)
    parts = [concordance(times_a, risks_a, events_a), concordance(times_b, risks_b, events_b)]
    direct = concordance(np.r_[times_a, times_b], np.r_[risks_a, risks_b], np.r_[events_a, events_b])
    assert parts[0].comparable == 0 < parts[1].comparable
    assert direct.comparable == parts[0].comparable + parts[1].comparable
    # The server pools the pair counts each site reports (as SiteTrainer.evaluate does) in its evaluate metrics.
    replies = [RecordDict({"metrics": MetricRecord({"concordant-pairs": float(p.concordant),
                                                    "comparable-pairs": float(p.comparable), WEIGHT_KEY: n})})
               for p, n in zip(parts, (25, 30), strict=True)]
    pooled = aggregate_evaluate_metrics(replies, WEIGHT_KEY)["pooled-c-index"]
    assert pooled == pytest.approx(direct.c_index, abs=1e-12)
    assert direct.concordant == pytest.approx(parts[0].concordant + parts[1].concordant)


def test_auc_and_mcc_ignore_unknown_and_absent_classes() -> None:
    labels = np.array([0, 0, 2, 2, -1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [1.0, 0, 0]])
    assert subtype_auc(labels, probabilities) == 1.0  # class 1 absent: averaged over 0 and 2 only
    assert subtype_mcc(labels, probabilities) == 1.0
    assert math.isnan(subtype_auc(np.array([1, 1, -1]), probabilities[:3]))


def test_balanced_accuracy_is_mean_recall_over_known_labels() -> None:
    labels = np.array([0, 0, 0, 1, -1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.0, 1.0]])
    assert balanced_accuracy(labels, probabilities) == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(balanced_accuracy(np.array([-1, -1]), probabilities[:2]))


def _random_survival(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weibull-ish event times with uniform censoring; returns times, 0/1 events and the (noisy) true risk."""
    risk = rng.normal(size=n)
    event_time = rng.weibull(1.5, n) * 10 * np.exp(-0.7 * risk)
    censor_time = rng.uniform(0, 25, n)
    return np.minimum(event_time, censor_time), (event_time <= censor_time).astype(int), risk + rng.normal(size=n)


# With every patient an event and no censoring the weights are all 1: AUC(t) is the share of (case, control)
# pairs (event by t, event after t) ordered by risk, and S(t) is scored against 1[event after t].
TIMES = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
EVENTS = np.ones(6, dtype=int)


def test_auc_of_perfect_reversed_and_one_swapped_risk_ordering() -> None:
    def auc(risks: np.ndarray, eval_times: list[float]) -> float:
        return time_dependent_auc(TIMES, EVENTS, TIMES, EVENTS, risks, eval_times)

    assert auc(-TIMES, [1.5, 3.5, 5.5]) == 1.0
    assert auc(TIMES, [1.5, 3.5, 5.5]) == 0.0
    # At t=2.5 the cases are times 1, 2 and the controls 3..6; swapping the risks of times 2 and 3 misorders 1 of 8.
    assert auc(np.array([6.0, 4.0, 5.0, 3.0, 2.0, 1.0]), [2.5]) == pytest.approx(7 / 8)


def test_ibs_of_perfect_constant_and_kaplan_meier_curves() -> None:
    eval_times = np.array([1.5, 2.5, 3.5, 4.5, 5.5])
    perfect = (TIMES[:, None] > eval_times[None, :]).astype(float)
    assert integrated_brier_score(TIMES, EVENTS, TIMES, EVENTS, perfect, eval_times) == 0.0
    half = np.full((6, 5), 0.5)
    assert integrated_brier_score(TIMES, EVENTS, TIMES, EVENTS, half, eval_times) == pytest.approx(0.25)

    rng = np.random.default_rng(1)
    train_t, train_e, _ = _random_survival(rng, 150)
    test_t, test_e, _ = _random_survival(rng, 60)
    eval_times = np.quantile(test_t, np.linspace(0.05, 0.8, 10))
    km_times, km_surv = kaplan_meier_estimator(test_e.astype(bool), test_t)
    km = km_surv[np.searchsorted(km_times, eval_times, side="right") - 1]
    km_curve = np.broadcast_to(km, (60, 10))
    km_ibs = integrated_brier_score(train_t, train_e, test_t, test_e, km_curve, eval_times)
    half_ibs = integrated_brier_score(train_t, train_e, test_t, test_e, np.full((60, 10), 0.5), eval_times)
    assert km_ibs < half_ibs


def test_match_sksurv_on_random_data() -> None:
    rng = np.random.default_rng(0)
    train_t, train_e, _ = _random_survival(rng, 200)
    test_t, test_e, test_risk = _random_survival(rng, 80)
    test_t = np.minimum(test_t, 0.99 * train_t.max())  # sksurv itself raises on test times past the train's
    eval_times = np.quantile(test_t[test_e == 1], np.linspace(0.1, 0.9, 7))
    train, test = Surv.from_arrays(train_e == 1, train_t), Surv.from_arrays(test_e == 1, test_t)

    _, expected_auc = cumulative_dynamic_auc(train, test, test_risk, eval_times)
    assert time_dependent_auc(train_t, train_e, test_t, test_e, test_risk, eval_times) == pytest.approx(expected_auc)
    assert 0.5 < expected_auc < 1.0

    survival = np.exp(-np.outer(np.exp(test_risk), eval_times) / 10)
    expected_ibs = sksurv_integrated_brier_score(train, test, survival, eval_times)
    ibs = integrated_brier_score(train_t, train_e, test_t, test_e, survival, eval_times)
    assert ibs == pytest.approx(expected_ibs)
    # Times outside the test follow-up are dropped with their columns; the order of the times does not matter.
    outside = np.r_[-1.0, eval_times, test_t.max(), 1e6]
    survival_outside = np.c_[np.ones(80), survival, np.zeros((80, 2))]
    shuffle = rng.permutation(len(outside))
    assert integrated_brier_score(train_t, train_e, test_t, test_e, survival_outside[:, shuffle],
                                  outside[shuffle]) == pytest.approx(expected_ibs)
    assert time_dependent_auc(train_t, train_e, test_t, test_e, test_risk, outside[shuffle]) == pytest.approx(
        expected_auc)


def test_test_patient_past_the_train_follow_up() -> None:
    # sksurv raises when a test time (or, for the AUC, event time) lies past the train's largest time; neither
    # metric depends on such a patient's exact time once it is past every eval time, so both still get a value.
    train_t, train_e = np.array([2.0, 4.0, 6.0, 8.0, 10.0]), np.array([1, 0, 1, 0, 1])
    test_t, test_e = np.array([1.0, 3.0, 5.0, 7.0, 20.0]), np.array([1, 1, 0, 1, 1])
    risks = np.array([5.0, 3.0, 4.0, 2.0, 1.0])
    eval_times = np.array([2.0, 4.0, 6.0])
    survival = np.array([[0.2, 0.1, 0.1], [0.9, 0.3, 0.2], [0.9, 0.8, 0.6], [0.9, 0.8, 0.7], [0.9, 0.9, 0.8]])
    train = Surv.from_arrays(train_e == 1, train_t)
    past = Surv.from_arrays(test_e == 1, test_t)
    with pytest.raises(ValueError, match="smaller than largest observed time"):
        cumulative_dynamic_auc(train, past, risks, eval_times)
    with pytest.raises(ValueError, match="smaller than largest observed time"):
        sksurv_integrated_brier_score(train, past, survival, eval_times)
    inside = Surv.from_arrays(test_e == 1, np.r_[test_t[:4], 9.0])
    _, expected_auc = cumulative_dynamic_auc(train, inside, risks, eval_times)
    assert time_dependent_auc(train_t, train_e, test_t, test_e, risks, eval_times) == pytest.approx(expected_auc)
    expected_ibs = sksurv_integrated_brier_score(train, inside, survival, eval_times)
    ibs = integrated_brier_score(train_t, train_e, test_t, test_e, survival, eval_times)
    assert ibs == pytest.approx(expected_ibs)


def test_nan_when_not_computable() -> None:
    t, e = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0])
    risks, eval_times = np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.5, 2.5])
    survival = np.full((4, 2), 0.5)
    cases = {
        "no test event": (t, e, t, np.zeros(4), risks, survival, eval_times),
        "no train event": (t, np.zeros(4), t, e, risks, survival, eval_times),
        "eval times outside": (t, e, t, e, risks, survival, np.array([0.5, 4.0])),
        "one test patient": (t, e, t[:1], e[:1], risks[:1], survival[:1], eval_times),
        "no test patient": (t, e, t[:0], e[:0], risks[:0], survival[:0], eval_times),
        "no eval time": (t, e, t, e, risks, survival[:, :0], np.array([])),
    }
    for name, (train_t, train_e, test_t, test_e, r, s, times) in cases.items():
        assert math.isnan(time_dependent_auc(train_t, train_e, test_t, test_e, r, times)), name
        assert math.isnan(integrated_brier_score(train_t, train_e, test_t, test_e, s, times)), name
    # The AUC needs a test event at or before an eval time; the IBS needs two usable eval times.
    assert math.isnan(time_dependent_auc(t, e, t, e, risks, [0.5]))
    assert math.isnan(integrated_brier_score(t, e, t, e, survival[:, :1], [1.5]))
    assert math.isnan(integrated_brier_score(t, e, t, e, survival, [1.5, 1.5]))


def test_small_sites_never_raise() -> None:
    rng = np.random.default_rng(2)
    values = []
    for _ in range(300):
        n_train, n_test = rng.integers(0, 12, 2)
        train_t, test_t = rng.integers(1, 6, n_train).astype(float), rng.integers(1, 6, n_test).astype(float)
        train_e, test_e = rng.integers(0, 2, n_train), rng.integers(0, 2, n_test)
        eval_times = np.sort(rng.uniform(0, 7, rng.integers(0, 5)))
        auc = time_dependent_auc(train_t, train_e, test_t, test_e, rng.integers(0, 3, n_test), eval_times)
        survival = rng.uniform(0, 1, (n_test, len(eval_times)))
        ibs = integrated_brier_score(train_t, train_e, test_t, test_e, survival, eval_times)
        assert math.isnan(auc) or 0.0 <= auc <= 1.0
        assert math.isnan(ibs) or ibs >= 0.0
        values += [auc, ibs]
    assert np.isfinite(values).sum() > 100  # the draws are not all degenerate


def test_mismatched_shapes_and_non_binary_events_raise() -> None:
    t, e = np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1])
    with pytest.raises(ValueError):
        time_dependent_auc(t, e, t, e, np.zeros(2), [1.5])
    with pytest.raises(ValueError):
        integrated_brier_score(t, e, t, e, np.zeros((3, 1)), [1.5, 2.5])
    with pytest.raises(ValueError):
        time_dependent_auc(t, np.array([0, 2, 1]), t, e, np.zeros(3), [1.5])

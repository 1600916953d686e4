"""C-index on known orderings, pooling from pair counts, subtype AUC and MCC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from fedfusion.coordinator.strategies.patient_weighted_fedavg import WEIGHT_KEY, aggregate_evaluate_metrics
from fedfusion.evaluation.metrics import concordance, subtype_auc, subtype_mcc


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

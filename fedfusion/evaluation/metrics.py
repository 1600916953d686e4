"""Survival concordance, time-dependent survival and subtype classification metrics.

The C-index is also returned as concordant and comparable pair counts, so the server can pool it across
sites exactly: sum(concordant) / sum(comparable) equals the C-index of the concatenated cohorts restricted
to within-site pairs.

The time-dependent AUC and the integrated Brier score come from scikit-survival; their wrappers keep only
the evaluation times those data support, and return NaN (never raise) when none or too few are left.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from lifelines.utils import concordance_index
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, roc_auc_score
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.metrics import integrated_brier_score as _sksurv_integrated_brier_score
from sksurv.util import Surv


@dataclass(frozen=True)
class Concordance:
    """Harrell's C-index with its pair counts (a tie in risk counts 0.5 concordant)."""

    concordant: float
    comparable: int

    @property
    def c_index(self) -> float:
        """concordant / comparable; NaN when no pair is comparable."""
        return self.concordant / self.comparable if self.comparable else float("nan")


def concordance(times: npt.ArrayLike, risks: npt.ArrayLike, events: npt.ArrayLike) -> Concordance:
    """C-index where a higher risk means shorter survival, with its pair counts.

    A pair is comparable, as in lifelines, when the earlier time is an observed event, or when the times tie
    and only one of the two is an event.
    """
    times, risks, events = (np.asarray(a, dtype=float) for a in (times, risks, events))
    comparable = _comparable_pairs(times, events)
    if comparable == 0:
        return Concordance(0.0, 0)
    c_index = float(concordance_index(times, -risks, events))
    # Concordant counts are multiples of 0.5 (a risk tie counts half); rounding removes float residue.
    return Concordance(round(c_index * comparable * 2) / 2, comparable)


def subtype_auc(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Macro one-vs-rest AUC over the classes present among ``labels`` (-1 = unknown, ignored).

    ``probabilities`` is ``[N, num_classes]``. NaN when fewer than two classes are present.
    """
    labels, probabilities = _known(labels, probabilities)
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    aucs = [roc_auc_score(labels == c, probabilities[:, c]) for c in present]
    return float(np.mean(aucs))


def subtype_mcc(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Matthews correlation of the arg-max prediction (unknown labels ignored; NaN when none is known)."""
    labels, probabilities = _known(labels, probabilities)
    if len(labels) == 0:
        return float("nan")
    return float(matthews_corrcoef(labels, probabilities.argmax(axis=1)))


def time_dependent_auc(train_times: npt.ArrayLike, train_events: npt.ArrayLike, test_times: npt.ArrayLike,
                       test_events: npt.ArrayLike, risks: npt.ArrayLike, eval_times: npt.ArrayLike) -> float:
    """Mean cumulative/dynamic AUC: at a time t, the chance that a patient with an event by t has a higher risk
    than one still event-free after t (cases weighted by inverse censoring probability, estimated on the train data).

    The mean is scikit-survival's: the AUCs weighted by the test Kaplan-Meier's drop at each time. Usable eval
    times have a test event at or before them and lie below both the test and the train data's largest time;
    the others are dropped. NaN when none is usable, or the train or test data have no event.
    """
    train_t, train_e = _survival_arrays(train_times, train_events)
    test_t, test_e = _survival_arrays(test_times, test_events)
    risk = np.asarray(risks, dtype=float)
    if risk.shape != test_t.shape:
        raise ValueError(f"risks has shape {risk.shape}, expected ({len(test_t)},) as test_times")
    times = np.asarray(eval_times, dtype=float).reshape(-1)
    if not (train_e.any() and test_e.any()):
        return float("nan")
    # A time before the first test event has no case (its AUC is undefined, and weighs 0 in the mean); one at
    # or past the largest test time has no control; one past the train's largest time has no censoring estimate.
    upper = min(test_t.max(), train_t.max())
    times = np.unique(times[(times >= test_t[test_e].min()) & (times < upper)])
    if times.size == 0:
        return float("nan")
    # Test events after the last usable time are cases at none of them: censoring them changes neither an AUC nor
    # the Kaplan-Meier weights, and spares sksurv from weighting them where the train's censoring estimate ends.
    test_e = test_e & (test_t <= times[-1])
    _, mean_auc = cumulative_dynamic_auc(Surv.from_arrays(train_e, train_t), Surv.from_arrays(test_e, test_t),
                                         risk, times)
    return float(mean_auc)


def integrated_brier_score(train_times: npt.ArrayLike, train_events: npt.ArrayLike, test_times: npt.ArrayLike,
                           test_events: npt.ArrayLike, survival_probabilities: npt.ArrayLike,
                           eval_times: npt.ArrayLike) -> float:
    """Integrated Brier score: the squared error of the predicted S(t) against each patient's event-free status
    at t (inverse-censoring weighted, from the train data), averaged over t; lower is better, 0.25 for S = 0.5.

    ``survival_probabilities`` is ``[N, len(eval_times)]``, in any order of ``eval_times``. Usable eval times lie
    at or after the smallest test time and below both the test and the train data's largest time; the others
    are dropped (with their columns), and the score integrates between the first and last usable time. NaN when
    fewer than two are usable, or the train or test data have no event (scikit-survival needs one in each).
    """
    train_t, train_e = _survival_arrays(train_times, train_events)
    test_t, test_e = _survival_arrays(test_times, test_events)
    times = np.asarray(eval_times, dtype=float).reshape(-1)
    probabilities = np.asarray(survival_probabilities, dtype=float)
    if probabilities.shape != (len(test_t), len(times)):
        raise ValueError(f"survival_probabilities has shape {probabilities.shape}, "
                         f"expected ({len(test_t)}, {len(times)}) as test_times by eval_times")
    if not (train_e.any() and test_e.any()):
        return float("nan")
    # sksurv sorts the times but not the columns: sort both here (keeping the first column of a repeated time).
    times, columns = np.unique(times, return_index=True)
    usable = (times >= test_t.min()) & (times < min(test_t.max(), train_t.max()))
    times, columns = times[usable], columns[usable]
    if times.size < 2:
        return float("nan")
    # A test time past the train's largest has no censoring estimate; every such patient is event-free past the
    # last usable time, so moving their time down to the train's largest changes no Brier score.
    test_t = np.minimum(test_t, train_t.max())
    return float(_sksurv_integrated_brier_score(Surv.from_arrays(train_e, train_t),
                                                Surv.from_arrays(test_e, test_t), probabilities[:, columns], times))


def balanced_accuracy(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Balanced accuracy (mean recall over the classes among the known labels) of the arg-max prediction.

    Unknown labels (-1) are ignored; NaN when none is known.
    """
    labels, probabilities = _known(labels, probabilities)
    if len(labels) == 0:
        return float("nan")
    with warnings.catch_warnings():
        # A small site predicts classes its few held-out patients lack: expected, and the score is still defined.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, probabilities.argmax(axis=1)))


def _known(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The labels (any dtype given) that are known (``>= 0``) and their rows of ``probabilities``."""
    known_labels = np.asarray(labels)
    keep = known_labels >= 0
    return known_labels[keep], np.asarray(probabilities)[keep]


def _comparable_pairs(times: npt.NDArray[np.float64], events: npt.NDArray[np.float64]) -> int:
    died = events == 1
    earlier = (times[:, None] < times[None, :]) | ((times[:, None] == times[None, :]) & ~died[None, :])
    return int((earlier & died[:, None]).sum())


def _survival_arrays(times: npt.ArrayLike, events: npt.ArrayLike) -> tuple[npt.NDArray[np.float64],
                                                                          npt.NDArray[np.bool_]]:
    """1-D float times and boolean events from 0/1 (or boolean) events; raises on other values or lengths."""
    time = np.asarray(times, dtype=float).reshape(-1)
    event = np.asarray(events).reshape(-1)
    if event.shape != time.shape:
        raise ValueError(f"{len(event)} events for {len(time)} times")
    if not np.isin(event, (0, 1)).all():
        raise ValueError("events must be 0/1 (or boolean)")
    return time, event.astype(bool)

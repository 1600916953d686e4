"""Survival concordance and subtype classification metrics.

The C-index is also returned as concordant and comparable pair counts, so the server can pool it across
sites exactly: sum(concordant) / sum(comparable) equals the C-index of the concatenated cohorts restricted
to within-site pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from lifelines.utils import concordance_index
from sklearn.metrics import matthews_corrcoef, roc_auc_score


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


def _known(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The labels (any dtype given) that are known (``>= 0``) and their rows of ``probabilities``."""
    known_labels = np.asarray(labels)
    keep = known_labels >= 0
    return known_labels[keep], np.asarray(probabilities)[keep]


def _comparable_pairs(times: npt.NDArray[np.float64], events: npt.NDArray[np.float64]) -> int:
    died = events == 1
    earlier = (times[:, None] < times[None, :]) | ((times[:, None] == times[None, :]) & ~died[None, :])
    return int((earlier & died[:, None]).sum())

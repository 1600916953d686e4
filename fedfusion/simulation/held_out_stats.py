"""Statistics of models scored on one set of held-out patients: mean and sd over training seeds, bootstrap CIs.

Every model of a comparison is scored on the same patients, so its uncertainty has two sources: the training seed
(reported as mean +- sd over seeds) and which patients happen to be held out (a bootstrap: the patients are
resampled with replacement ``BOOTSTRAP_RESAMPLES`` times with a fixed RNG, the same resamples for every model, so
the difference of two models is a paired bootstrap). A resample's C-index is Harrell's on the resampled patients
(a patient drawn twice counts twice; its two copies never form a pair), computed from the pair matrix as
``sum w_i w_j concordant_ij / sum w_i w_j comparable_ij`` with ``w`` the draw counts; all weights 1 give exactly
``fedfusion.evaluation.metrics.concordance``. The 95% CI is the 2.5 and 97.5 percentiles of the resampled
statistic (the mean over training seeds of the C-index), so it describes the seed-averaged figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedfusion.evaluation.metrics import concordance

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20_240_607
"""The fixed RNG seed of the resamples: the same patients give the same CIs."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Summary:
    """A model's held-out C-index: per training seed, their mean and sd, and the bootstrap 95% CI of the mean."""

    per_seed: tuple[float, ...]
    ci_low: float
    ci_high: float

    @property
    def mean(self) -> float:
        """Mean over training seeds."""
        return float(np.mean(self.per_seed))

    @property
    def sd(self) -> float:
        """Sample sd over training seeds (NaN with one seed)."""
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else math.nan


@dataclass(frozen=True)
class Difference:
    """A paired difference of two models' seed-mean C-index on the same patients, with its bootstrap 95% CI."""

    value: float
    ci_low: float
    ci_high: float

    def describe(self) -> str:
        """``+0.040 [95% CI -0.010, +0.090]``."""
        return f"{self.value:+.3f} [95% CI {self.ci_low:+.3f}, {self.ci_high:+.3f}]"


class HeldOutPatients:
    """The pooled held-out patients' outcomes, their comparable pairs and the bootstrap resamples shared by models."""

    def __init__(self, times: npt.ArrayLike, events: npt.ArrayLike, *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> None:
        self.times = np.asarray(times, dtype=float)
        self.events = np.asarray(events, dtype=float)
        if self.times.shape != self.events.shape or self.times.ndim != 1:
            raise ValueError(f"times {self.times.shape} and events {self.events.shape} must be one equal-length row")
        n = len(self.times)
        died = self.events == 1
        # Pair (i, j) is comparable when i died first (or died at a time j was censored at): as in `concordance`.
        earlier = (self.times[:, None] < self.times[None, :]) | (
            (self.times[:, None] == self.times[None, :]) & ~died[None, :])
        self.comparable = (earlier & died[:, None]).astype(np.float64)
        draws = (np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n
                 else np.zeros((resamples, 0), dtype=np.int64))
        self.weights: FloatArray = np.zeros((resamples, n))
        """How often each patient is drawn in each resample (``[resamples, patients]``)."""
        np.add.at(self.weights, (np.arange(resamples)[:, None], draws), 1.0)

    def __len__(self) -> int:
        return len(self.times)

    def c_index(self, risks: npt.ArrayLike) -> float:
        """Harrell's C-index of ``risks`` (higher = shorter survival) on all the patients."""
        return concordance(self.times, self._checked(risks), self.events).c_index

    def _checked(self, risks: npt.ArrayLike) -> FloatArray:
        r = np.asarray(risks, dtype=np.float64)
        if r.shape != self.times.shape:
            raise ValueError(f"{r.shape[0] if r.ndim else 0} risks for {len(self)} patients")
        return r

    def resampled_c_index(self, risks: npt.ArrayLike) -> FloatArray:
        """The C-index of ``risks`` on each bootstrap resample (NaN where a resample has no comparable pair)."""
        r = self._checked(risks)
        concordant = self.comparable * ((r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :]))
        with np.errstate(invalid="ignore", divide="ignore"):
            return _weighted_pairs(self.weights, concordant) / _weighted_pairs(self.weights, self.comparable)

    def summarize(self, risks_per_seed: Sequence[npt.ArrayLike]) -> Summary:
        """Per-seed C-index, and the 95% CI of their mean over the resamples."""
        if not risks_per_seed:
            raise ValueError("no risks to summarize")
        per_seed = tuple(self.c_index(r) for r in risks_per_seed)
        low, high = _interval(self._seed_mean(risks_per_seed))
        return Summary(per_seed, low, high)

    def difference(self, first: Sequence[npt.ArrayLike], second: Sequence[npt.ArrayLike]) -> Difference:
        """Seed-mean C-index of ``first`` minus that of ``second``, paired over the same resamples."""
        value = float(np.mean([self.c_index(r) for r in first]) - np.mean([self.c_index(r) for r in second]))
        low, high = _interval(self._seed_mean(first) - self._seed_mean(second))
        return Difference(value, low, high)

    def _seed_mean(self, risks_per_seed: Sequence[npt.ArrayLike]) -> FloatArray:
        return np.asarray(np.mean([self.resampled_c_index(r) for r in risks_per_seed], axis=0), dtype=np.float64)


def _weighted_pairs(weights: FloatArray, pairs: FloatArray) -> FloatArray:
    """``sum_ij w_bi pairs_ij w_bj`` for every resample b."""
    return np.asarray(((weights @ pairs) * weights).sum(axis=1), dtype=np.float64)


def _interval(samples: FloatArray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)

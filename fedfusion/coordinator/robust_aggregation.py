"""How a plain round turns the sites' accepted updates into the round's mean update (study key ``aggregation``).

Every rule works on updates (trained minus global weights, ``coordinator/reply_validation.py``) and yields the one
mean update that the server optimizer consumes (``_apply_server_optimizer(global, mean update)``), so robust rules
compose with FedAvgM, FedAdam and the others. The rules of Flower 1.41's Message-API strategies, applied to updates
(the same as to weights: each rule commutes with subtracting the global model):

- ``mean``: the patient-weighted mean (FedAvg; the default);
- ``median``: the coordinate-wise median (``FedMedian``; unweighted, so a declared patient count buys nothing);
- ``trimmed-mean``: per coordinate, ``int(trim-fraction * n)`` values cut from each end, the rest averaged
  (``FedTrimmedAvg``'s ``trim_mean``; unweighted);
- ``krum``: the one update with the smallest summed squared distance to its ``n - f - 2`` nearest others
  (``Krum``; f = ``byzantine-sites``);
- ``multi-krum``: the patient-weighted mean of the ``n - f`` updates with the best Krum scores (``MultiKrum``).

Norm bounding (``clip-update-norm`` > 0) scales each accepted update down to at most that L2 norm before the rule,
so one site moves the patient-weighted mean by at most its weight share times the bound. None of this is possible
under secure aggregation, which shows the coordinator only the sum (``StudyConfig`` refuses the combination).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedfusion.coordinator.reply_validation import SiteUpdate, Update
from fedfusion.flower_compat import multikrum_selection, trimmed_mean
from fedfusion.study.config import AGGREGATIONS, StudyConfig

StackRule = Callable[[npt.NDArray[np.float64]], npt.NDArray[Any]]
"""A coordinate-wise rule over one array's stack of site values (sites on axis 0)."""


@dataclass(frozen=True)
class RobustAggregation:
    """One of ``AGGREGATIONS`` with its knobs, and the optional norm bound (``clip_norm`` 0: off)."""

    rule: str
    trim_fraction: float
    byzantine_sites: int
    clip_norm: float

    @classmethod
    def of(cls, study: StudyConfig) -> RobustAggregation:
        """The study's (``aggregation``, ``trim-fraction``, ``byzantine-sites``, ``clip-update-norm``)."""
        return cls(study.aggregation, study.trim_fraction, study.byzantine_sites, study.clip_update_norm)

    def __post_init__(self) -> None:
        if self.rule not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got '{self.rule}'")

    def mean_update(self, sites: Sequence[SiteUpdate]) -> Update:
        """The round's mean update from the accepted ``sites`` (at least one)."""
        if not sites:
            raise ValueError("no update to aggregate")
        updates = [self._bounded(site) for site in sites]
        weights = [float(site.patients) for site in sites]
        if self.rule == "median":
            return _per_coordinate(updates, lambda stacked: np.median(stacked, axis=0))
        if self.rule == "trimmed-mean":
            return _per_coordinate(updates, lambda stacked: trimmed_mean(stacked, self.trim_fraction))
        if self.rule in ("krum", "multi-krum"):
            keep = 1 if self.rule == "krum" else max(1, len(updates) - self.byzantine_sites)
            chosen = multikrum_selection(updates, self.byzantine_sites, keep)
            updates, weights = [updates[i] for i in chosen], [weights[i] for i in chosen]
        return weighted_mean(updates, weights)

    def _bounded(self, site: SiteUpdate) -> Update:
        """The site's update, scaled down to at most ``clip_norm`` when norm bounding is on."""
        if self.clip_norm <= 0 or site.norm <= self.clip_norm:
            return site.update
        scale = self.clip_norm / site.norm
        return {name: values * scale for name, values in site.update.items()}


def weighted_mean(updates: Sequence[Update], weights: Sequence[float]) -> Update:
    """Per array, ``sum(w_i * u_i) / sum(w_i)``."""
    total = sum(weights)
    return {name: sum((w * update[name] for update, w in zip(updates, weights, strict=True)),
                      np.zeros_like(updates[0][name])) / total
            for name in updates[0]}


def _per_coordinate(updates: Sequence[Update], rule: StackRule) -> Update:
    """``rule`` applied to each array's stack of the sites' values (sites on axis 0)."""
    return {name: np.asarray(rule(np.stack([update[name] for update in updates])), dtype=np.float64)
            for name in updates[0]}


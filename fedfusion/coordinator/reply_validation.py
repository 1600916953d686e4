"""What the coordinator accepts from a site: every reply is checked before anything of it is aggregated.

A site is trusted with its patients, not with the study: a buggy or hostile site can send anything a Flower message
can hold. A plain train reply is accepted only when it holds exactly the global model's arrays (names, shapes and
dtypes), every value finite, its patient count (``num-examples``, the FedAvg weight) an integer in
[1, ``max-site-patients``], its epsilon (if any) a finite number >= 0, and its update (trained minus global weights,
all arrays together) of L2 norm at most ``max-update-norm``. An evaluate reply is accepted when its count is an
integer in [0, ``max-site-patients``] and the pair counts of the pooled C-index are finite, 0 <= concordant <=
comparable. A check that fails raises ``ProtocolError`` with the reason; the strategy leaves the reply out like a
dropout, names the site and counts it (``rejected-replies``). Nothing here looks at a secure round's masked words:
that is ``fedfusion.secure_aggregation``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Message, MetricRecord

from fedfusion.errors import ProtocolError
from fedfusion.protocol import (
    ARRAYS_RECORD,
    COMPARABLE_PAIRS_KEY,
    CONCORDANT_PAIRS_KEY,
    EPSILON_KEY,
    METRICS_RECORD,
    WEIGHT_KEY,
)
from fedfusion.study.config import StudyConfig

Update = dict[str, npt.NDArray[np.float64]]
"""A site's update per array name: trained minus global weights, in float64."""
GlobalModel = Mapping[str, npt.NDArray[Any]]
"""The round's global arrays by name, as numpy arrays."""


@dataclass(frozen=True)
class ReplyLimits:
    """The study's bounds on a reply (``max-site-patients``, ``max-update-norm``)."""

    max_patients: int
    max_update_norm: float

    @classmethod
    def of(cls, study: StudyConfig) -> ReplyLimits:
        """The bounds ``study`` sets."""
        return cls(study.max_site_patients, study.max_update_norm)


@dataclass(frozen=True)
class SiteUpdate:
    """One accepted train reply: its update, the site's patient count and the update's L2 norm."""

    message: Message
    update: Update
    patients: int
    norm: float


def check_train_reply(message: Message, global_model: GlobalModel, limits: ReplyLimits) -> SiteUpdate:
    """The reply's update against ``global_model`` (the round's global arrays, decoded once), if the reply is one the
    round may aggregate; ``ProtocolError`` naming what is wrong."""
    metrics = _metrics(message)
    patients = _count(metrics, limits.max_patients, minimum=1)
    if EPSILON_KEY in metrics:
        _number(metrics, EPSILON_KEY)
    update = _update(message, global_model)
    norm = math.sqrt(sum(float(np.sum(np.square(values))) for values in update.values()))
    if not norm <= limits.max_update_norm:
        raise ProtocolError(f"its update has L2 norm {norm:.4g}, above the study's max-update-norm "
                            f"{limits.max_update_norm:g}")
    return SiteUpdate(message, update, patients, norm)


def check_evaluate_reply(message: Message, limits: ReplyLimits) -> Message:
    """The evaluate reply, if its numbers can be pooled; ``ProtocolError`` naming what is wrong."""
    metrics = _metrics(message)
    _count(metrics, limits.max_patients, minimum=0)
    pairs = [_number(metrics, key) for key in (CONCORDANT_PAIRS_KEY, COMPARABLE_PAIRS_KEY) if key in metrics]
    if len(pairs) == 1:
        raise ProtocolError(f"it reports only one of '{CONCORDANT_PAIRS_KEY}' and '{COMPARABLE_PAIRS_KEY}'")
    if pairs and pairs[0] > pairs[1]:
        raise ProtocolError(f"it reports more concordant ({pairs[0]:g}) than comparable ({pairs[1]:g}) pairs")
    return message


def _metrics(message: Message) -> MetricRecord:
    """The reply's one metric record."""
    records = message.content.metric_records
    if list(records) != [METRICS_RECORD]:
        raise ProtocolError(f"it holds the metric records {sorted(records)}, expected exactly ['{METRICS_RECORD}']")
    return records[METRICS_RECORD]


def _number(metrics: MetricRecord, key: str) -> float:
    """``metrics[key]``, a finite number >= 0."""
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ProtocolError(f"its '{key}' is {value!r}, not a finite number >= 0")
    return float(value)


def _count(metrics: MetricRecord, maximum: int, *, minimum: int) -> int:
    """The patient count (``num-examples``): an integer in [minimum, maximum] (a float only with an integer value)."""
    if WEIGHT_KEY not in metrics:
        raise ProtocolError(f"it has no patient count '{WEIGHT_KEY}'")
    value = metrics[WEIGHT_KEY]
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or not minimum <= value <= maximum:  # type: ignore[operator]
        raise ProtocolError(f"its patient count '{WEIGHT_KEY}' is {value!r}, not an integer in [{minimum}, {maximum}] "
                            "(max-site-patients)")
    return int(value)  # type: ignore[arg-type]


def _update(message: Message, global_model: GlobalModel) -> Update:
    """Trained minus global weights, after checking that the reply holds exactly the global model's arrays."""
    records = message.content.array_records
    if list(records) != [ARRAYS_RECORD]:
        raise ProtocolError(f"it holds the array records {sorted(records)}, expected exactly ['{ARRAYS_RECORD}']")
    arrays = records[ARRAYS_RECORD]
    missing, extra = sorted(set(global_model) - set(arrays)), sorted(set(arrays) - set(global_model))
    if missing or extra:
        raise ProtocolError(f"its arrays do not match the global model's (missing: {missing or 'none'}; "
                            f"extra: {extra or 'none'})")
    update: Update = {}
    for name, expected in global_model.items():
        received = arrays[name]
        if received.dtype != str(expected.dtype) or tuple(received.shape) != expected.shape:
            raise ProtocolError(f"array '{name}' is {received.dtype} {tuple(received.shape)}, the global model's "
                                f"{expected.dtype} {expected.shape}")
        try:
            values = received.numpy()
        except (TypeError, ValueError, OSError, EOFError) as exc:
            raise ProtocolError(f"array '{name}' does not decode ({type(exc).__name__})") from exc
        if values.dtype != expected.dtype or values.shape != expected.shape:
            raise ProtocolError(f"array '{name}' decodes to {values.dtype} {values.shape}, not what it declares")
        if not np.all(np.isfinite(values)):
            raise ProtocolError(f"array '{name}' holds {int(np.sum(~np.isfinite(values)))} non-finite values")
        update[name] = values.astype(np.float64) - expected.astype(np.float64)
    return update

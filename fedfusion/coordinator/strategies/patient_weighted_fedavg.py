"""FedAvg weighted by the number of training patients at each site.

Flower's ``FedAvg`` already weights by the reply metric ``num-examples`` (``fedfusion.protocol.WEIGHT_KEY``);
every fedfusion site reports its
*patients* there (the privacy unit), never tiles. This subclass adds what a consortium needs on top:
per-site reporting of each round (site name, patients, epsilon, metrics) through a callback, a privacy-aware
aggregation of training metrics (the federation's epsilon is the *maximum* over sites, not a mean), and a
pooled C-index computed from per-site concordant/comparable pair counts (no per-patient prediction leaves a
site), and the study's server optimizer (``fedfusion.coordinator.server_optimizer``): FedAvg's result is turned
into the mean update (aggregate minus the global arrays the round was configured with) and the optimizer moves the
global model by it (with the default 'fedavg' and rate 1, to the aggregate itself).

Nothing a site sends is trusted: each reply is checked first (``fedfusion.coordinator.reply_validation``); an invalid
one is logged with the site's name and the reason, left out like a dropout and counted (``rejected-replies``). The
accepted updates are combined by the study's rule (``fedfusion.coordinator.robust_aggregation``: the patient-weighted
mean by default, or median, trimmed mean, (multi-)Krum, with optional norm bounding) into the round's mean update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedfusion.coordinator.reply_validation import ReplyLimits, check_evaluate_reply, check_train_reply
from fedfusion.coordinator.robust_aggregation import RobustAggregation
from fedfusion.coordinator.server_optimizer import NDArray, ServerOptimizer
from fedfusion.coordinator.site_names import SiteNames
from fedfusion.errors import ProtocolError
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.protocol import (
    ARRAYS_RECORD,
    COMPARABLE_PAIRS_KEY,
    CONCORDANT_PAIRS_KEY,
    CONFIG_RECORD,
    EPSILON_KEY,
    NOT_AGGREGATED_KEY,
    POOLED_C_INDEX_KEY,
    REJECTED_KEY,
    REJECTED_REPLIES_KEY,
    WEIGHT_KEY,
)
from fedfusion.study.config import StudyConfig

logger = FLOWER_LOGGER
"""Flower's ``flwr`` logger: these warnings reach the study's console and, in deployment, ``flwr log``."""


@dataclass(frozen=True)
class SiteReply:
    """What one site reported in one round (aggregate numbers only)."""

    server_round: int
    phase: str
    """'train' or 'evaluate'."""
    site: str
    metrics: dict[str, float]


MAX_REASON = 500
"""An error reply's reason is logged up to this many characters (it is the site's, or Flower's, text)."""
ReplyListener = Callable[[SiteReply], None]
Checked = TypeVar("Checked")
RoundListener = Callable[[int, str, dict[str, float]], None]


class PatientWeightedFedAvg(FedAvg):
    """Patient-weighted FedAvg with per-site reporting and pooled C-index."""

    def __init__(
        self,
        *,
        min_sites: int,
        on_site_reply: ReplyListener | None = None,
        on_round_aggregated: RoundListener | None = None,
        server_optimizer: ServerOptimizer | None = None,
        reply_limits: ReplyLimits | None = None,
        aggregation: RobustAggregation | None = None,
    ) -> None:
        """``server_optimizer``: the study's (``ServerOptimizer.of(study)``, its state restored on resume);
        None: plain FedAvg. ``reply_limits`` and ``aggregation``: the study's (``ReplyLimits.of(study)``,
        ``RobustAggregation.of(study)``); None: the default study's."""
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=min_sites,
            min_evaluate_nodes=min_sites,
            min_available_nodes=min_sites,
            weighted_by_key=WEIGHT_KEY,
            arrayrecord_key=ARRAYS_RECORD,
            configrecord_key=CONFIG_RECORD,
            train_metrics_aggr_fn=aggregate_train_metrics,
            evaluate_metrics_aggr_fn=aggregate_evaluate_metrics,
        )
        self.min_sites = min_sites
        self._on_site_reply = on_site_reply
        self._on_round_aggregated = on_round_aggregated
        self.server_optimizer = server_optimizer or ServerOptimizer()
        if reply_limits is None or aggregation is None:
            defaults = StudyConfig()
            reply_limits = reply_limits or ReplyLimits.of(defaults)
            aggregation = aggregation or RobustAggregation.of(defaults)
        self.reply_limits = reply_limits
        self.aggregation = aggregation
        self._configured_arrays: ArrayRecord | None = None
        self._site_names = SiteNames()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; the global arrays they carry are kept: the round's mean update is taken
        against them."""
        self._configured_arrays = arrays
        return self._site_names.sent(super().configure_train(server_round, arrays, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages (kept, to name the sites of their replies)."""
        return self._site_names.sent(super().configure_evaluate(server_round, arrays, config, grid))

    def learn_site_names(self, replies: Iterable[Message]) -> None:
        """Remember the site name each reply carries (for replies taken apart before they are aggregated: an error
        reply standing for one part is named by the site's node)."""
        for reply in replies:
            self._site_names.name(reply)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check every reply, report each site's numbers, then combine the accepted updates by the study's rule.

        A round with fewer than ``min_sites`` accepted replies is not aggregated: the global model stays as it was.
        """
        replies = list(replies)
        global_arrays = self._configured_arrays
        if global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train (the round's global arrays)")
        global_model = {name: array.numpy() for name, array in global_arrays.items()}
        accepted, rejected = self._screen(server_round, "train", replies,
                                          lambda msg: check_train_reply(msg, global_model, self.reply_limits))
        if not self._enough_sites(server_round, [site.message for site in accepted], len(rejected)):
            return None, None
        metrics = self.train_metrics_aggr_fn([site.message.content for site in accepted], self.weighted_by_key)
        if rejected:
            metrics[REJECTED_REPLIES_KEY] = len(rejected)
        if self._on_round_aggregated:
            self._on_round_aggregated(server_round, "train", scalar_metrics(metrics))
        return self._apply_server_optimizer(global_arrays, self.aggregation.mean_update(accepted)), metrics

    def _apply_server_optimizer(self, global_arrays: ArrayRecord, mean_update: Mapping[str, NDArray]) -> ArrayRecord:
        """The next global model: one step of the server optimizer from ``global_arrays`` by ``mean_update``.

        Every aggregated train round, plain or secure, ends here, and only an aggregated round: a round that is not
        aggregated never steps the optimizer. The optimizer needs nothing but the patient-weighted mean update, which
        is exactly what secure aggregation reveals to the coordinator, so it composes with SecAgg+ by construction
        (and, sites' updates being DP already, it is post-processing of them).
        A step that would make the model non-finite (it cannot, from accepted replies; a last guard) is undone: the
        optimizer's state is restored and the global model stays as it was.
        """
        current = {name: array.numpy() for name, array in global_arrays.items()}
        before = self.server_optimizer.state_dict()
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
            updated = self.server_optimizer.step(current, mean_update)
        if not all(np.all(np.isfinite(values)) for values in updated.values()):
            self.server_optimizer.load_state_dict(before)
            logger.error("the server optimizer's step gave non-finite weights; it is undone and the global model "
                         "stays as it was")
            return global_arrays
        return ArrayRecord({name: Array(updated[name]) for name in global_arrays})

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate the valid replies' evaluation metrics (incl. pooled C-index); report each site's numbers first.

        A reply whose numbers cannot be pooled is rejected (logged, named, counted), never a crash."""
        accepted, rejected = self._screen(server_round, "evaluate", list(replies),
                                          lambda msg: check_evaluate_reply(msg, self.reply_limits))
        if not accepted:
            return None
        metrics = self.evaluate_metrics_aggr_fn([msg.content for msg in accepted], self.weighted_by_key)
        if rejected:
            metrics[REJECTED_REPLIES_KEY] = len(rejected)
        if self._on_round_aggregated:
            self._on_round_aggregated(server_round, "evaluate", scalar_metrics(metrics))
        return metrics

    def _enough_sites(self, server_round: int, replies: list[Message], rejected: int = 0) -> bool:
        """True when at least ``min_sites`` of ``replies`` came without error; logs the skipped round otherwise
        (``rejected``: the replies already left out as invalid, named in the log and the results)."""
        answered = sum(not msg.has_error() for msg in replies)
        if answered >= self.min_sites:
            return True
        rejections = f" ({rejected} more rejected as invalid)" if rejected else ""
        self._not_aggregated(server_round, f"{answered} of the study's minimum {self.min_sites} sites answered "
                             f"validly{rejections}", rejected)
        return False

    def _not_aggregated(self, server_round: int, reason: str, rejected: int = 0) -> None:
        """Log why a train round was not aggregated and record it (``not-aggregated`` = 1) for the results."""
        logger.warning("round %s: %s; the round is not aggregated and the global model stays as it was",
            server_round, reason)
        if self._on_round_aggregated:
            row = {NOT_AGGREGATED_KEY: 1.0, **({REJECTED_REPLIES_KEY: float(rejected)} if rejected else {})}
            self._on_round_aggregated(server_round, "train", row)

    def _screen(self, server_round: int, phase: str, replies: list[Message],
                check: Callable[[Message], Checked]) -> tuple[list[Checked], list[Message]]:
        """``check`` of every reply without error: what it accepted, and the replies it rejected (each logged with
        its site's name, node and the reason); then every site's numbers reported."""
        accepted: list[Checked] = []
        rejected: list[Message] = []
        for msg in replies:
            if msg.has_error():
                continue
            try:
                accepted.append(check(msg))
            except ProtocolError as exc:
                logger.warning("round %s: the %s reply of site %s (node %s) is rejected: %s; it is left out like a "
                               "dropout", server_round, phase, self._site_names.name(msg),
                               msg.metadata.src_node_id, exc)
                rejected.append(msg)
        self._report(server_round, phase, replies, rejected)
        return accepted, rejected

    def _report(self, server_round: int, phase: str, replies: list[Message],
                rejected: list[Message] | None = None) -> None:
        """Log every error reply with its site and reason; give each site's numbers to the results listener."""
        for msg in replies:
            if msg.has_error():
                logger.warning("round %s: site %s answered the %s message with an error: %s", server_round,
                               self._site_names.name(msg), phase, (msg.error.reason or '')[:MAX_REASON])
        if self._on_site_reply is None:
            return
        invalid = {id(msg) for msg in rejected or []}
        for msg in replies:
            if msg.has_error():
                self._on_site_reply(SiteReply(server_round, phase, self._site_names.name(msg), {"error": 1.0}))
                continue
            if id(msg) in invalid:
                self._on_site_reply(SiteReply(server_round, phase, self._site_names.name(msg), {REJECTED_KEY: 1.0}))
                continue
            metrics = next(iter(msg.content.metric_records.values()), MetricRecord())
            values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self._on_site_reply(SiteReply(server_round, phase, self._site_names.name(msg), values))


def aggregate_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Patient-weighted means, except privacy spend: epsilon is the maximum over sites."""
    aggregated = weighted_means(records, weight_key)
    epsilons = [_scalar(m, EPSILON_KEY) for m in _metric_records(records) if EPSILON_KEY in m]
    if epsilons:
        aggregated[EPSILON_KEY] = max(epsilons)
    return aggregated


def aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Patient-weighted means of site metrics plus the pooled C-index from pair counts.

    The pooled C-index counts concordant pairs over all comparable pairs *within* sites: it needs only two
    numbers per site, never a per-patient prediction.
    """
    aggregated = weighted_means(records, weight_key)
    concordant = sum(_scalar(m, CONCORDANT_PAIRS_KEY, 0.0) for m in _metric_records(records))
    comparable = sum(_scalar(m, COMPARABLE_PAIRS_KEY, 0.0) for m in _metric_records(records))
    aggregated[POOLED_C_INDEX_KEY] = concordant / comparable if comparable else math.nan
    return aggregated


def weighted_means(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Per-key patient-weighted mean over the sites whose value is finite; ``patients`` is the total.

    Unlike Flower's ``aggregate_metricrecords``, one site's undefined metric (say AUC when a class is absent
    from its test patients) does not turn the federation's mean into NaN.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    total = 0.0
    for metrics in _metric_records(records):
        weight = _scalar(metrics, weight_key)
        total += weight
        for key, value in metrics.items():
            if key == weight_key or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + weight * float(value)
            weights[key] = weights.get(key, 0.0) + weight
    out = MetricRecord({key: sums[key] / weights[key] for key in sums if weights[key] > 0})
    out["patients"] = int(total)
    return out


def scalar_metrics(metrics: MetricRecord) -> dict[str, float]:
    """The record's single numbers as floats (list values are left out)."""
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}


def _scalar(metrics: MetricRecord, key: str, default: float | None = None) -> float:
    """``metrics[key]`` as a float (``default`` when absent, if given); ``TypeError`` for a list value."""
    value = metrics[key] if default is None else metrics.get(key, default)
    if not isinstance(value, (int, float)):
        raise TypeError(f"metric '{key}' is not a single number")
    return float(value)


def _metric_records(records: list[RecordDict]) -> list[MetricRecord]:
    return [m for r in records for m in r.metric_records.values()]

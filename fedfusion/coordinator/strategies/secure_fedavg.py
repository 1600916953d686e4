"""Patient-weighted FedAvg whose train rounds can run through secure aggregation (SecAgg+).

With secure aggregation on for a round ("on", or "auto" with more than 2 sampled sites), each train message
also carries the round's SecAgg numbers and the site's id in it; the sites reply with metrics and public keys
only, and `aggregate_train` runs stages 2-4 (``fedfusion.coordinator.secure_stages``) over the grid
the strategy was started with. The coordinator only ever holds masked vectors; it learns the patient-weighted
average of the surviving sites' updates (trained minus global weights), which is the round's mean update: the
study's server optimizer moves the global model by it (``_apply_server_optimizer``; FedAvg adds it, and so gets
what plain patient-weighted FedAvg of the same sites would give, within half a quantization step per value).
Server-side optimizers therefore compose with secure aggregation by construction: they never need more than the
securely aggregated mean.

Every secure answer is checked before it counts (``secure_stages.RoundChecks``): a site announcing a weight above
the study's ``max-site-patients``, sending masked words that are not the global model's uint32 vector, a masked
input of an earlier round, an altered share or an unreadable stage message is dropped like a dropout and named in
the log; the round's metrics count them (``secure-aggregation-rejected``).

If too few sites stay (fewer than the threshold at any stage), the round fails safely: nothing is unmasked, the
failure is logged, and the global model stays as it was for the next round (its sites' privacy spend for the
round stays charged). Per-site metrics still reach the reply listener; the round's train metrics cover the sites
whose update went into the average.

Distributed DP (``dp-mode`` = distributed, ``DistributedFedSGD``): every round is secure, its SecAgg threshold is
n - t, and the sites send their clipped gradient sums plus integer noise shares; the coordinator unmasks the noisy
sum only if at least n - t sites sent theirs, divides it by q times the survivors' training patients (the noisy
gradient g) and hands -g to the server optimizer as the round's mean update ("fedavg": DP-SGD with step size
server-learning-rate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from numpy.typing import NDArray

from fedfusion.coordinator.reply_validation import ReplyLimits
from fedfusion.coordinator.robust_aggregation import RobustAggregation
from fedfusion.coordinator.secure_stages import RoundChecks, secure_round
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.patient_weighted_fedavg import (
    PatientWeightedFedAvg,
    ReplyListener,
    RoundListener,
    scalar_metrics,
)
from fedfusion.errors import ConfigError, PrivacyError
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.models.fusion_model import is_weight_matrix
from fedfusion.privacy.distributed_noise import distributed_noise
from fedfusion.protocol import SECAGG_RECORD, SECURE_AGGREGATION_REJECTED_KEY, SECURE_AGGREGATION_SITES_KEY
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.integer_noise import DistributedNoise
from fedfusion.secure_aggregation.wire_records import train_request
from fedfusion.study.config import SECURE_AGGREGATION_MODES, StudyConfig

logger = FLOWER_LOGGER
"""Flower's ``flwr`` logger: these warnings reach the study's console and, in deployment, ``flwr log``."""
AUTO_MIN_SITES = 3
"""With secure-aggregation = "auto", rounds with at least this many sampled sites are secure."""
STAGE_TIMEOUT_S = 600.0
"""Longest wait for the sites' answers to one of stages 2-4 (no training there: seconds at most); a site that has
not answered by then counts as dropped out, so one lost site does not hold the round for the train timeout."""


def secagg_threshold(num_sites: int, fraction: float) -> int:
    """Sites that must stay: ``ceil(fraction * num_sites)``, and always more than half of them."""
    return max(num_sites // 2 + 1, math.ceil(fraction * num_sites - 1e-9))


@dataclass(frozen=True)
class DistributedFedSGD:
    """Distributed DP (DP-FedSGD): the round's noise numbers and the sites' sample rate q. The step size is the
    server optimizer's (``server-learning-rate``): the coordinator turns the noisy gradient into the round's mean
    update, so FedAvg on the server is DP-SGD, FedAdam is DP-Adam, all post-processing of the noisy sum.

    ``l2_penalty`` makes the study's ridge a true one: the coordinator adds ``l2 * w`` (weight matrices only, as
    at a site) to the noisy mean gradient. It depends on the global weights only, so it is post-processing too."""

    noise: DistributedNoise
    sample_rate: float
    l2_penalty: float = 0.0

    @classmethod
    def from_study(cls, study: StudyConfig) -> DistributedFedSGD | None:
        """The study's distributed-DP settings, or None with ``dp-mode`` = local."""
        if study.dp_mode != "distributed":
            return None
        return cls(distributed_noise(study), study.sample_rate, study.l2_penalty)

    def mean_update(self, noisy_sum: Mapping[str, NDArray[np.float64]], patients: int,
                    global_arrays: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[np.float64]]:
        """-(g + l2 * w), where g = noisy sum / (q * the surviving sites' training patients) and w the global weights
        (the ridge term on weight matrices only): the server optimizer's input."""
        factor = -1.0 / (self.sample_rate * patients)
        update = {name: values * factor for name, values in noisy_sum.items()}
        if self.l2_penalty:
            for name, weights in global_arrays.items():
                if is_weight_matrix(weights.shape):
                    update[name] = update[name] - self.l2_penalty * np.asarray(weights, dtype=np.float64)
        return update

    def threshold(self, num_sites: int, fraction: float) -> int | None:
        """The SecAgg threshold of a round of ``num_sites``: n - t, or None when the round cannot run (fewer than
        t + 2 sites, or the study's threshold fraction asks more than n - t)."""
        tolerance = self.noise.tolerance
        if num_sites < tolerance + 2 or secagg_threshold(num_sites, fraction) > num_sites - tolerance:
            return None
        return self.noise.required_survivors(num_sites)


class SecurePatientWeightedFedAvg(PatientWeightedFedAvg):
    """`PatientWeightedFedAvg` that aggregates train rounds with SecAgg+ when the study asks for it."""

    def __init__(
        self,
        *,
        min_sites: int,
        secure_aggregation: str = "auto",
        threshold_fraction: float = 0.6,
        stage_timeout: float = STAGE_TIMEOUT_S,
        distributed: DistributedFedSGD | None = None,
        on_site_reply: ReplyListener | None = None,
        on_round_aggregated: RoundListener | None = None,
        server_optimizer: ServerOptimizer | None = None,
        reply_limits: ReplyLimits | None = None,
        aggregation: RobustAggregation | None = None,
    ) -> None:
        super().__init__(min_sites=min_sites, on_site_reply=on_site_reply, on_round_aggregated=on_round_aggregated,
                         server_optimizer=server_optimizer, reply_limits=reply_limits, aggregation=aggregation)
        if secure_aggregation not in SECURE_AGGREGATION_MODES:
            raise ConfigError(f"secure-aggregation must be one of {SECURE_AGGREGATION_MODES}, "
                              f"got '{secure_aggregation}'")
        self.secure_aggregation = secure_aggregation
        self.threshold_fraction = threshold_fraction
        self._grid: Grid | None = None
        self._stage_timeout = stage_timeout
        self.distributed = distributed
        self._seen_inputs: set[bytes] = set()
        """Digests of every masked input of this study so far (a replay in a later round is named)."""
        self._round: tuple[SecAggConfig, dict[int, int], ArrayRecord] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages; in a secure round each also names its site id and the SecAgg numbers.

        The grid is kept for the stages that ``aggregate_train`` runs (it gets no grid of its own).
        """
        self._grid = grid
        messages = sorted(super().configure_train(server_round, arrays, config, grid),
                          key=lambda m: m.metadata.dst_node_id)
        self._round = None
        secure = self.secure_aggregation == "on" or self.distributed is not None or (
            self.secure_aggregation == "auto" and len(messages) >= AUTO_MIN_SITES)
        if not secure or not messages:
            return messages
        if len(messages) < 2:
            logger.warning("round %s: secure aggregation needs at least 2 sites, %s sampled; round skipped",
                server_round, len(messages))
            return []
        threshold = secagg_threshold(len(messages), self.threshold_fraction)
        if self.distributed is not None:
            distributed_threshold = self.distributed.threshold(len(messages), self.threshold_fraction)
            if distributed_threshold is None:
                logger.warning("round %s: distributed DP with tolerance %s cannot run with %s sites (it needs t + 2 "
                               "and a secure-aggregation threshold of at most n - t); round skipped", server_round,
                               self.distributed.noise.tolerance, len(messages))
                return []
            threshold = distributed_threshold
        secagg = SecAggConfig(num_sites=len(messages), threshold=threshold)
        node_of_site = {site: m.metadata.dst_node_id for site, m in enumerate(messages, start=1)}
        self._round = (secagg, node_of_site, arrays)
        return self._site_names.sent([
            Message(RecordDict({**m.content, SECAGG_RECORD: train_request(secagg, site)}),
                    dst_node_id=m.metadata.dst_node_id, message_type=m.metadata.message_type)
            for site, m in enumerate(messages, start=1)
        ])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Plain rounds as `PatientWeightedFedAvg`; secure rounds through stages 2-4 over the grid."""
        if self._round is None:
            return super().aggregate_train(server_round, replies)
        secagg, node_of_site, global_arrays = self._round
        self._round = None
        replies = list(replies)
        self._report(server_round, "train", replies)
        if not self._enough_sites(server_round, replies):
            return None, None
        if self._grid is None:
            raise RuntimeError("secure aggregation needs configure_train to run before aggregate_train")
        noise = None if self.distributed is None else self.distributed.noise
        site_of_node = {node: site for site, node in node_of_site.items()}
        checks = RoundChecks(
            max_weight=self.reply_limits.max_patients,
            layout=tuple((name, tuple(int(d) for d in array.shape)) for name, array in global_arrays.items()),
            seen_inputs=self._seen_inputs,
            site_names={site_of_node[m.metadata.src_node_id]: self._site_names.name(m) for m in replies
                        if m.metadata.src_node_id in site_of_node},
        )
        try:
            average = secure_round(self._grid, server_round, secagg, node_of_site, replies, self._stage_timeout,
                                   checks, noise)
        except PrivacyError as exc:
            self._not_aggregated(server_round, f"secure aggregation failed safely ({exc})")
            return None, None
        mean_update = (average.arrays if self.distributed is None
                       else self.distributed.mean_update(average.arrays, average.total_weight,
                                                         {name: a.numpy() for name, a in global_arrays.items()}))
        arrays = self._apply_server_optimizer(global_arrays, mean_update)
        nodes = {node_of_site[site] for site in average.sites}
        included = [m.content for m in replies if not m.has_error() and m.metadata.src_node_id in nodes]
        metrics = self.train_metrics_aggr_fn(included, self.weighted_by_key)
        metrics[SECURE_AGGREGATION_SITES_KEY] = len(average.sites)
        metrics[SECURE_AGGREGATION_REJECTED_KEY] = len(average.rejected)
        if self._on_round_aggregated:
            self._on_round_aggregated(server_round, "train", scalar_metrics(metrics))
        return arrays, metrics

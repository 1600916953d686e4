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

If too few sites stay (fewer than the threshold at any stage), the round fails safely: nothing is unmasked, the
failure is logged, and the global model stays as it was for the next round (its sites' privacy spend for the
round stays charged). Per-site metrics still reach the reply listener; the round's train metrics cover the sites
whose update went into the average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedfusion.coordinator.secure_stages import secure_round
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.patient_weighted_fedavg import (
    PatientWeightedFedAvg,
    ReplyListener,
    RoundListener,
    scalar_metrics,
)
from fedfusion.errors import ConfigError, PrivacyError
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.protocol import SECAGG_RECORD, SECURE_AGGREGATION_SITES_KEY
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.wire_records import train_request
from fedfusion.study.config import SECURE_AGGREGATION_MODES

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


class SecurePatientWeightedFedAvg(PatientWeightedFedAvg):
    """`PatientWeightedFedAvg` that aggregates train rounds with SecAgg+ when the study asks for it."""

    def __init__(
        self,
        *,
        min_sites: int,
        secure_aggregation: str = "auto",
        threshold_fraction: float = 0.6,
        stage_timeout: float = STAGE_TIMEOUT_S,
        on_site_reply: ReplyListener | None = None,
        on_round_aggregated: RoundListener | None = None,
        server_optimizer: ServerOptimizer | None = None,
    ) -> None:
        super().__init__(min_sites=min_sites, on_site_reply=on_site_reply, on_round_aggregated=on_round_aggregated,
                         server_optimizer=server_optimizer)
        if secure_aggregation not in SECURE_AGGREGATION_MODES:
            raise ConfigError(f"secure-aggregation must be one of {SECURE_AGGREGATION_MODES}, "
                              f"got '{secure_aggregation}'")
        self.secure_aggregation = secure_aggregation
        self.threshold_fraction = threshold_fraction
        self._grid: Grid | None = None
        self._stage_timeout = stage_timeout
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
        secure = self.secure_aggregation == "on" or (
            self.secure_aggregation == "auto" and len(messages) >= AUTO_MIN_SITES)
        if not secure or not messages:
            return messages
        if len(messages) < 2:
            logger.warning("round %s: secure aggregation needs at least 2 sites, %s sampled; round skipped",
                server_round, len(messages))
            return []
        secagg = SecAggConfig(num_sites=len(messages),
                              threshold=secagg_threshold(len(messages), self.threshold_fraction))
        node_of_site = {site: m.metadata.dst_node_id for site, m in enumerate(messages, start=1)}
        self._round = (secagg, node_of_site, arrays)
        return [
            Message(RecordDict({**m.content, SECAGG_RECORD: train_request(secagg, site)}),
                    dst_node_id=m.metadata.dst_node_id, message_type=m.metadata.message_type)
            for site, m in enumerate(messages, start=1)
        ]

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
        try:
            average = secure_round(self._grid, server_round, secagg, node_of_site, replies, self._stage_timeout)
        except PrivacyError as exc:
            self._not_aggregated(server_round, f"secure aggregation failed safely ({exc})")
            return None, None
        arrays = self._apply_server_optimizer(global_arrays, average.arrays)  # the average IS the mean update
        nodes = {node_of_site[site] for site in average.sites}
        included = [m.content for m in replies if not m.has_error() and m.metadata.src_node_id in nodes]
        metrics = self.train_metrics_aggr_fn(included, self.weighted_by_key)
        metrics[SECURE_AGGREGATION_SITES_KEY] = len(average.sites)
        if self._on_round_aggregated:
            self._on_round_aggregated(server_round, "train", scalar_metrics(metrics))
        return arrays, metrics

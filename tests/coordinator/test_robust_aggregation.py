"""Robust aggregation of plain rounds on the real strategy: median, trimmed mean and (multi-)Krum resist one site
sending +1e6 updates that pass validation (the mean does not); norm bounding bounds a site's pull; each rule gives
what Flower 1.41's own strategy (FedMedian, FedTrimmedAvg, Krum, MultiKrum) gives on the same replies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from flwr.supercore.task_identity import TaskIdentity

from fedfusion.coordinator.reply_validation import ReplyLimits
from fedfusion.coordinator.robust_aggregation import RobustAggregation
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg
from fedfusion.errors import ConfigError
from fedfusion.simulation.in_process_grid import InProcessGrid
from fedfusion.study.config import StudyConfig

RNG = np.random.default_rng(12)
GLOBAL = {"w": RNG.normal(size=(4, 5)).astype(np.float32), "b": RNG.normal(size=5).astype(np.float32)}
HONEST_UPDATES = [{k: RNG.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in GLOBAL.items()}
                  for _ in range(4)]
PATIENTS = [30, 10, 20, 40, 25]
ATTACK = 1e6
LIMITS = ReplyLimits(max_patients=1000, max_update_norm=1e12)
"""A validation bound the attacker stays under: what is left to stop it is the aggregation rule."""


@pytest.fixture(autouse=True)
def _serverapp_identity() -> Iterator[None]:
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class Nodes(InProcessGrid):
    def get_node_ids(self) -> list[int]:
        return list(range(5, 10))

    def push_messages(self, messages: Any) -> list[str]:
        return []


def replies(attack: float | None = ATTACK) -> list[Message]:
    """Four honest sites and, last, one that adds ``attack`` to every value (None: no fifth site)."""
    updates = [*HONEST_UPDATES, *([{k: np.full_like(v, attack) for k, v in GLOBAL.items()}] if attack else [])]
    return [Message(RecordDict({"arrays": ArrayRecord({k: Array(GLOBAL[k] + u[k]) for k in GLOBAL}),
                                "metrics": MetricRecord({"num-examples": PATIENTS[i]}),
                                "site": ConfigRecord({"name": f"site-{i}"})}),
                    dst_node_id=0, message_type=MessageType.TRAIN)
            for i, u in enumerate(updates)]


def aggregate(rule: str, *, clip: float = 0.0, trim: float = 0.2, byzantine: int = 1,
              attack: float | None = ATTACK) -> dict[str, np.ndarray]:
    strategy = PatientWeightedFedAvg(min_sites=3, server_optimizer=ServerOptimizer(), reply_limits=LIMITS,
                                     aggregation=RobustAggregation(rule, trim, byzantine, clip))
    list(strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), ConfigRecord(), Nodes()))
    arrays, _ = strategy.aggregate_train(1, replies(attack))
    assert arrays is not None
    return {k: v.numpy() for k, v in arrays.items()}


def largest_move(arrays: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(arrays[k].astype(np.float64) - GLOBAL[k]))) for k in GLOBAL)


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "multi-krum"])
def test_robust_rules_resist_one_site_sending_huge_updates(rule: str) -> None:
    honest_extent = max(float(np.max(np.abs(u[k]))) for u in HONEST_UPDATES for k in GLOBAL)
    assert largest_move(aggregate(rule)) <= honest_extent
    assert largest_move(aggregate("mean")) > ATTACK / 10  # the plain mean is dragged away: the attack is real


def test_krum_picks_an_honest_update_and_multi_krum_averages_the_honest_sites() -> None:
    krum = aggregate("krum")
    assert any(all(np.allclose(krum[k], GLOBAL[k] + u[k], atol=1e-6) for k in GLOBAL) for u in HONEST_UPDATES)
    honest_mean = aggregate("mean", attack=None)
    multi = aggregate("multi-krum")
    for k in GLOBAL:
        np.testing.assert_allclose(multi[k], honest_mean[k], atol=1e-6)


def test_norm_bounding_limits_one_sites_pull_to_its_weight_share_of_the_bound() -> None:
    clip = 0.5
    clipped = aggregate("mean", clip=clip)
    share = PATIENTS[-1] / sum(PATIENTS)
    honest = sum(PATIENTS[i] * np.concatenate([u[k].ravel() for k in GLOBAL]).astype(np.float64)
                 for i, u in enumerate(HONEST_UPDATES)) / sum(PATIENTS)
    moved = np.concatenate([(clipped[k].astype(np.float64) - GLOBAL[k]).ravel() for k in GLOBAL])
    assert np.linalg.norm(moved - honest) <= share * clip + 1e-5


FLOWER = {
    "median": lambda: FedMedian(min_train_nodes=3, min_available_nodes=3),
    "trimmed-mean": lambda: FedTrimmedAvg(min_train_nodes=3, min_available_nodes=3, beta=0.2),
    "krum": lambda: Krum(min_train_nodes=3, min_available_nodes=3, num_malicious_nodes=1),
    "multi-krum": lambda: MultiKrum(min_train_nodes=3, min_available_nodes=3, num_malicious_nodes=1,
                                    num_nodes_to_select=4),
    "mean": lambda: FedAvg(min_train_nodes=3, min_available_nodes=3),
}


@pytest.mark.parametrize("rule", sorted(FLOWER))
def test_each_rule_matches_flowers_strategy_on_the_same_replies(rule: str) -> None:
    """Contract: Flower aggregates weights, fedfusion updates; with FedAvg at rate 1 on the server they agree (an
    outlier of +3 per value, so that every rule has something to leave out and float32 stays exact enough)."""
    flower: FedAvg = FLOWER[rule]()
    theirs, _ = flower.aggregate_train(1, replies(3.0))
    assert theirs is not None
    ours = aggregate(rule, attack=3.0)
    for k in GLOBAL:
        np.testing.assert_allclose(ours[k], theirs[k].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("changes, words", [
    ({"aggregation": "median", "min_sites": 3}, "secure-aggregation' = off"),
    ({"clip_update_norm": 1.0}, "secure-aggregation' = off"),
    ({"aggregation": "krum", "secure_aggregation": "on", "min_sites": 5}, "only the sum"),
    ({"aggregation": "median", "dp_mode": "distributed", "min_sites": 3}, "dp-mode"),
    ({"aggregation": "krum", "secure_aggregation": "off", "min_sites": 4}, "min-sites' >= 5"),
    ({"aggregation": "trimmed-mean", "secure_aggregation": "off", "min_sites": 4}, "min-sites' >= 5"),
    ({"aggregation": "median", "secure_aggregation": "off", "min_sites": 2}, "min-sites' >= 3"),
    ({"aggregation": "average"}, "'aggregation' must be one of"),
    ({"trim_fraction": 0.5}, "trim-fraction"),
    ({"clip_update_norm": 2000.0, "secure_aggregation": "off"}, "clip-update-norm"),
    ({"max_site_patients": 0}, "max-site-patients"),
    ({"max_update_norm": float("nan")}, "max-update-norm"),
])
def test_study_refuses_robust_rules_where_the_coordinator_cannot_see_updates(changes: dict[str, Any],
                                                                             words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        StudyConfig(**changes)


def test_study_accepts_robust_rules_on_plain_rounds() -> None:
    study = StudyConfig.from_run_config({"aggregation": "multi-krum", "byzantine-sites": 1, "min-sites": 5,
                                         "secure-aggregation": "off", "clip-update-norm": 2.0})
    assert RobustAggregation.of(study) == RobustAggregation("multi-krum", 0.2, 1, 2.0)

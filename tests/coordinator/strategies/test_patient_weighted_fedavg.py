"""PatientWeightedFedAvg on real Flower messages: weights by patients, max epsilon, pooled C-index."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg, SiteReply


@pytest.fixture(autouse=True)
def _serverapp_identity():
    """Messages are created inside a ServerApp task; give this process the identity Flower would."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _reply(site: str, arrays: dict[str, np.ndarray] | None, metrics: dict[str, float]) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": site})})
    if arrays is not None:
        content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


def test_train_aggregation_weights_by_patients_and_takes_max_epsilon() -> None:
    seen: list[SiteReply] = []
    strategy = PatientWeightedFedAvg(min_sites=2, on_site_reply=seen.append)
    a = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    b = {"w": np.array([4.0, 8.0], dtype=np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [
        _reply("site-a", a, {"num-examples": 30, "epsilon": 1.5, "train-loss": 1.0}),
        _reply("site-b", b, {"num-examples": 10, "epsilon": 2.5, "train-loss": 3.0}),
    ])
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), (30 * a["w"] + 10 * b["w"]) / 40, rtol=1e-6)
    assert metrics["epsilon"] == 2.5
    assert metrics["train-loss"] == pytest.approx(1.5)
    assert metrics["patients"] == 40
    assert [(r.site, r.metrics["num-examples"]) for r in seen] == [("site-a", 30.0), ("site-b", 10.0)]


def test_round_with_fewer_sites_than_the_minimum_is_not_aggregated() -> None:
    seen: list[SiteReply] = []
    rounds: list[tuple[int, str, dict[str, float]]] = []
    strategy = PatientWeightedFedAvg(min_sites=2, on_site_reply=seen.append,
                                     on_round_aggregated=lambda *row: rounds.append(row))
    only = _reply("site-a", {"w": np.array([1.0], dtype=np.float32)}, {"num-examples": 30, "epsilon": 1.0})
    assert strategy.aggregate_train(3, [only]) == (None, None)
    assert [r.site for r in seen] == ["site-a"]  # still reported to the operator
    assert rounds == [(3, "train", {"not-aggregated": 1.0})]  # and the results say the round changed nothing


def test_evaluate_aggregation_pools_c_index_from_pair_counts_and_skips_nan() -> None:
    strategy = PatientWeightedFedAvg(min_sites=2)
    metrics = strategy.aggregate_evaluate(1, [
        _reply("site-a", None, {"num-examples": 20, "c-index": 0.8, "concordant-pairs": 80.0,
                                "comparable-pairs": 100.0, "auc": math.nan}),
        _reply("site-b", None, {"num-examples": 10, "c-index": 0.5, "concordant-pairs": 10.0,
                                "comparable-pairs": 20.0, "auc": 0.9}),
    ])
    assert metrics is not None
    assert metrics["pooled-c-index"] == pytest.approx(90 / 120)
    assert metrics["c-index"] == pytest.approx((20 * 0.8 + 10 * 0.5) / 30)
    assert metrics["auc"] == pytest.approx(0.9)  # site-a's undefined AUC does not poison the mean

"""PatientWeightedFedAvg on real Flower messages: weights by patients, max epsilon, pooled C-index."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg, SiteReply
from fedfusion.simulation.in_process_grid import RUN_ID, SUPERLINK_NODE_ID, InProcessGrid, set_message_id


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


class TwoNodes(InProcessGrid):
    """Two connected nodes that never answer: enough for ``configure_train``."""

    def get_node_ids(self) -> list[int]:
        return [5, 6]

    def push_messages(self, messages):
        return []


def _configured(strategy: PatientWeightedFedAvg, global_arrays: dict[str, np.ndarray]) -> PatientWeightedFedAvg:
    """The strategy after configuring a round from ``global_arrays`` (what its mean update is taken against)."""
    arrays = ArrayRecord({k: Array(v) for k, v in global_arrays.items()})
    assert len(list(strategy.configure_train(1, arrays, ConfigRecord(), TwoNodes()))) == 2
    return strategy


def test_train_aggregation_weights_by_patients_and_takes_max_epsilon() -> None:
    seen: list[SiteReply] = []
    strategy = _configured(PatientWeightedFedAvg(min_sites=2, on_site_reply=seen.append),
                           {"w": np.array([0.5, 0.5], dtype=np.float32)})
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


def test_server_optimizer_moves_from_the_configured_global_model_by_the_mean_update() -> None:
    """FedAvgM at rate 0.5: the first step moves half way from the global model to the aggregate, the second adds
    0.9 of the first step's move (momentum); a round that is not aggregated does not step the optimizer."""
    optimizer = ServerOptimizer("fedavgm", learning_rate=0.5, momentum=0.9)
    start = {"w": np.array([1.0, -1.0], dtype=np.float32), "n": np.array([2], dtype=np.int64)}
    strategy = _configured(PatientWeightedFedAvg(min_sites=2, server_optimizer=optimizer), start)
    replies = [_reply("site-a", {"w": np.array([3.0, -1.0], dtype=np.float32), "n": np.array([4])},
                      {"num-examples": 10}),
               _reply("site-b", {"w": np.array([3.0, 1.0], dtype=np.float32), "n": np.array([4])},
                      {"num-examples": 30})]
    first, _ = strategy.aggregate_train(1, replies)
    assert first is not None
    mean_update = np.array([2.0, 1.5])
    np.testing.assert_allclose(first["w"].numpy(), start["w"] + 0.5 * mean_update, rtol=1e-6)
    assert first["n"].numpy().tolist() == [4]  # not floating point: the aggregate as is
    assert strategy.aggregate_train(2, replies[:1]) == (None, None) and optimizer.step_count == 1
    _configured(strategy, {k: v.numpy() for k, v in first.items()})
    replies_2 = [_reply(m.content.config_records["site"]["name"],
                        {k: first[k].numpy() + (replies[i].content["arrays"][k].numpy() - start[k])
                         for k in start}, {"num-examples": 10 if i == 0 else 30})
                 for i, m in enumerate(replies)]
    second, _ = strategy.aggregate_train(3, replies_2)
    assert second is not None and optimizer.step_count == 2
    np.testing.assert_allclose(second["w"].numpy(), first["w"].numpy() + 0.5 * (0.9 + 1) * mean_update, rtol=1e-6)


def test_round_with_fewer_sites_than_the_minimum_is_not_aggregated() -> None:
    seen: list[SiteReply] = []
    rounds: list[tuple[int, str, dict[str, float]]] = []
    strategy = _configured(PatientWeightedFedAvg(min_sites=2, on_site_reply=seen.append,
                                                 on_round_aggregated=lambda *row: rounds.append(row)),
                           {"w": np.array([0.0], dtype=np.float32)})
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


class OneSiteThenOffline(InProcessGrid):
    """Nodes 5 and 6: round 1, node 5 answers as site-a and node 6 not at all; from round 2 on, the SuperLink answers
    for both (Flower's error reply for an offline node: sent by the SuperLink, node id 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.online = True

    def get_node_ids(self) -> list[int]:
        return [5, 6]

    def push_messages(self, messages):
        ids = []
        for number, message in enumerate(messages):
            set_message_id(message, f"m{self.online}{number}")
            ids.append(message.metadata.message_id)
            if self.online and message.metadata.dst_node_id == 5:
                reply = Message(RecordDict({"metrics": MetricRecord({"num-examples": 3}),
                                            "site": ConfigRecord({"name": "site-a"})}), reply_to=message)
            elif not self.online:
                reply = Message(metadata=Metadata(run_id=RUN_ID, message_id="", src_node_id=SUPERLINK_NODE_ID,
                                                  dst_node_id=SUPERLINK_NODE_ID,
                                                  reply_to_message_id=message.metadata.message_id,
                                                  group_id=message.metadata.group_id, created_at=0.0, ttl=60.0,
                                                  message_type=message.metadata.message_type),
                                error=Error(code=1, reason="node unavailable"))
            else:
                continue
            self._replies[message.metadata.message_id] = reply
        return ids


def test_sites_that_failed_are_named_by_their_site_name_or_full_node_id_never_by_the_superlinks() -> None:
    seen: list[SiteReply] = []
    strategy = PatientWeightedFedAvg(min_sites=1, on_site_reply=seen.append)
    grid = OneSiteThenOffline()
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    for server_round in (1, 2):
        grid.online = server_round == 1
        messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
        strategy.aggregate_evaluate(server_round, grid.send_and_receive(messages))
    assert sorted((r.server_round, r.site, "error" in r.metrics) for r in seen) == [
        (1, "site-a", False), (2, "node 6", True), (2, "site-a", True)]

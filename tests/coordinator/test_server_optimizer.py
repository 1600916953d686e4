"""ServerOptimizer: the same global arrays as Flower 1.41's own strategies for the same aggregates, its own step
count, non-float arrays taken as aggregated, state that round-trips, and validated study keys."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.supercore.task_identity import TaskIdentity

from fedfusion.coordinator.server_optimizer import NDArray, ServerOptimizer
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig

ROUNDS = 6
ETA, BETA1, BETA2, TAU = 0.05, 0.9, 0.99, 1e-3


@pytest.fixture(autouse=True)
def _serverapp_identity():
    """Messages are created inside a ServerApp task; give this process the identity Flower would."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _reply(arrays: dict[str, NDArray], patients: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": patients}), "config": ConfigRecord()})
    return Message(content, dst_node_id=0, message_type=MessageType.TRAIN)


def _site_rounds(seed: int = 3) -> list[list[tuple[dict[str, NDArray], int]]]:
    """Per round, two sites' changes (a matrix and a bias vector) and patient counts; signs flip between rounds."""
    rng = np.random.default_rng(seed)
    return [[({"w": rng.normal(scale=0.1, size=(3, 4)).astype(np.float32),
               "b": rng.normal(scale=0.1, size=4).astype(np.float32)}, int(rng.integers(5, 40)))
             for _ in range(2)] for _ in range(ROUNDS)]


def _flower(rule: str) -> FedAvg:
    """Flower's strategy for ``rule`` with the same hyperparameters (FedAvg's own eta is 1)."""
    kwargs = {"min_train_nodes": 1, "min_available_nodes": 1}
    if rule == "fedavgm":
        return FedAvgM(server_learning_rate=ETA, server_momentum=BETA1, **kwargs)
    if rule == "fedadam":
        return FedAdam(eta=ETA, beta_1=BETA1, beta_2=BETA2, tau=TAU, **kwargs)
    if rule == "fedyogi":
        return FedYogi(eta=ETA, beta_1=BETA1, beta_2=BETA2, tau=TAU, **kwargs)
    if rule == "fedadagrad":
        return FedAdagrad(eta=ETA, tau=TAU, **kwargs)
    return FedAvg(**kwargs)


@pytest.mark.parametrize("rule", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_same_global_arrays_as_flowers_strategy(rule: str) -> None:
    """Flower's aggregate_train driven directly: its ``current_arrays`` set as its configure_train would set them
    (fedopt.py, fedavgm.py), the sites' replies aggregated by its FedAvg step, then its server update."""
    ours = ServerOptimizer(rule, learning_rate=ETA if rule != "fedavg" else 1.0, momentum=BETA1, beta2=BETA2, tau=TAU)
    flower = _flower(rule)
    plain = FedAvg(min_train_nodes=1, min_available_nodes=1)
    rng = np.random.default_rng(0)
    current = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4, dtype=np.float32)}
    largest_move = 0.0
    for server_round, sites in enumerate(_site_rounds(), start=1):
        replies = [_reply({k: current[k] + change[k] for k in current}, n) for change, n in sites]
        if isinstance(flower, FedOpt):
            flower.current_arrays = {k: v.copy() for k, v in current.items()}
        elif isinstance(flower, FedAvgM):
            flower.current_arrays = ArrayRecord({k: Array(v.copy()) for k, v in current.items()})
        expected, _ = flower.aggregate_train(server_round, replies)
        aggregate, _ = plain.aggregate_train(server_round, replies)
        assert expected is not None and aggregate is not None
        mean_update = {k: aggregate[k].numpy() - current[k] for k in current}
        updated = ours.step(current, mean_update)
        for name in current:
            assert updated[name].dtype == np.float32
            np.testing.assert_allclose(updated[name], expected[name].numpy(), rtol=2e-6, atol=2e-7,
                                       err_msg=f"{rule}, round {server_round}, {name}")
        largest_move = max(largest_move, *(float(np.abs(updated[k] - current[k]).max()) for k in current))
        current = updated
    assert ours.step_count == ROUNDS and largest_move > 1e-3  # the rule did move the model


def test_fedavg_with_unit_rate_is_the_aggregate_and_non_float_arrays_take_the_aggregate() -> None:
    optimizer = ServerOptimizer("fedadam", learning_rate=0.1)
    current = {"w": np.ones((2, 2), dtype=np.float32), "count": np.array([7], dtype=np.int64)}
    updated = optimizer.step(current, {"w": np.full((2, 2), 0.5), "count": np.array([3])})
    assert updated["count"].dtype == np.int64 and updated["count"].tolist() == [10]
    assert updated["w"].dtype == np.float32 and not np.allclose(updated["w"], 1.5)
    fedavg = ServerOptimizer("fedavg").step(current, {"w": np.full((2, 2), 0.5), "count": np.array([3])})
    np.testing.assert_array_equal(fedavg["w"], np.full((2, 2), 1.5, dtype=np.float32))


def test_state_round_trip_continues_exactly_and_a_fresh_optimizer_does_not() -> None:
    rounds = _site_rounds(seed=9)
    current = {"w": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}

    def mean(sites: list[tuple[dict[str, NDArray], int]]) -> dict[str, NDArray]:
        total = sum(n for _, n in sites)
        return {k: sum(n * change[k] for change, n in sites) / total for k in current}

    straight = ServerOptimizer("fedyogi", learning_rate=ETA)
    first = ServerOptimizer("fedyogi", learning_rate=ETA)
    weights = current
    for sites in rounds[:3]:
        weights = straight.step(weights, mean(sites))
        current = first.step(current, mean(sites))
    resumed, fresh = ServerOptimizer("fedyogi", learning_rate=ETA), ServerOptimizer("fedyogi", learning_rate=ETA)
    resumed.load_state_dict(first.state_dict())
    assert resumed.step_count == 3
    continued, restarted = current, current
    for sites in rounds[3:]:
        weights = straight.step(weights, mean(sites))
        continued = resumed.step(continued, mean(sites))
        restarted = fresh.step(restarted, mean(sites))
    for name in weights:
        np.testing.assert_array_equal(continued[name], weights[name])
    assert not np.allclose(restarted["w"], weights["w"], atol=1e-4)
    with pytest.raises(ConfigError, match="state is of 'fedyogi', the study uses 'fedadam'"):
        ServerOptimizer("fedadam").load_state_dict(first.state_dict())


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"server_optimizer": "sgd"}, "'server-optimizer' must be one of"),
    ({"server_learning_rate": 0.0}, "'server-learning-rate' must be > 0"),
    ({"server_momentum": 1.0}, r"'server-momentum' must be in \[0, 1\)"),
    ({"server_beta2": -0.1}, r"'server-beta2' must be in \[0, 1\)"),
    ({"server_tau": 0.0}, "'server-tau' must be > 0"),
    ({"proximal_mu": -1.0}, "'proximal-mu' must be a finite number >= 0"),
    ({"l2_penalty": float("inf")}, "'l2-penalty' must be a finite number >= 0"),
    ({"l1_penalty": float("nan")}, "'l1-penalty' must be a finite number >= 0"),
])
def test_invalid_optimization_keys_name_the_key(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        StudyConfig(**changes)  # type: ignore[arg-type]


def test_study_keys_choose_the_optimizer() -> None:
    study = StudyConfig.from_run_config({"server-optimizer": "fedadagrad", "server-learning-rate": 0.3,
                                         "server-tau": 0.01})
    optimizer = ServerOptimizer.of(study)
    assert (optimizer.rule, optimizer.learning_rate, optimizer.tau) == ("fedadagrad", 0.3, 0.01)
    assert ServerOptimizer.of(StudyConfig()).rule == "fedavg"

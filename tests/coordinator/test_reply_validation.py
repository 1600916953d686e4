"""A hostile site's replies on the real strategy: each poisoned reply is rejected and named, the round aggregates the
honest replies alone (exactly), the global model stays finite; with too few valid replies nothing changes.

Replies are real Flower Messages rebuilt from their wire bytes (as the coordinator receives them), and the site rows
go to the real ``RunRecorder`` (whose console line once crashed on a NaN patient count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfusion.coordinator.reply_validation import ReplyLimits
from fedfusion.coordinator.run_recorder import RunRecorder
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.simulation.in_process_grid import InProcessGrid, wire
from fedfusion.study.config import StudyConfig

GLOBAL = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, dtype=np.float32)}
HONEST = {"site-a": (30, 0.01), "site-b": (10, -0.02), "site-c": (20, 0.03)}
"""Honest site -> (patients, the constant its update adds to every value)."""
POISONER = "mallory"


@pytest.fixture(autouse=True)
def _serverapp_identity() -> Iterator[None]:
    """Messages are created inside a ServerApp task; give this process the identity Flower would."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture
def flower_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The coordinator's warnings (on Flower's ``flwr`` logger)."""
    FLOWER_LOGGER.addHandler(caplog.handler)
    yield caplog
    FLOWER_LOGGER.removeHandler(caplog.handler)


def reply(site: str, arrays: dict[str, Any] | None, metrics: dict[str, Any],
          extra: dict[str, Any] | None = None) -> Message:
    """A site's reply as the coordinator rebuilds it from the wire."""
    content = RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": site}), **(extra or {})})
    if arrays is not None:
        content["arrays"] = ArrayRecord({k: v if isinstance(v, Array) else Array(v) for k, v in arrays.items()})
    received, _ = wire(Message(content, dst_node_id=0, message_type=MessageType.TRAIN))
    return received


def honest_replies() -> list[Message]:
    return [reply(site, {k: v + shift for k, v in GLOBAL.items()}, {"num-examples": patients, "epsilon": 1.0})
            for site, (patients, shift) in HONEST.items()]


def trained(shift: float = 0.01) -> dict[str, np.ndarray]:
    return {k: v + np.float32(shift) for k, v in GLOBAL.items()}


def with_value(name: str, value: float) -> dict[str, np.ndarray]:
    arrays = trained()
    arrays[name] = arrays[name].copy()
    arrays[name].flat[1] = value
    return arrays


COUNT = {"num-examples": 25, "epsilon": 1.0}
POISONS: dict[str, tuple[Callable[[], Message], str]] = {
    "nan": (lambda: reply(POISONER, with_value("w", math.nan), COUNT), "non-finite"),
    "inf": (lambda: reply(POISONER, with_value("b", math.inf), COUNT), "non-finite"),
    "-inf": (lambda: reply(POISONER, with_value("w", -math.inf), COUNT), "non-finite"),
    "1e30": (lambda: reply(POISONER, {k: np.full_like(v, 1e30) for k, v in GLOBAL.items()}, COUNT), "L2 norm"),
    "huge-norm": (lambda: reply(POISONER, {k: v + np.float32(300) for k, v in GLOBAL.items()}, COUNT),
                  "max-update-norm"),
    "shape": (lambda: reply(POISONER, {"w": np.zeros((4, 3), np.float32), "b": trained()["b"]}, COUNT), "(4, 3)"),
    "float16": (lambda: reply(POISONER, {"w": trained()["w"].astype(np.float16), "b": trained()["b"]}, COUNT),
                "float16"),
    "int64": (lambda: reply(POISONER, {"w": np.ones((3, 4), np.int64), "b": trained()["b"]}, COUNT), "int64"),
    "missing-array": (lambda: reply(POISONER, {"w": trained()["w"]}, COUNT), "missing: ['b']"),
    "extra-array": (lambda: reply(POISONER, {**trained(), "backdoor": np.ones(2, np.float32)}, COUNT),
                    "extra: ['backdoor']"),
    "no-arrays": (lambda: reply(POISONER, None, COUNT), "array records []"),
    "undecodable": (lambda: reply(POISONER, {"w": Array("float32", (3, 4), "numpy.ndarray", b"\x93NUMPY garbage"),
                                             "b": trained()["b"]}, COUNT), "does not decode"),
    "count-zero": (lambda: reply(POISONER, trained(), {"num-examples": 0}), "patient count"),
    "count-negative": (lambda: reply(POISONER, trained(), {"num-examples": -40}), "patient count"),
    "count-nan": (lambda: reply(POISONER, trained(), {"num-examples": math.nan}), "patient count"),
    "count-inf": (lambda: reply(POISONER, trained(), {"num-examples": math.inf}), "patient count"),
    "count-huge": (lambda: reply(POISONER, trained(), {"num-examples": 10**12}), "max-site-patients"),
    "count-fraction": (lambda: reply(POISONER, trained(), {"num-examples": 2.5}), "patient count"),
    "count-list": (lambda: reply(POISONER, trained(), {"num-examples": [5, 5]}), "patient count"),
    "count-missing": (lambda: reply(POISONER, trained(), {"epsilon": 1.0}), "no patient count"),
    "epsilon-nan": (lambda: reply(POISONER, trained(), {"num-examples": 25, "epsilon": math.nan}), "'epsilon'"),
    "second-metrics": (lambda: reply(POISONER, trained(), COUNT, {"more": MetricRecord({"num-examples": 9})}),
                       "metric records"),
}


class Nodes(InProcessGrid):
    """Connected nodes that never answer: enough for ``configure_train``."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def get_node_ids(self) -> list[int]:
        return list(range(5, 5 + self.count))

    def push_messages(self, messages: Any) -> list[str]:
        return []


def strategy(min_sites: int, recorder: RunRecorder | None = None, **limits: Any) -> PatientWeightedFedAvg:
    """The real strategy after configuring a round from ``GLOBAL``, reporting to ``recorder``."""
    study = StudyConfig(min_sites=min_sites, **limits)
    built = PatientWeightedFedAvg(min_sites=min_sites, server_optimizer=ServerOptimizer(),
                                  reply_limits=ReplyLimits.of(study),
                                  on_site_reply=recorder.site_reply if recorder else None,
                                  on_round_aggregated=recorder.round_aggregated if recorder else None)
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    assert len(list(built.configure_train(1, arrays, ConfigRecord(), Nodes(min_sites + 1)))) == min_sites + 1
    return built


def honest_only_aggregate() -> dict[str, np.ndarray]:
    arrays, _ = strategy(3).aggregate_train(1, honest_replies())
    assert arrays is not None
    return {k: v.numpy() for k, v in arrays.items()}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_reply_is_rejected_named_and_the_round_aggregates_the_honest_ones(
        poison: str, flower_log: pytest.LogCaptureFixture) -> None:
    make, reason = POISONS[poison]
    lines: list[str] = []
    recorder = RunRecorder(StudyConfig(), emit=lines.append)
    arrays, metrics = strategy(3, recorder).aggregate_train(1, [*honest_replies(), make()])
    assert arrays is not None and metrics is not None
    reference = honest_only_aggregate()
    for name, values in arrays.items():
        assert np.all(np.isfinite(values.numpy()))
        np.testing.assert_array_equal(values.numpy(), reference[name])
    assert metrics["rejected-replies"] == 1 and metrics["patients"] == 60
    rejected = [row for row in recorder.site_rows if row.get("rejected")]
    assert [row["site"] for row in rejected] == [POISONER]
    warning = next(r.getMessage() for r in flower_log.records if "rejected" in r.getMessage())
    assert POISONER in warning and reason in warning, warning
    assert any(f"{POISONER}" in line and "REJECTED" in line for line in lines)


def test_honest_aggregate_is_the_patient_weighted_mean_of_the_honest_updates() -> None:
    total = sum(p for p, _ in HONEST.values())
    shift = sum(p * s for p, s in HONEST.values()) / total
    for name, values in honest_only_aggregate().items():
        np.testing.assert_allclose(values, GLOBAL[name] + shift, rtol=1e-6, atol=1e-7)


def test_too_few_valid_replies_leave_the_model_unchanged_and_say_so(flower_log: pytest.LogCaptureFixture) -> None:
    recorder = RunRecorder(StudyConfig(), emit=lambda _: None)
    built = strategy(3, recorder)
    poisoned = [POISONS["nan"][0](), POISONS["count-huge"][0]()]
    assert built.aggregate_train(1, [*honest_replies()[:2], *poisoned]) == (None, None)
    assert built.server_optimizer.step_count == 0
    assert recorder.round_rows == [{"round": 1, "phase": "train", "not-aggregated": 1.0, "rejected-replies": 2.0}]
    assert recorder.training_outcome().aggregated_rounds == ()
    assert any("2 of the study's minimum 3" in r.getMessage() and "2 more rejected" in r.getMessage()
               for r in flower_log.records)


def test_the_update_norm_bound_is_the_studys() -> None:
    near = reply(POISONER, {k: v + np.float32(1.0) for k, v in GLOBAL.items()}, COUNT)  # L2 norm 4
    _, metrics = strategy(3, max_update_norm=5.0).aggregate_train(1, [*honest_replies(), near])
    assert metrics is not None and "rejected-replies" not in metrics and metrics["patients"] == 85
    near = reply(POISONER, {k: v + np.float32(1.0) for k, v in GLOBAL.items()}, COUNT)
    _, metrics = strategy(3, max_update_norm=3.9).aggregate_train(1, [*honest_replies(), near])
    assert metrics is not None and metrics["rejected-replies"] == 1


EVALUATE_POISONS = {
    "count-nan": {"num-examples": math.nan, "c-index": 0.9},
    "count-negative": {"num-examples": -3, "c-index": 0.9},
    "pairs-list": {"num-examples": 5, "concordant-pairs": [1.0, 2.0], "comparable-pairs": 4.0},
    "more-concordant": {"num-examples": 5, "concordant-pairs": 9.0, "comparable-pairs": 4.0},
    "pairs-inf": {"num-examples": 5, "concordant-pairs": math.inf, "comparable-pairs": math.inf},
    "one-pair-count": {"num-examples": 5, "concordant-pairs": 1.0},
}


@pytest.mark.parametrize("poison", sorted(EVALUATE_POISONS))
def test_malformed_evaluate_metrics_are_rejected_without_a_crash(poison: str) -> None:
    lines: list[str] = []
    recorder = RunRecorder(StudyConfig(), emit=lines.append)
    built = PatientWeightedFedAvg(min_sites=2, on_site_reply=recorder.site_reply,
                                  on_round_aggregated=recorder.round_aggregated)
    honest = [reply("site-a", None, {"num-examples": 20, "c-index": 0.8, "concordant-pairs": 80.0,
                                     "comparable-pairs": 100.0}),
              reply("site-b", None, {"num-examples": 10, "c-index": 0.5, "concordant-pairs": 10.0,
                                     "comparable-pairs": 20.0, "auc": 0.7})]  # keys differ: Flower's check would exit
    metrics = built.aggregate_evaluate(1, [*honest, reply(POISONER, None, EVALUATE_POISONS[poison])])
    assert metrics is not None
    assert metrics["pooled-c-index"] == pytest.approx(90 / 120)
    assert metrics["patients"] == 30 and metrics["rejected-replies"] == 1
    assert [row["site"] for row in recorder.site_rows if row.get("rejected")] == [POISONER]


def test_a_server_step_that_would_overflow_is_undone(flower_log: pytest.LogCaptureFixture) -> None:
    """With the norm bound off (inf), finite float32 updates near the float32 limit and a server learning rate of 2
    would overflow the model: the step is undone, the optimizer keeps its state and the model stays finite."""
    optimizer = ServerOptimizer("fedavg", learning_rate=2.0)
    built = PatientWeightedFedAvg(min_sites=2, server_optimizer=optimizer,
                                  reply_limits=ReplyLimits(max_patients=100, max_update_norm=math.inf))
    start = {"w": np.full(3, 2e38, dtype=np.float32)}
    list(built.configure_train(1, ArrayRecord({"w": Array(start["w"])}), ConfigRecord(), Nodes(2)))
    near_limit = [reply(site, {"w": np.full(3, 3.4e38, dtype=np.float32)}, {"num-examples": 10})
                  for site in ("site-a", "site-b")]
    arrays, _ = built.aggregate_train(1, near_limit)
    assert arrays is not None
    np.testing.assert_array_equal(arrays["w"].numpy(), start["w"])
    assert optimizer.step_count == 0
    assert any("non-finite" in r.getMessage() for r in flower_log.records)

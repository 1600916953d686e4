"""Run a strategy's rounds k+1..N with Flower's own round loop, calling back after each completed round.

Flower's ``Strategy.start`` always counts rounds from 1. ``ResumedRounds`` wraps the study's strategy and shifts
every round number it passes on by the rounds already completed, so Flower's loop runs ``N - k`` times while the
strategy, the results recorder and the sites (``server-round`` in each instruction) see rounds k+1..N. Inside it,
``FoldedEvaluation`` (``coordinator/folded_evaluation.py``) sends each round's evaluation in the next round's train
message. The callback runs after each round (Flower's ``evaluate_fn`` hook, which gets the round's global model),
when its training and the previous round's evaluation are recorded (the last round's own evaluation too): that is
where the coordinator checkpoints. Flower's own log lines count from 1 ("[ROUND 1/2]").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedfusion.coordinator.folded_evaluation import FoldedEvaluation
from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg

RoundCompleted = Callable[[int, ArrayRecord], None]
"""Called with the study's round number and the global model after that round."""


class ResumedRounds(Strategy):
    """``inner`` with every round number shifted by ``completed_rounds``."""

    def __init__(self, inner: Strategy, completed_rounds: int) -> None:
        self.inner = inner
        self.offset = completed_rounds

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The inner strategy's training instructions for the study's round."""
        return self.inner.configure_train(server_round + self.offset, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner strategy's aggregation of the study's round."""
        return self.inner.aggregate_train(server_round + self.offset, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The inner strategy's evaluation instructions for the study's round."""
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's evaluation aggregate of the study's round."""
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.inner.summary()


def run_rounds(strategy: PatientWeightedFedAvg, grid: Grid, arrays: ArrayRecord, *, completed_rounds: int,
               num_rounds: int, timeout: float, on_round_completed: RoundCompleted) -> Result:
    """Run rounds ``completed_rounds + 1 .. num_rounds`` of ``strategy`` from ``arrays``, each round's evaluation
    folded into the next round's train message."""

    def after_round(local_round: int, round_arrays: ArrayRecord) -> MetricRecord | None:
        if local_round > 0:  # Flower also calls it once before the first round
            on_round_completed(local_round + completed_rounds, round_arrays)
        return None

    folded = FoldedEvaluation(strategy, num_rounds, timeout)
    return ResumedRounds(folded, completed_rounds).start(
        grid=grid, initial_arrays=arrays, num_rounds=num_rounds - completed_rounds, timeout=timeout,
        evaluate_fn=after_round,
    )

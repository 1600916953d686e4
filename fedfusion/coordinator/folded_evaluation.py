"""Each round's evaluation folded into the next round's train message: one message less per site and round.

The evaluation of round r's global model needs the arrays that round r + 1's train message carries anyway.
``FoldedEvaluation`` wraps the study's strategy (inside ``ResumedRounds``, so it sees the study's round numbers):

- round r > 1's train instruction names ``evaluate-round`` = r - 1; each site first evaluates the arrays exactly as it
  answers an evaluate message (``site/client_app.py``), then trains, and sends the evaluation's metrics (or its
  error) beside its training answer;
- before round r's training is aggregated, the evaluation part is taken out of every reply and given to the
  strategy's ``aggregate_evaluate`` as round r - 1's evaluate replies (an ``evaluation-error`` record as the error
  reply it stands for): results rows, live lines and aggregates are those evaluate messages would give, in the same
  order (round r - 1's evaluation before round r's training);
- a site whose train reply is an error or carries no evaluation is asked with a plain evaluate message (its evaluation
  log answers with the metrics already sent if it had evaluated); a round that sent no train message (a secure round
  with too few sites) evaluates with the strategy's own evaluate messages, as before;
- the last round keeps its plain evaluate message; Flower's loop gets no evaluate message in the other rounds (it
  sends an empty list without waiting).

A study resumed at round k + 1 gets round k's evaluation with round k + 1's train replies, as an uninterrupted one
does: the checkpoint after round k holds the rows up to round k's training. A site that sends no reply at all to
round r + 1's train message (it dropped out) leaves no evaluation of round r either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedfusion.coordinator.strategies.patient_weighted_fedavg import PatientWeightedFedAvg
from fedfusion.protocol import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    ERROR_CODE_KEY,
    ERROR_REASON_KEY,
    EVALUATE_ROUND_KEY,
    EVALUATION_ERROR_RECORD,
    EVALUATION_RECORD,
    METRICS_RECORD,
    SERVER_ROUND_KEY,
    SITE_RECORD_KEY,
    UNREADABLE_REPLY_CODE,
)

MALFORMED_ERROR_REASON = f"its '{EVALUATION_ERROR_RECORD}' record is not an integer code and a text reason"
"""The reason of the error reply that stands for a malformed ``evaluation-error`` record."""


@dataclass(frozen=True)
class _TrainRound:
    """What a round's training was configured with: the grid, the global arrays, the train instructions."""

    grid: Grid
    arrays: ArrayRecord
    messages: list[Message]


class FoldedEvaluation(Strategy):
    """``inner`` with round r's evaluation sent in round r + 1's train message (see the module docstring)."""

    def __init__(self, inner: PatientWeightedFedAvg, num_rounds: int, timeout: float) -> None:
        """``num_rounds``: the study's last round (evaluated with its own message); ``timeout``: the longest wait
        for the evaluate messages a round still needs (the study's round timeout)."""
        self.inner = inner
        self.num_rounds = num_rounds
        self.timeout = timeout
        self._round: _TrainRound | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The inner strategy's train instructions; after round 1 they name the previous round as ``evaluate-round``
        (their arrays are its global model)."""
        if server_round > 1:
            config = ConfigRecord({**config, EVALUATE_ROUND_KEY: server_round - 1})
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._round = _TrainRound(grid, arrays, messages)
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The previous round's evaluation from the replies (aggregated first), then the inner strategy's
        aggregation of the training."""
        replies = list(replies)
        if server_round > 1:
            self._aggregate_evaluation(server_round - 1, replies)
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The inner strategy's evaluate messages in the last round; none before (the next train message asks)."""
        if server_round < self.num_rounds:
            return []
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's aggregate of the last round's evaluate replies; None before (there were none)."""
        if server_round < self.num_rounds:
            return None
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.inner.summary()

    def _aggregate_evaluation(self, evaluated_round: int, replies: list[Message]) -> None:
        """Take ``evaluated_round``'s evaluation out of the train ``replies`` (asking with evaluate messages where a
        reply brought none) and give it to the inner strategy's ``aggregate_evaluate``."""
        sent = self._round
        if sent is None:
            raise RuntimeError("configure_train must run before aggregate_train (the round's train instructions)")
        if not sent.messages:
            asked = self.inner.configure_evaluate(evaluated_round, sent.arrays, ConfigRecord(), sent.grid)
            self.inner.aggregate_evaluate(evaluated_round, sent.grid.send_and_receive(asked, timeout=self.timeout))
            return
        self.inner.learn_site_names(replies)  # an evaluation's error reply is named by its site's train reply
        instructions = {message.metadata.message_id: message for message in sent.messages}
        evaluations: list[Message] = []
        missing: list[Message] = []
        for reply in replies:
            instruction = instructions.get(reply.metadata.reply_to_message_id)
            evaluation = None if reply.has_error() else take_evaluation(reply)
            if instruction is None:
                continue
            if evaluation is None:
                missing.append(instruction)
            else:
                evaluations.append(_reply(evaluation, instruction))
        evaluations.extend(self._ask(evaluated_round, sent, missing))
        self.inner.aggregate_evaluate(evaluated_round, evaluations)

    def _ask(self, evaluated_round: int, sent: _TrainRound, instructions: list[Message]) -> list[Message]:
        """The replies to plain evaluate messages of ``evaluated_round`` to the sites of ``instructions``, each as a
        reply to its site's train instruction (so that the strategy names its site as for the train reply)."""
        if not instructions:
            return []
        asked = {
            instruction.metadata.dst_node_id: Message(
                RecordDict({ARRAYS_RECORD: sent.arrays,
                            CONFIG_RECORD: ConfigRecord({SERVER_ROUND_KEY: evaluated_round})}),
                dst_node_id=instruction.metadata.dst_node_id, message_type=MessageType.EVALUATE)
            for instruction in instructions}
        replies = list(sent.grid.send_and_receive(list(asked.values()), timeout=self.timeout))
        instruction_of = {asked[instruction.metadata.dst_node_id].metadata.message_id: instruction
                          for instruction in instructions}
        answered = []
        for reply in replies:
            instruction = instruction_of.get(reply.metadata.reply_to_message_id)
            if instruction is not None:
                answered.append(_reply(reply.error if reply.has_error() else reply.content, instruction))
        return answered


def take_evaluation(reply: Message) -> RecordDict | Error | None:
    """Remove the evaluation records from a train ``reply``'s content (so that it holds the training's answer only)
    and return them as an evaluate reply's content (with the reply's ``site`` record) or error; None when the reply
    holds no evaluation."""
    content = reply.content
    metrics = content.metric_records.get(EVALUATION_RECORD)
    error = content.config_records.get(EVALUATION_ERROR_RECORD)
    for name in (EVALUATION_RECORD, EVALUATION_ERROR_RECORD):
        content.pop(name, None)
    if metrics is not None:
        site = content.config_records.get(SITE_RECORD_KEY)
        return RecordDict({METRICS_RECORD: metrics, **({SITE_RECORD_KEY: site} if site is not None else {})})
    if error is None:
        return None
    code, reason = error.get(ERROR_CODE_KEY), error.get(ERROR_REASON_KEY)
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(reason, str):
        return Error(code=UNREADABLE_REPLY_CODE, reason=MALFORMED_ERROR_REASON)
    return Error(code=code, reason=reason)


def _reply(answer: RecordDict | Error, instruction: Message) -> Message:
    """A reply to ``instruction`` (from its site's node) holding ``answer`` (one call per overload of Message)."""
    if isinstance(answer, Error):
        return Message(answer, reply_to=instruction)
    return Message(answer, reply_to=instruction)

"""The site's Flower ClientApp: translates Flower messages to ``SiteRound`` calls and the answers back.

Every message goes through one layered wrapper, ``answer``, outermost first:

1. **resolve once**: the site's facts and privacy folder (node config); without a privacy folder nothing can be
   recorded, so nothing is sent but a fixed content-free error. A study (run config) the site cannot read is an
   error reply, recorded like any other;
2. **egress record** (``egress_gate.release``): every reply, error replies included, is recorded before it leaves;
3. **error replies**: a site never crashes on a bad request and never sends exception text (it could name a
   patient or a path). A refusal (``SiteRefusal``) sends its fixed public reason, naming the site and the rule;
   any other failure sends the site's name and the error's class. The details go to the site's log;
4. **the site's policy** (loaded once into the ``SiteSession``) and the handler: ``SiteRound.train`` (policy,
   replay, charge, train, store, settle: see ``site_round``), ``SiteRound.evaluate``, or a secure-aggregation
   stage (``secure_stages``), which the policy also guards.

In a secure-aggregation round the weights stay at the site and leave only masked, over the ``query.secagg``
stages.

A train message that names ``evaluate-round`` (every round's but the first) carries the previous round's global
model: the site first answers that round's evaluation with ``SiteRound.evaluate``, exactly as an evaluate message,
then trains. The reply holds the evaluation's metrics (``evaluation``) or, when it failed or was refused, its error's
code and public reason (``evaluation-error``) beside the training's answer: a failed evaluation never costs the
training, and a failed training is an error reply as before (the coordinator then asks the evaluation again with an
evaluate message, which the evaluation log answers with the metrics already sent). The reply passes the egress
record as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedfusion.array_packing import packing_mod
from fedfusion.errors import PrivacyError, ProtocolError, SiteRefusal
from fedfusion.privacy.distributed_noise import distributed_noise
from fedfusion.protocol import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    ERROR_CODE_KEY,
    ERROR_REASON_KEY,
    EVALUATE_ROUND_KEY,
    EVALUATION_ERROR_RECORD,
    EVALUATION_RECORD,
    METRICS_RECORD,
    QUERY_ACTION,
    SECAGG_RECORD,
    SERVER_ROUND_KEY,
    SITE_ERROR_CODE,
    SITE_NAME_KEY,
    SITE_RECORD_KEY,
    SITE_REFUSAL_CODE,
    WEIGHT_KEY,
)
from fedfusion.site import secure_stages
from fedfusion.site.egress_gate import release, withheld
from fedfusion.site.node_context import resolve_site_context
from fedfusion.site.site_privacy import SitePrivacy, load_site_policy, resolve_ledger_dir
from fedfusion.site.site_round import SERVER_ROUND_RULE, SiteRound, SiteSession, study_run_at_site

logger = logging.getLogger(__name__)

app = ClientApp(mods=[packing_mod])  # a deployed coordinator's content comes packed

Handler = Callable[[Message, Context, SiteSession], RecordDict]
"""A message's answer from the session it was resolved into (``context.state`` holds a secure round's state)."""


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this site's patients (DP-SGD when the study says so)."""
    return answer(msg, context, _train)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's held-out patients (aggregate metrics only)."""
    return answer(msg, context, _evaluate)


@app.query(QUERY_ACTION)
def secure_aggregation_stage(msg: Message, context: Context) -> Message:
    """Answer a secure-aggregation stage (share keys, masked input, unmask) of the round in progress."""
    return answer(msg, context, _secure_stage)


def answer(msg: Message, context: Context, handler: Handler) -> Message:
    """Resolve the message's session once, answer it with ``handler``, record the reply, then release it."""
    try:
        site = resolve_site_context(context.node_config)
        ledger_dir = resolve_ledger_dir(context.node_config, site)
    except Exception:  # nowhere to record a reply: nothing may leave
        logger.exception("site cannot resolve its facts or privacy folder; a %s message is answered "
                         "with nothing", msg.metadata.message_type)
        return withheld(msg, None)
    keep_payload = False
    rule: str | None = None
    try:
        run = study_run_at_site(context.run_config, site.name)
        session = SiteSession(run, site, SitePrivacy(ledger_dir, load_site_policy(context.node_config, site)))
        keep_payload = session.privacy.policy.keep_egress_payloads
        content = handler(msg, context, session)
        content[SITE_RECORD_KEY] = ConfigRecord({SITE_NAME_KEY: site.name})
        reply = Message(content, reply_to=msg)
    except Exception as exc:  # a site answers every request; details stay in the site's log
        rule = exc.rule if isinstance(exc, SiteRefusal) else None
        reply = Message(_error(msg.metadata.message_type, site.name, exc), reply_to=msg)
    try:
        server_round = _server_round(msg, default=0)
    except ProtocolError:
        server_round = 0  # the reply is the error about it; it is still recorded
    return release(msg, reply, ledger_dir, server_round=server_round, keep_payload=keep_payload, rule=rule)


def _error(kind: str, site_name: str, exc: Exception) -> Error:
    """The error sent for ``exc`` in answer to a ``kind`` request: a refusal's fixed public reason, else only the site
    and the error's class."""
    if isinstance(exc, SiteRefusal):
        logger.warning("site %s refused a %s message: %s", site_name, kind, exc)
        return Error(code=SITE_REFUSAL_CODE, reason=exc.public_reason)
    reason = f"site {site_name}: {type(exc).__name__} (details in the site's log)"
    if isinstance(exc, PrivacyError):
        logger.warning("site %s refused a %s message", site_name, kind, exc_info=exc)
        return Error(code=SITE_REFUSAL_CODE, reason=reason)
    logger.error("site %s failed to handle a %s message", site_name, kind, exc_info=exc)
    return Error(code=SITE_ERROR_CODE, reason=reason)


def _server_round(msg: Message, default: int, key: str = SERVER_ROUND_KEY) -> int:
    """The instruction's round number under ``key`` in its config (``default`` when it has none); ``ProtocolError``
    if not an integer."""
    config = msg.content.config_records.get(CONFIG_RECORD)
    value = default if config is None else config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"'{key}' of a {msg.metadata.message_type} message is not an integer")
    return value


def _round_of(msg: Message, session: SiteSession, key: str = SERVER_ROUND_KEY) -> int:
    """The instruction's round number under ``key``; ``SiteRefusal`` (rule ``server-round``) if it is not an
    integer."""
    try:
        return _server_round(msg, default=0, key=key)
    except ProtocolError as exc:
        raise SiteRefusal(session.site.name, SERVER_ROUND_RULE, request="the request", detail=str(exc)) from exc


def _train(msg: Message, context: Context, session: SiteSession) -> RecordDict:
    evaluation = _folded_evaluation(msg, session)  # first: the arrays are the previous round's global model
    secure_stages.forget(context.state)
    server_round = _round_of(msg, session)
    answer = SiteRound(session).train(msg.content.array_records[ARRAYS_RECORD].to_torch_state_dict(),
                                      server_round=server_round, run_id=msg.metadata.run_id,
                                      secure=secure_stages.secure_request(msg.content))
    metrics = MetricRecord({WEIGHT_KEY: answer.reply.num_patients, **answer.reply.metrics})
    if answer.secure is None:
        return RecordDict({ARRAYS_RECORD: ArrayRecord(answer.reply.weights), METRICS_RECORD: metrics, **evaluation})
    keys = secure_stages.keep_round(context.state, answer.secure, msg.metadata.run_id, server_round)
    return RecordDict({METRICS_RECORD: metrics, SECAGG_RECORD: keys, **evaluation})


def _folded_evaluation(msg: Message, session: SiteSession) -> dict[str, MetricRecord | ConfigRecord]:
    """The ``evaluate-round`` evaluation a train message asks for, as the records its reply adds: ``evaluation``
    (the metrics), or ``evaluation-error`` (what an evaluate message would have been answered with; the details in
    the site's log). Nothing when the message asks none."""
    config = msg.content.config_records.get(CONFIG_RECORD)
    if config is None or EVALUATE_ROUND_KEY not in config:
        return {}
    try:
        return {EVALUATION_RECORD: _evaluation(msg, session, _round_of(msg, session, EVALUATE_ROUND_KEY))}
    except Exception as exc:  # the evaluation's failure is its own; training goes on
        error = _error(MessageType.EVALUATE, session.site.name, exc)  # logged as a refused evaluate message is
        reason = error.reason or ""
        return {EVALUATION_ERROR_RECORD: ConfigRecord({ERROR_CODE_KEY: error.code, ERROR_REASON_KEY: reason})}


def _evaluate(msg: Message, context: Context, session: SiteSession) -> RecordDict:
    return RecordDict({METRICS_RECORD: _evaluation(msg, session, _round_of(msg, session))})


def _evaluation(msg: Message, session: SiteSession, server_round: int) -> MetricRecord:
    """``SiteRound.evaluate`` of the message's arrays as the evaluation of ``server_round``."""
    metrics: dict[str, MetricRecordValues] = {
        **SiteRound(session).evaluate(msg.content.array_records[ARRAYS_RECORD].to_torch_state_dict(),
                                      server_round=server_round, run_id=msg.metadata.run_id)}
    return MetricRecord(metrics)


def _secure_stage(msg: Message, context: Context, session: SiteSession) -> RecordDict:
    session.check_policy()
    study = session.study
    noise = partial(distributed_noise, study) if study.dp_mode == "distributed" else None  # masked input only
    return secure_stages.answer_stage(msg, context.state, session.site.name, _server_round(msg, default=-1), noise)

"""The site's Flower ClientApp: a thin adapter between Flower messages and ``SiteTrainer``.

A site never crashes on a bad request and never sends exception text (it could name a patient): failures are
logged locally in full and answered with a short error reply naming only the site and the error class. The one
exception is a privacy refusal (``PrivacyError``): its text, written by us, names the site and the broken rule
and holds no patient data, so it reaches the operator.

Before anything runs, the site checks the study against its own privacy policy; before training, it charges the
round's planned DP steps to its on-disk privacy ledger (refusing if the budget would be exceeded) and settles the
actual steps afterwards. Ledger rounds are keyed by the study (``study_identity``) and round; a round the site
already answered for this study and the same global model (the coordinator died before checkpointing it) is
answered with the stored reply instead (``round_replay``): no second training, no second charge. Every reply is
recorded in the site's egress record before it leaves (``egress_mod``). In a secure-aggregation round the weights stay at the site and leave only masked, over the ``query.secagg``
stages (``fedfusion.site.secure_stages``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfusion.coordinator.strategies.patient_weighted_fedavg import SITE_RECORD_KEY, WEIGHT_KEY
from fedfusion.errors import PrivacyError
from fedfusion.privacy.accounting import history_delta, planned_round
from fedfusion.secure_aggregation.wire_records import QUERY_ACTION
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.egress_mod import egress_record_mod
from fedfusion.site.node_context import SiteContext, resolve_site_context
from fedfusion.site.round_replay import RoundReplay, StoredReply
from fedfusion.site.secure_stages import secure_train, stage_handler
from fedfusion.site.site_privacy import SitePrivacy, resolve_site_privacy
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.run_config import StudyRun

logger = logging.getLogger(__name__)

SITE_ERROR_CODE = 3001
SITE_REFUSAL_CODE = 3002

app = ClientApp(mods=[egress_record_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this site's patients (DP-SGD when the study says so)."""
    return _answer(msg, context, secure_train(_train, context.state))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's held-out patients (aggregate metrics only)."""
    return _answer(msg, context, _evaluate)


@app.query(QUERY_ACTION)
def secure_aggregation_stage(msg: Message, context: Context) -> Message:
    """Answer a secure-aggregation stage (share keys, masked input, unmask) of the round in progress."""
    return _answer(msg, context, stage_handler(context.state))


Handler = Callable[[Message, StudyRun, SiteContext, SitePrivacy], RecordDict]


def _answer(msg: Message, context: Context, handler: Handler) -> Message:
    site_name = "unknown-site"
    try:
        run = StudyRun.from_run_config(context.run_config)
        site = resolve_site_context(context.node_config)
        site_name = site.name
        privacy = resolve_site_privacy(context.node_config, site)
        privacy.policy.check(run.study, site.name)
        content = handler(msg, run, site, privacy)
        content[SITE_RECORD_KEY] = ConfigRecord({"name": site.name})
        return Message(content, reply_to=msg)
    except PrivacyError as exc:  # our own text: names the site and the rule, never a patient
        logger.warning("site %s refused a %s message: %s", site_name, msg.metadata.message_type, exc)
        return Message(Error(code=SITE_REFUSAL_CODE, reason=str(exc)), reply_to=msg)
    except Exception as exc:  # a site answers every request; details stay in the site's log
        logger.exception("site %s failed to handle a %s message", site_name, msg.metadata.message_type)
        reason = f"site {site_name}: {type(exc).__name__} (details in the site's log)"
        return Message(Error(code=SITE_ERROR_CODE, reason=reason), reply_to=msg)


def _train(msg: Message, run: StudyRun, site: SiteContext, privacy: SitePrivacy) -> RecordDict:
    study = run.study
    server_round = int(msg.content["config"].get("server-round", 0))
    received = msg.content["arrays"].to_torch_state_dict()
    ledger = privacy.ledger(site)
    replies = RoundReplay(ledger.directory, ledger.dataset, run.study_id)
    reply = replies.find(server_round, received)
    if reply is not None:
        logger.info("site %s replays its stored reply to round %s of study %s", site.name, server_round,
                    replies.study_id)
    else:
        cohort = load_cohort_once(site, study)
        trainer = SiteTrainer(cohort, study, device=site.device)
        planned = (planned_round(study.noise_multiplier, len(cohort.train), study.batch_size, study.local_epochs)
                   if study.dp else None)
        charge = ledger.charge(run_id=msg.metadata.run_id, server_round=server_round, planned=planned,
                               policy=privacy.policy, study_id=replies.study_id)
        outcome = trainer.train(received, accountant_history=charge.prior, seed=study.seed * 100_003 + server_round)
        reply = StoredReply(outcome.weights, outcome.num_patients, outcome.metrics)
        replies.store(server_round, received, reply)  # before settling: a kill after this point replays
        ledger.settle(charge, history_delta(charge.prior, outcome.accountant_history))
    metrics = MetricRecord({WEIGHT_KEY: reply.num_patients, **reply.metrics})
    return RecordDict({"arrays": ArrayRecord(reply.weights), "metrics": metrics})


def _evaluate(msg: Message, run: StudyRun, site: SiteContext, privacy: SitePrivacy) -> RecordDict:
    study = run.study
    cohort = load_cohort_once(site, study)
    trainer = SiteTrainer(cohort, study, device=site.device)
    metrics = trainer.evaluate(msg.content["arrays"].to_torch_state_dict(), split="test")
    metrics[WEIGHT_KEY] = metrics.pop("num-examples")
    return RecordDict({"metrics": MetricRecord(metrics)})

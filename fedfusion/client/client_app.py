"""The site's Flower ClientApp: a thin adapter between Flower messages and ``SiteTrainer``.

A site never crashes on a bad request and never sends exception text (it could name a patient): failures are
logged locally in full and answered with a short error reply naming only the site and the error class.
Privacy state (the Opacus accountant history) lives in ``context.state`` so epsilon accumulates across
rounds instead of restarting each round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app import Error
from flwr.clientapp import ClientApp

from fedfusion.client.cohort_memo import load_cohort_once
from fedfusion.client.site_context import SiteContext, resolve_site_context
from fedfusion.client.site_trainer import SiteTrainer
from fedfusion.config import StudyConfig
from fedfusion.strategies.patient_weighted_fedavg import SITE_RECORD_KEY, WEIGHT_KEY

logger = logging.getLogger(__name__)

PRIVACY_STATE_KEY = "privacy"
SITE_ERROR_CODE = 3001

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this site's patients (DP-SGD when the study says so)."""
    return _answer(msg, context, _train)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this site's held-out patients (aggregate metrics only)."""
    return _answer(msg, context, _evaluate)


Handler = Callable[[Message, Context, StudyConfig, SiteContext], RecordDict]


def _answer(msg: Message, context: Context, handler: Handler) -> Message:
    site_name = "unknown-site"
    try:
        study = StudyConfig.from_run_config(context.run_config)
        site = resolve_site_context(context.node_config, study)
        site_name = site.name
        content = handler(msg, context, study, site)
        content[SITE_RECORD_KEY] = ConfigRecord({"name": site.name})
        return Message(content, reply_to=msg)
    except Exception as exc:  # a site answers every request; details stay in the site's log
        logger.exception("site %s failed to handle a %s message", site_name, msg.metadata.message_type)
        reason = f"site {site_name}: {type(exc).__name__} (details in the site's log)"
        return Message(Error(code=SITE_ERROR_CODE, reason=reason), reply_to=msg)


def _train(msg: Message, context: Context, study: StudyConfig, site: SiteContext) -> RecordDict:
    cohort = load_cohort_once(site, study)
    trainer = SiteTrainer(cohort, study, device=site.device)
    server_round = int(msg.content["config"].get("server-round", 0))
    outcome = trainer.train(
        msg.content["arrays"].to_torch_state_dict(),
        accountant_history=_load_accountant_history(context),
        seed=study.seed * 100_003 + server_round,
    )
    context.state[PRIVACY_STATE_KEY] = ConfigRecord(
        {"accountant-history": json.dumps([list(step) for step in outcome.accountant_history])}
    )
    metrics = MetricRecord({WEIGHT_KEY: outcome.num_patients, **outcome.metrics})
    return RecordDict({"arrays": ArrayRecord(outcome.weights), "metrics": metrics})


def _evaluate(msg: Message, context: Context, study: StudyConfig, site: SiteContext) -> RecordDict:
    cohort = load_cohort_once(site, study)
    trainer = SiteTrainer(cohort, study, device=site.device)
    metrics = trainer.evaluate(msg.content["arrays"].to_torch_state_dict(), split="test")
    metrics[WEIGHT_KEY] = metrics.pop("num-examples")
    return RecordDict({"metrics": MetricRecord(metrics)})


def _load_accountant_history(context: Context) -> list[tuple[float, float, int]]:
    record = context.state.get(PRIVACY_STATE_KEY)
    if record is None:
        return []
    return [(float(s), float(q), int(n)) for s, q, n in json.loads(str(record["accountant-history"]))]

"""A site's whole round, without Flower: policy, replay, charge, train, store, settle; and evaluation.

The order is the site's privacy guarantee, so it lives in one place (``SiteRound.train``):

1. **policy**: the study against the site's own policy, and a plain round against
   ``secure-aggregation-mandatory``; a refusal (``SiteRefusal``) charges nothing and trains nothing;
2. **replay**: a round already answered for this study and the same global model is answered with the stored
   reply (``round_replay``): no second training, no second charge;
3. **charge** the round's planned DP steps to the privacy ledger, refusing if the budget would be exceeded
   (a study with a ``target-epsilon`` is first calibrated, once per study id, to the site's noise multiplier,
   ``privacy/calibration.py``; its charge also refuses a round that would exceed the study's target);
4. **train** (the ledger already counts the round in full, so a kill from here on never under-counts);
5. **store** the reply before it can leave (a kill after this point replays it on the next ask);
6. **settle** the ledger with the steps actually taken.

A round charged but killed before step 5 has nothing to replay: asked again, it is trained and charged again.
In distributed DP (``dp-mode`` = distributed) a round is policy, charge (the central entry: sigma, q, 1 step),
the clipped gradient sum (``distributed_dp``), settle; it is only answered inside secure aggregation and never
replayed (its noise is added at stage 3, so a second answer would be a second release).

An evaluation is the site's to control (``SiteRound.evaluate``): policy, round number, the same model asked again
gets the metrics already sent (``privacy/evaluation_log``), ``min-eval-patients`` on the site's own split (its
policy's, never the study's seed or test fraction), counted against ``max-evaluations-per-round`` and
``-per-study`` before anything is computed, then the metrics (``eval-metric-noise`` when set), recorded as answered.
Every request is first checked for a valid study config and round number (``study_run_at_site``,
``check_round``): a refusal names the rule, and nothing is charged or counted.

The last round's evaluation personalizes the task heads when the study asks (``personalization``): the same order
(replay, charge, train, store, settle) under the same ledger and policy; a refusal there costs only the
``personalized-*`` metrics, never the global model's.
In a secure-aggregation round the answer also holds the update (trained minus global weights) and the round's
SecAgg secrets, which stay at the site; the Flower adapter (``client_app``, ``secure_stages``) keeps them in the
node's state and sends only the public keys. An unreadable ledger or stored reply is a refusal whose public text
names the site and the rule only; the file and the error stay in the site's log (``SiteRefusal.detail``). So is a
site whose slide features were not prepared (``fedfusion site prepare``): a round never extracts them, and
nothing is charged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fedfusion.errors import (
    ConfigError,
    CorruptLedgerError,
    CorruptReplyError,
    FeaturesNotPreparedError,
    ProtocolError,
    SiteRefusal,
)
from fedfusion.evaluation.task_metrics import with_metric_noise
from fedfusion.privacy.accounting import (
    epsilon_spent,
    history_delta,
    merged_history,
    planned_distributed_round,
    planned_round,
)
from fedfusion.privacy.calibration import site_calibration
from fedfusion.privacy.distributed_noise import distributed_noise
from fedfusion.privacy.evaluation_log import EvaluationLog
from fedfusion.privacy.ledger import PrivacyLedger
from fedfusion.privacy.site_policy import SECURE_AGGREGATION_RULE
from fedfusion.protocol import (
    DELTA_KEY,
    EPSILON_KEY,
    MAX_GRAD_NORM_KEY,
    NOISE_MULTIPLIER_KEY,
    PERSONALIZATION_REFUSED_KEY,
    PERSONALIZED_PREFIX,
    WEIGHT_KEY,
)
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.site import SecAggSite
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.distributed_dp import check_threshold, clipped_gradient_sum
from fedfusion.site.held_out_list import write_held_out_list
from fedfusion.site.node_context import SiteContext, resolve_site_context
from fedfusion.site.personalization import Personalization, PersonalizedStore, personalization_due
from fedfusion.site.round_replay import RoundReplay, StoredReply, weights_digest
from fedfusion.site.site_privacy import SitePrivacy, resolve_site_privacy
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun

logger = logging.getLogger(__name__)

LEDGER_RULE = "rule 'readable-ledger': its privacy ledger is unreadable, so its spend is unknown"
"""The public reason of a refusal for an unreadable privacy ledger."""
STORED_REPLY_RULE = "rule 'readable-stored-reply': its stored reply to the round is unreadable"
"""The public reason of a refusal for an unreadable stored reply (what was sent is unknown)."""
DISTRIBUTED_DP_RULE = "rule 'distributed-dp': dp-mode = distributed needs a secure-aggregation round"
"""The public reason of a refusal for a plain round of a distributed-DP study (the gradient sum has no noise)."""
PREPARED_FEATURES_RULE = "rule 'prepared-features': features not prepared: run fedfusion site prepare"
"""The public reason of a refusal for slides without features in the site's cache (the paths stay in its log)."""
SERVER_ROUND_RULE = "rule 'server-round': a round number must be an integer >= 1"
"""The public reason of a refusal for a round number that is not an integer >= 1 (nothing is charged)."""
STUDY_CONFIG_RULE = "rule 'valid-study-config'"
"""Prefix of the public reason of a refusal for a study config that does not validate (followed by the problem,
which names the key and the value the coordinator sent; nothing of the site)."""
EVALUATION_LOG_RULE = "rule 'readable-evaluation-log': its evaluation log is unreadable, so its count is unknown"
"""The public reason of a refusal for an unreadable evaluation log."""
MIN_EVAL_PATIENTS_RULE = "rule 'min-eval-patients' ({}): too few held-out patients"
"""The public reason of a refusal to evaluate on fewer held-out patients than the policy's minimum."""


def study_run_at_site(run_config: Mapping[str, Any], site_name: str) -> StudyRun:
    """The study of a message; ``SiteRefusal`` (rule ``valid-study-config``) when its config does not validate."""
    try:
        return StudyRun.from_run_config(run_config)
    except ConfigError as exc:
        raise SiteRefusal(site_name, f"{STUDY_CONFIG_RULE}: {exc}", request="the study") from exc


def check_round(server_round: object, site_name: str) -> int:
    """``server_round`` if it is an integer >= 1; ``SiteRefusal`` (rule ``server-round``) otherwise."""
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 1:
        raise SiteRefusal(site_name, SERVER_ROUND_RULE, request="the request",
                          detail=f"server-round = {server_round!r}")
    return server_round


@dataclass(frozen=True)
class SiteSession:
    """What a site resolves once per message: the study and its id, its own facts, and its privacy folder and policy."""

    run: StudyRun
    site: SiteContext
    privacy: SitePrivacy

    @property
    def study(self) -> StudyConfig:
        """The study the message belongs to."""
        return self.run.study

    @classmethod
    def resolve(cls, run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> SiteSession:
        """The session of a message from Flower's run config (the study) and node config (the site's facts)."""
        site = resolve_site_context(node_config)
        return cls(study_run_at_site(run_config, site.name), site, resolve_site_privacy(node_config, site))

    def check_policy(self) -> None:
        """``SiteRefusal`` naming the site and every rule of its policy the study breaks."""
        self.privacy.policy.check(self.study, self.site.name)


@dataclass(frozen=True)
class SecureRequest:
    """A secure-aggregation round's request to this site: its id in the round and the round's SecAgg numbers."""

    config: SecAggConfig
    site_id: int


@dataclass(frozen=True)
class SecureUpdate:
    """What a secure round keeps at the site until it is masked: the round's SecAgg party and the update."""

    secagg: SecAggSite
    update: dict[str, NDArray[Any]]
    """Trained minus global weights, by parameter name."""


@dataclass(frozen=True)
class TrainAnswer:
    """A site's answer to a train round."""

    reply: StoredReply
    """Weights, patients (the FedAvg weight) and metrics, as stored for replay."""
    replayed: bool
    """True when the reply was the stored one: nothing was trained or charged this time."""
    secure: SecureUpdate | None = None
    """In a secure round: what stays at the site (then ``reply.weights`` must not be sent)."""


class SiteRound:
    """One site's answer to one message of a study: ``train`` or ``evaluate``, in the order of the module docstring.

    ``trainer`` and ``ledger`` default to the site's own (the cohort is read only when training is needed); tests
    pass subclasses to observe the order.
    """

    def __init__(self, session: SiteSession, *, trainer: SiteTrainer | None = None,
                 ledger: PrivacyLedger | None = None) -> None:
        self.session = session
        self.ledger = ledger if ledger is not None else session.privacy.ledger(session.site)
        self.replies = RoundReplay(self.ledger.directory, self.ledger.dataset, session.run.study_id)
        self._trainer = trainer

    @property
    def trainer(self) -> SiteTrainer:
        """The site's trainer on its cohort (read from disk once per process)."""
        if self._trainer is None:
            study, site = self.session.study, self.session.site
            cohort = load_cohort_once(site, study, self.session.privacy.policy.split)
            write_held_out_list(self.session.privacy.ledger_dir, self.session.run.study_id, cohort)
            self._trainer = SiteTrainer(cohort, study, device=site.device)
        return self._trainer

    def train(self, received: dict[str, torch.Tensor], *, server_round: int, run_id: int,
              secure: SecureRequest | None = None) -> TrainAnswer:
        """Answer a train round from the global weights ``received`` (see the module docstring for the order)."""
        self.session.check_policy()
        site = self.session.site.name
        check_round(server_round, site)
        if secure is None and self.session.privacy.policy.secure_aggregation_mandatory:
            raise SiteRefusal(site, f"{SECURE_AGGREGATION_RULE}: the coordinator asks plain aggregation",
                              request=f"round {server_round} under its privacy policy")
        try:
            if self.session.study.dp_mode == "distributed":
                return self._distributed_round(received, server_round, run_id, secure)
            reply = self.replies.find(server_round, received)
            replayed = reply is not None
            if reply is None:
                reply = self._train_and_store(received, server_round, run_id)
            else:
                logger.info("site %s replays its stored reply to round %s of study %s", site, server_round,
                            self.replies.study_id)
        except CorruptReplyError as exc:
            raise SiteRefusal(site, STORED_REPLY_RULE, request=f"round {server_round}", detail=str(exc)) from exc
        except CorruptLedgerError as exc:
            raise SiteRefusal(site, LEDGER_RULE, request=f"round {server_round}", detail=str(exc)) from exc
        except FeaturesNotPreparedError as exc:
            raise SiteRefusal(site, PREPARED_FEATURES_RULE, request=f"round {server_round}",
                              detail=str(exc)) from exc
        return TrainAnswer(reply, replayed,
                           None if secure is None else secure_update(received, reply, secure, site))

    def evaluate(self, received: dict[str, torch.Tensor], *, server_round: int, run_id: int = 0) -> dict[str, float]:
        """Aggregate metrics of ``received`` on the site's held-out patients (``num-examples``: their count); in
        the study's last round with ``personalization-epochs``, also those of the site's personalized model
        (``personalized-*``; ``fedfusion.site.personalization``). Refused (``SiteRefusal``) below the policy's
        ``min-eval-patients`` or beyond its evaluation limits (see the module docstring for the order)."""
        self.session.check_policy()
        site, policy = self.session.site.name, self.session.privacy.policy
        check_round(server_round, site)
        request = f"evaluation of round {server_round}"
        study_id, digest = self.session.run.study_id, weights_digest(received)
        log = EvaluationLog(self.session.privacy.ledger_dir, self.ledger.dataset)
        try:
            answered = log.answered(study_id, server_round, digest)
            if answered is not None:
                logger.info("site %s repeats its evaluation of round %s of study %s", site, server_round, study_id)
                return answered
            trainer = self.trainer
            held_out = len(trainer.cohort.test)
            if held_out < policy.min_eval_patients:
                raise SiteRefusal(site, MIN_EVAL_PATIENTS_RULE.format(policy.min_eval_patients), request=request,
                                  detail=f"{held_out} held-out patients")
            counted = log.count(study_id, server_round, digest, policy)
            metrics = trainer.evaluate(received, split="test")
            if personalization_due(self.session.study, server_round):
                metrics.update(self._personalized_metrics(received, server_round, run_id))
            metrics = with_metric_noise(metrics, held_out, policy.eval_metric_noise)
            log.answer(counted, metrics)
        except FeaturesNotPreparedError as exc:
            raise SiteRefusal(site, PREPARED_FEATURES_RULE, request=request, detail=str(exc)) from exc
        except CorruptLedgerError as exc:
            raise SiteRefusal(site, EVALUATION_LOG_RULE, request=request, detail=str(exc)) from exc
        return metrics

    def _personalized_metrics(self, received: dict[str, torch.Tensor], server_round: int,
                              run_id: int) -> dict[str, float]:
        """The personalized model's held-out metrics, or ``personalization-refused`` (the reason in the log)."""
        personalization = Personalization(
            self.trainer, self.ledger, self.session.privacy.policy,
            PersonalizedStore(self.session.privacy.ledger_dir, self.session.run.study_id, self.session.site.name))
        try:
            weights = personalization.weights(received, server_round=server_round, run_id=run_id)
        except (SiteRefusal, CorruptLedgerError, CorruptReplyError) as exc:
            logger.warning("site %s does not personalize study %s: %s", self.session.site.name,
                           self.session.run.study_id, exc)
            return {PERSONALIZATION_REFUSED_KEY: 1.0}
        metrics = self.trainer.evaluate(weights, split="test")
        return {PERSONALIZED_PREFIX + key: value for key, value in metrics.items() if key != WEIGHT_KEY}

    def _train_and_store(self, received: dict[str, torch.Tensor], server_round: int, run_id: int) -> StoredReply:
        study = self.session.study
        trainer = self.trainer
        patients = len(trainer.cohort.train)
        budget = (site_calibration(self.ledger, study, self.replies.study_id, patients,
                                   self.session.privacy.policy.accountant)
                  if study.dp and study.target_epsilon > 0 else None)
        sigma = budget.noise_multiplier if budget is not None else study.noise_multiplier
        planned = planned_round(sigma, patients, study.batch_size, study.local_epochs) if study.dp else None
        charge = self.ledger.charge(run_id=run_id, server_round=server_round, planned=planned,
                                    policy=self.session.privacy.policy, study_id=self.replies.study_id, budget=budget)
        outcome = trainer.train(received, accountant_history=charge.prior, seed=round_seed(study, server_round),
                                noise_multiplier=sigma)
        reply = StoredReply(outcome.weights, outcome.num_patients, outcome.metrics)
        self.replies.store(server_round, received, reply)  # before settling: a kill after this point replays
        self.ledger.settle(charge, history_delta(charge.prior, outcome.accountant_history))
        return reply

    def _distributed_round(self, received: dict[str, torch.Tensor], server_round: int, run_id: int,
                           secure: SecureRequest | None) -> TrainAnswer:
        """Distributed DP: charge the central entry (sigma, q, 1), then keep the clipped gradient sum for stage 3.

        Never replayed: the sum carries no noise yet, so answering the same round twice would release it twice
        with fresh noise; asked again, the round is computed and charged again.
        """
        site, study = self.session.site.name, self.session.study
        if secure is None:
            raise SiteRefusal(site, DISTRIBUTED_DP_RULE, request=f"round {server_round}")
        noise = distributed_noise(study)
        check_threshold(secure.config, noise)
        trainer = self.trainer
        budget = (site_calibration(self.ledger, study, self.replies.study_id, len(trainer.cohort.train),
                                   self.session.privacy.policy.accountant) if study.target_epsilon > 0 else None)
        planned = planned_distributed_round(noise.noise_multiplier, study.sample_rate)
        charge = self.ledger.charge(run_id=run_id, server_round=server_round, planned=planned,
                                    policy=self.session.privacy.policy, study_id=self.replies.study_id, budget=budget)
        started = time.perf_counter()
        gradient_sum, _ = clipped_gradient_sum(trainer, received, seed=round_seed(study, server_round))
        seconds = time.perf_counter() - started
        self.ledger.settle(charge, planned)
        history = merged_history([*charge.prior, *planned])
        metrics = {
            EPSILON_KEY: epsilon_spent(study.accountant, history, study.delta),
            DELTA_KEY: study.delta,
            NOISE_MULTIPLIER_KEY: noise.noise_multiplier,
            MAX_GRAD_NORM_KEY: noise.max_grad_norm,
            "steps": 1.0,
            "total-steps": float(sum(entry[2] for entry in history)),
            "train-seconds": seconds,
        }
        num_patients = len(trainer.cohort.train)
        return TrainAnswer(StoredReply({}, num_patients, metrics), replayed=False,
                           secure=SecureUpdate(SecAggSite(secure.site_id, secure.config, num_patients), gradient_sum))


def round_seed(study: StudyConfig, server_round: int) -> int:
    """Tile sampling and dropout of a round (never DP noise or Poisson sampling, which come from the OS)."""
    return study.training_seed * 100_003 + server_round


def secure_update(received: Mapping[str, torch.Tensor], reply: StoredReply, request: SecureRequest,
                  site_name: str) -> SecureUpdate:
    """What a secure round keeps at the site: the update (``reply`` minus ``received``) and a new SecAgg party."""
    if list(reply.weights) != list(received):
        raise ProtocolError(f"site {site_name}: the received global model's names do not match the study's model")
    update = {name: _array(reply.weights[name]) - _array(tensor) for name, tensor in received.items()}
    return SecureUpdate(SecAggSite(request.site_id, request.config, reply.num_patients), update)


def _array(tensor: torch.Tensor) -> NDArray[Any]:
    return np.asarray(tensor.detach().cpu().numpy())

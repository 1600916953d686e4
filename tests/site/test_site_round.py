"""The order of a site's round, without Flower: charge before training, store before settling, refuse before both.

Real ledger, real stored replies and a real ``SiteTrainer`` on the small synthetic cohort. A "kill" is an exception
no layer catches (``Killed``), raised where a process could die: in training (after the charge, before the reply is
stored) or in settling (after the reply is stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flower_site import deployed_node_config, small_study

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.errors import SiteRefusal
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.accounting import AccountantHistory
from fedfusion.privacy.ledger import Charge, LedgerRound, PrivacyLedger
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.node_context import resolve_site_context
from fedfusion.site.site_privacy import SitePrivacy
from fedfusion.site.site_round import STORED_REPLY_RULE, SecureRequest, SiteRound, SiteSession
from fedfusion.site.trainer import SiteTrainer, TrainOutcome
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun

RUN_ID = 7


class Killed(BaseException):
    """The process dies here (nothing in the site catches a BaseException that is not an Exception)."""


class ObservedTrainer(SiteTrainer):
    """A real trainer that notes the ledger's entries of the round as training starts, and can be killed there."""

    def __init__(self, session: SiteSession, ledger: PrivacyLedger, *, killed: bool = False) -> None:
        super().__init__(load_cohort_once(session.site, session.study, session.privacy.policy.split), session.study,
                         device="cpu")
        self.ledger = ledger
        self.killed = killed
        self.seen: list[list[str]] = []
        """Per call of ``train``: the statuses of the ledger's entries of the study's round at that moment."""
        self.server_round = 0

    def train(self, weights: dict[str, torch.Tensor], *, accountant_history: Sequence[tuple[float, float, int]] = (),
              seed: int = 0, dp_seed: int | None = None, noise_multiplier: float | None = None) -> TrainOutcome:
        """Note the ledger, die if told to, else train for real."""
        entries = self.ledger.rounds()
        self.seen.append([r.status for r in entries if r.server_round == self.server_round])
        if self.killed:
            raise Killed
        return super().train(weights, accountant_history=accountant_history, seed=seed, dp_seed=dp_seed,
                             noise_multiplier=noise_multiplier)


class KilledAtSettle(PrivacyLedger):
    """The real ledger, but the process dies as it settles (the reply is already stored)."""

    def settle(self, charge: Charge, actual: AccountantHistory) -> LedgerRound:
        """Die before writing anything."""
        raise Killed


def _session(cohort: Path, work: Path, study: StudyConfig | None = None,
             policy: SitePolicy | None = None) -> SiteSession:
    site = read_cohort_index(cohort).sites[0]
    study = study if study is not None else small_study(cohort)
    node_config = deployed_node_config(site, work / "cache", work / "ledger")
    return SiteSession(StudyRun.of(study), resolve_site_context(node_config),
                       SitePrivacy(work / "ledger", policy if policy is not None else SitePolicy()))


def _received(study: StudyConfig) -> dict[str, torch.Tensor]:
    return build_model(study, seed=study.training_seed).state_dict()


def _round(session: SiteSession, *, killed: bool = False, ledger: PrivacyLedger | None = None,
           server_round: int = 1) -> tuple[SiteRound, ObservedTrainer]:
    own = session.privacy.ledger(session.site)
    ledger = ledger if ledger is not None else own
    trainer = ObservedTrainer(session, own, killed=killed)
    trainer.server_round = server_round
    return SiteRound(session, trainer=trainer, ledger=ledger), trainer


def _statuses(site_round: SiteRound, server_round: int = 1) -> list[str]:
    return [r.status for r in site_round.ledger.rounds()
            if (r.study_id, r.server_round) == (site_round.replies.study_id, server_round)]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_round_is_charged_before_training_starts_and_settled_after(small_cohort: Path, tmp_path: Path) -> None:
    session = _session(small_cohort, tmp_path)
    site_round, trainer = _round(session)
    answer = site_round.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert trainer.seen == [["charged"]]  # the ledger counted the round in full when training began
    assert _statuses(site_round) == ["settled"] and not answer.replayed and answer.secure is None
    assert site_round.replies.path(1).exists()
    assert answer.reply.metrics["epsilon"] > 0 and answer.reply.num_patients == len(trainer.cohort.train)


def test_a_kill_after_the_reply_is_stored_replays_it_without_training_or_charging_again(
        small_cohort: Path, tmp_path: Path) -> None:
    session = _session(small_cohort, tmp_path)
    own = session.privacy.ledger(session.site)
    dying, trained = _round(session, ledger=KilledAtSettle(own.directory, own.dataset))
    with pytest.raises(Killed):
        dying.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert trained.seen == [["charged"]] and dying.replies.path(1).exists()
    spent = own.epsilon(session.study.accountant, session.study.delta)

    again, trainer = _round(session)  # the restarted site, asked the same round with the same global model
    answer = again.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert answer.replayed and trainer.seen == []
    assert _statuses(again) == ["charged"]  # one charge, still counted in full (its plan), never settled lower
    assert own.epsilon(session.study.accountant, session.study.delta) == spent
    stored = again.replies.find(1, _received(session.study))
    assert stored is not None and _same(answer.reply.weights, stored.weights)


def test_a_kill_after_the_charge_but_before_the_reply_is_stored_trains_and_charges_again(
        small_cohort: Path, tmp_path: Path) -> None:
    session = _session(small_cohort, tmp_path)
    dying, killed = _round(session, killed=True)
    with pytest.raises(Killed):
        dying.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert killed.seen == [["charged"]] and not dying.replies.path(1).exists()
    ledger = session.privacy.ledger(session.site)
    spent = ledger.epsilon(session.study.accountant, session.study.delta)

    again, trainer = _round(session)
    answer = again.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert not answer.replayed and trainer.seen == [["charged", "charged"]]  # charged again before training again
    assert _statuses(again) == ["charged", "settled"]  # the killed charge stays: never under-count
    assert ledger.epsilon(session.study.accountant, session.study.delta) > spent


@pytest.mark.parametrize("study_changes, policy, secure, rule", [
    ({"dp": False}, SitePolicy(), False, "rule 'dp-mandatory' (true): study asks dp = false"),
    ({}, SitePolicy(max_epsilon=0.01), False, "rule 'max-epsilon' (0.01) would be exceeded"),
    ({}, SitePolicy(secure_aggregation_mandatory=True), False,
     "rule 'secure-aggregation-mandatory' (true): the coordinator asks plain aggregation"),
], ids=["dp-mandatory", "budget", "secure-aggregation-mandatory"])
def test_a_refused_round_charges_nothing_and_trains_nothing(
        small_cohort: Path, tmp_path: Path, study_changes: dict[str, Any], policy: SitePolicy, secure: bool,
        rule: str) -> None:
    session = _session(small_cohort, tmp_path, small_study(small_cohort, **study_changes), policy)
    site_round, trainer = _round(session)
    with pytest.raises(SiteRefusal) as refused:
        site_round.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert refused.value.public_reason.startswith(f"site {session.site.name} refuses ")
    assert rule in refused.value.public_reason
    assert trainer.seen == [] and site_round.ledger.rounds() == [] and not site_round.replies.path(1).exists()


def test_an_unreadable_stored_reply_is_refused_with_a_public_reason_free_of_paths(small_cohort: Path,
                                                                                 tmp_path: Path) -> None:
    session = _session(small_cohort, tmp_path)
    first, _ = _round(session)
    first.train(_received(session.study), server_round=1, run_id=RUN_ID)
    first.replies.path(1).write_bytes(b"torn")
    again, trainer = _round(session)
    with pytest.raises(SiteRefusal) as refused:
        again.train(_received(session.study), server_round=1, run_id=RUN_ID)
    assert refused.value.public_reason == f"site {session.site.name} refuses round 1: {STORED_REPLY_RULE}"
    assert str(tmp_path) not in refused.value.public_reason and str(again.replies.path(1)) in str(refused.value)
    assert trainer.seen == [] and _statuses(again) == ["settled"]


def test_a_secure_round_keeps_the_update_trained_minus_global(small_cohort: Path, tmp_path: Path) -> None:
    session = _session(small_cohort, tmp_path, small_study(small_cohort, dp=False),
                       SitePolicy(dp_mandatory=False, max_epsilon=float("inf")))
    site_round, _ = _round(session)
    received = _received(session.study)
    request = SecureRequest(SecAggConfig(num_sites=3, threshold=2), site_id=2)
    answer = site_round.train(received, server_round=1, run_id=RUN_ID, secure=request)
    assert answer.secure is not None and list(answer.secure.update) == list(received)
    for name, update in answer.secure.update.items():
        np.testing.assert_array_equal(update, answer.reply.weights[name].numpy() - received[name].numpy())
    keys = answer.secure.secagg.public_keys()
    assert (keys.site_id, keys.weight) == (2, answer.reply.num_patients)

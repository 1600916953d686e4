"""Evaluation under the site's control: the site's own split, a minimum of held-out patients, limits per round and
per study counted beside the ledger, optional metric noise, the same answer when asked in a train message
(``evaluate-round``); through the real ClientApp and a real ``SiteRound``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flower_site import SMALL_COHORT_POLICY, deployed_node_config, instruction, site_context, small_study
from flwr.app import ArrayRecord, Message

from fedfusion.data.cohort_index import CohortSite, read_cohort_index
from fedfusion.data.patient_split import PatientSplit
from fedfusion.errors import SiteRefusal
from fedfusion.evaluation.task_metrics import with_metric_noise
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.evaluation_log import EvaluationLog
from fedfusion.privacy.ledger import dataset_id
from fedfusion.privacy.site_policy import SitePolicy, policy_to_toml
from fedfusion.protocol import EVALUATE_ROUND_KEY, SITE_REFUSAL_CODE, WEIGHT_KEY
from fedfusion.site.client_app import app
from fedfusion.site.held_out_list import held_out_path
from fedfusion.site.node_context import resolve_site_context
from fedfusion.site.site_privacy import SitePrivacy
from fedfusion.site.site_round import SiteRound, SiteSession
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun


def _site(cohort: Path) -> CohortSite:
    return read_cohort_index(cohort).sites[0]


def _crafted(study: StudyConfig, bias: float = 0.0) -> dict[str, torch.Tensor]:
    """The attack's model: every head's weights zeroed, its biases chosen, so the loss depends on the outcome only."""
    weights = build_model(study, seed=study.training_seed).state_dict()
    for name, tensor in weights.items():
        if name.startswith("heads."):
            tensor.zero_()
            if name.endswith("bias"):
                tensor.copy_(torch.linspace(-3.0, 3.0, tensor.numel()) + bias)
    return weights


def _policy_file(work: Path, policy: SitePolicy) -> Path:
    path = work / "policy.toml"
    path.write_text(policy_to_toml(policy), encoding="utf-8")
    return path


def test_the_one_held_out_patient_attack_is_refused_and_the_coordinator_cannot_move_the_test_set(
        small_cohort: Path, tmp_path: Path) -> None:
    site = _site(small_cohort)
    ids = pd.read_csv(site.site_dir / "clinical.csv")["patient_id"].astype(str)
    # The attack: a seed for which test-fraction 0.05 holds out exactly one of the site's patients.
    seed = next(s for s in range(200) if sum(PatientSplit(s, 0.05).is_test(pid) for pid in ids) == 1)
    attack = small_study(small_cohort, test_fraction=0.05, seed=seed)
    message = instruction("evaluate", attack, 1)
    message.content.array_records["arrays"] = ArrayRecord(_crafted(attack))

    default_site = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", _policy_file(tmp_path,
                                                                                                     SitePolicy()))
    reply = app(message, site_context(attack, default_site))
    assert reply.has_error() and reply.error.code == SITE_REFUSAL_CODE
    assert reply.error.reason == (f"site {site.name} refuses evaluation of round 1: rule 'min-eval-patients' (20): "
                                  "too few held-out patients")
    assert EvaluationLog(tmp_path / "ledger", dataset_id(site.name, site.site_dir)).evaluations() == []
    (recorded,) = EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()
    assert recorded["kind"] == "error" and recorded["error"]["reason"] == reply.error.reason

    # A site that allows small evaluations still evaluates on its own split, whatever seed and fraction are asked.
    lenient = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger-2")
    own = [pid for pid in ids if SMALL_COHORT_POLICY.split.is_test(pid)]
    held_out_lists = []
    for study_id, study in (("attack", attack), ("plain", small_study(small_cohort, seed=seed + 1,
                                                                         test_fraction=0.9))):
        answer = app(instruction("evaluate", study, 1), site_context(study, lenient, study_id))
        assert not answer.has_error(), answer.error
        assert answer.content.metric_records["metrics"][WEIGHT_KEY] == len(own) > 1
        held_out_lists.append(pd.read_csv(held_out_path(tmp_path / "ledger-2", study_id))["patient_id"].tolist())
    assert held_out_lists[0] == held_out_lists[1] and sorted(map(str, held_out_lists[0])) == sorted(own)


def _session(cohort: Path, work: Path, policy: SitePolicy, study_id: str = "s1") -> SiteSession:
    site = _site(cohort)
    node_config = deployed_node_config(site, work / "cache", work / "ledger")
    return SiteSession(StudyRun.of(small_study(cohort), study_id), resolve_site_context(node_config),
                       SitePrivacy(work / "ledger", policy))


def test_evaluations_are_limited_per_round_and_per_study_counted_durably_and_repeated_not_redrawn(
        small_cohort: Path, tmp_path: Path) -> None:
    policy = dataclasses.replace(SMALL_COHORT_POLICY, max_evaluations_per_study=2, eval_metric_noise=0.5)
    session = _session(small_cohort, tmp_path, policy)
    study = session.study
    first = SiteRound(session).evaluate(_crafted(study), server_round=1)
    assert SiteRound(session).evaluate(_crafted(study), server_round=1) == first  # asked again: the same noise
    assert "loss" not in first and first[WEIGHT_KEY] == len(SiteRound(session).trainer.cohort.test)
    name = session.site.name
    with pytest.raises(SiteRefusal) as per_round:
        SiteRound(session).evaluate(_crafted(study, bias=1.0), server_round=1)  # another model for the same round
    assert per_round.value.public_reason == f"site {name} refuses evaluation of round 1: rule " \
                                            "'max-evaluations-per-round' (1)"
    SiteRound(session).evaluate(_crafted(study), server_round=2)
    with pytest.raises(SiteRefusal) as per_study:
        SiteRound(session).evaluate(_crafted(study), server_round=3)
    assert per_study.value.public_reason == f"site {name} refuses evaluation of round 3: rule " \
                                            "'max-evaluations-per-study' (2)"
    log = EvaluationLog(tmp_path / "ledger", dataset_id(session.site.name, session.site.data_dir))
    assert [(e.study_id, e.server_round) for e in log.evaluations()] == [("s1", 1), ("s1", 2)]
    other_study = _session(small_cohort, tmp_path, policy, study_id="s2")
    assert SiteRound(other_study).evaluate(_crafted(study), server_round=3)[WEIGHT_KEY] == first[WEIGHT_KEY]


def test_metric_noise_is_scaled_to_one_patients_share_and_keeps_counts_exact() -> None:
    metrics = {"c-index": 0.7, "concordant-pairs": 30.0, "comparable-pairs": 40.0, "td-auc": 0.6, "ibs": 0.2,
               "subtype-auc": 0.8, "subtype-mcc": 0.1, "loss": 2.5, WEIGHT_KEY: 25.0}
    assert with_metric_noise(metrics, 25, 0.0) == metrics
    rng = np.random.default_rng(0)
    draws = [with_metric_noise(metrics, 25, 1.0, rng) for _ in range(2000)]
    assert all("loss" not in d and d[WEIGHT_KEY] == 25.0 for d in draws)
    assert all(0 <= d["c-index"] <= 1 and -1 <= d["subtype-mcc"] <= 1 for d in draws)
    assert all(d["concordant-pairs"] <= d["comparable-pairs"] for d in draws)
    # Laplace of scale b * range / n: mean absolute deviation b / n = 0.04 for a rate, 2 b / n for MCC.
    assert np.mean([abs(d["td-auc"] - 0.6) for d in draws]) == pytest.approx(0.04, rel=0.1)
    assert np.mean([abs(d["subtype-mcc"] - 0.1) for d in draws]) == pytest.approx(0.08, rel=0.1)


def test_an_evaluation_asked_in_a_train_message_is_the_evaluate_messages_answer_and_never_costs_the_training(
        small_cohort: Path, tmp_path: Path) -> None:
    """A train message naming ``evaluate-round`` is answered with the training and, beside it, what an evaluate
    message of that round would get: the metrics (counted in the evaluation log, on the egress record as part of the
    train reply) or, refused, its error's code and reason; the training is answered either way."""
    site = _site(small_cohort)
    policy = dataclasses.replace(SMALL_COHORT_POLICY, max_evaluations_per_study=1, dp_mandatory=False,
                                 max_epsilon=math.inf)
    node = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", _policy_file(tmp_path, policy))
    study = small_study(small_cohort, dp=False)

    def train(server_round: int) -> Message:
        message = instruction("train", study, server_round)
        message.content["config"][EVALUATE_ROUND_KEY] = server_round - 1
        return app(message, site_context(study, node))

    folded = train(2)
    assert not folded.has_error() and folded.content["metrics"][WEIGHT_KEY] > 0 and "arrays" in folded.content
    evaluation = dict(folded.content["evaluation"])
    log = EvaluationLog(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    (counted,) = log.evaluations()
    assert counted.server_round == 1 and counted.metrics == evaluation
    assert dict(app(instruction("evaluate", study, 1), site_context(study, node)).content["metrics"]) == evaluation
    assert len(log.evaluations()) == 1  # the same round and model asked again: the metrics already sent
    sent = EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()
    assert sent[0]["kind"] == "train" and sent[0]["round"] == 2
    assert {key: value for key, value in sent[0]["metrics"].items() if key.startswith("evaluation/")} == {
        f"evaluation/{key}": value for key, value in evaluation.items()}
    assert {array["name"].split("/")[0] for array in sent[0]["arrays"]} == {"arrays"}  # nothing per patient

    refused = train(3)  # the policy's one evaluation is spent
    assert not refused.has_error() and refused.content["metrics"][WEIGHT_KEY] > 0
    assert "evaluation" not in refused.content
    error = app(instruction("evaluate", study, 2), site_context(study, node)).error
    assert dict(refused.content["evaluation-error"]) == {"code": SITE_REFUSAL_CODE, "reason": error.reason}
    assert error.reason == f"site {site.name} refuses evaluation of round 2: rule 'max-evaluations-per-study' (1)"

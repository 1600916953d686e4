"""Personalization through the site's real ClientApp: the last round's evaluate fine-tunes the task heads under
DP, charges the site's ledger once, reports ``personalized-*`` aggregates beside the global model's and keeps the
weights at the site."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from flower_site import SMALL_COHORT_POLICY, call_site, deployed_node_config, small_study

from fedfusion.data.cohort_index import CohortSite, read_cohort_index
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.privacy.site_policy import SitePolicy, policy_to_toml
from fedfusion.protocol import METRICS_RECORD, PERSONALIZATION_REFUSED_KEY
from fedfusion.site.personalization import LEDGER_STUDY_SUFFIX, PERSONALIZED_DIR, PersonalizedStore
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun


def _site(cohort: Path) -> CohortSite:
    return read_cohort_index(cohort).sites[0]


def _ledger(site: CohortSite, work: Path) -> PrivacyLedger:
    return PrivacyLedger(work / "ledger", dataset_id(site.name, site.site_dir))


def _evaluate(study: StudyConfig, site: CohortSite, work: Path, server_round: int,
              policy: SitePolicy | None = None) -> dict[str, float]:
    policy_file = None
    if policy is not None:
        policy_file = work / "policy.toml"
        policy_file.write_text(policy_to_toml(policy), encoding="utf-8")
    reply = call_site("evaluate", study, deployed_node_config(site, work / "cache", work / "ledger", policy_file),
                      server_round=server_round)
    assert not reply.has_error(), reply.error
    sent = repr(reply.content)
    patient_ids = pd.read_csv(site.site_dir / "clinical.csv", dtype=str)["patient_id"]
    assert not any(pid in sent for pid in patient_ids), "a patient id left the site"
    assert not reply.content.array_records, "weights left the site in an evaluate reply"
    return {k: float(v) for k, v in reply.content.metric_records[METRICS_RECORD].items()}  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["fusion", "linear"])
def test_last_round_personalizes_the_heads_only_charged_once_and_reported_beside_the_global_metrics(
        small_cohort: Path, tmp_path: Path, model: str) -> None:
    site = _site(small_cohort)
    study = small_study(small_cohort, model=model, num_server_rounds=2, personalization_epochs=2)
    ledger = _ledger(site, tmp_path)
    assert "personalized-c-index" not in _evaluate(study, site, tmp_path, server_round=1)  # not the last round
    assert ledger.rounds() == []

    metrics = _evaluate(study, site, tmp_path, server_round=2)
    assert {"c-index", "personalized-c-index", "personalized-loss"} <= set(metrics)
    assert "personalized-num-examples" not in metrics and PERSONALIZATION_REFUSED_KEY not in metrics
    study_id = StudyRun.of(study).study_id
    [entry] = ledger.rounds()
    assert (entry.study_id, entry.server_round, entry.status) == (study_id + LEDGER_STUDY_SUFFIX, 2, "settled")
    spent = ledger.epsilon(study.accountant, study.delta)
    assert spent > 0

    received = build_model(study, seed=study.training_seed).state_dict()
    personalized = PersonalizedStore(tmp_path / "ledger", study_id, site.name).find(received)
    assert personalized is not None and (tmp_path / "ledger" / PERSONALIZED_DIR / f"{study_id}.pt").is_file()
    changed = {name for name in received if not torch.equal(received[name], personalized[name])}
    assert changed and all(name.startswith("heads.") for name in changed), changed

    again = _evaluate(study, site, tmp_path, server_round=2)  # the evaluate asked again: reuse, no second charge
    assert len(ledger.rounds()) == 1 and ledger.epsilon(study.accountant, study.delta) == spent
    assert again == metrics


def test_personalization_is_off_by_default(small_cohort: Path, tmp_path: Path) -> None:
    site = _site(small_cohort)
    study = small_study(small_cohort, num_server_rounds=1)
    assert study.personalization_epochs == 0
    metrics = _evaluate(study, site, tmp_path, server_round=1)
    assert not any(key.startswith("personalized-") for key in metrics) and PERSONALIZATION_REFUSED_KEY not in metrics
    assert _ledger(site, tmp_path).rounds() == [] and not (tmp_path / "ledger" / PERSONALIZED_DIR).exists()


def test_personalization_over_the_site_budget_is_refused_and_the_global_metrics_still_sent(
        small_cohort: Path, tmp_path: Path) -> None:
    site = _site(small_cohort)
    study = small_study(small_cohort, num_server_rounds=1, personalization_epochs=1)
    metrics = _evaluate(study, site, tmp_path, server_round=1, policy=replace(SMALL_COHORT_POLICY, max_epsilon=0.01))
    assert metrics[PERSONALIZATION_REFUSED_KEY] == 1.0 and "c-index" in metrics
    assert not any(key.startswith("personalized-") for key in metrics)
    assert _ledger(site, tmp_path).rounds() == [] and not (tmp_path / "ledger" / PERSONALIZED_DIR).exists()

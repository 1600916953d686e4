"""A site asked to train a round it already answered for the same study and global model replays its stored
reply: same weights, no second training, no second charge. Through the real ClientApp."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from flower_site import call_site, deployed_node_config, instruction, site_context, small_study
from flwr.app import ArrayRecord, Message

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import LedgerRound, PrivacyLedger, dataset_id
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.protocol import SITE_REFUSAL_CODE
from fedfusion.site.client_app import app
from fedfusion.site.round_replay import RoundReplay
from fedfusion.site.site_round import STORED_REPLY_RULE
from fedfusion.study.identity import derived_study_id


def _entries(ledger: PrivacyLedger, study: str, server_round: int) -> list[LedgerRound]:
    """The ledger's entries of one study round (more than one when it was charged again)."""
    return [r for r in ledger.rounds() if (r.study_id, r.server_round) == (study, server_round)]


def _weights(reply: Message) -> dict[str, torch.Tensor]:
    assert not reply.has_error(), reply.error
    return reply.content.array_records["arrays"].to_torch_state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_asked_twice_is_replayed_without_training_or_spending_again(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    ledger = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    first = call_site("train", study, config, server_round=1)
    spent = ledger.epsilon(study.accountant, study.delta)
    second = call_site("train", study, config, server_round=1)  # a fresh process: the coordinator resumed
    assert _same(_weights(first), _weights(second))
    assert dict(first.content["metrics"]) == dict(second.content["metrics"])
    assert ledger.epsilon(study.accountant, study.delta) == spent
    (entry,) = _entries(ledger, derived_study_id(study), 1)
    assert entry.status == "settled"
    sent = [e for e in EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries() if e["kind"] == "train"]
    assert len(sent) == 2 and sent[0]["arrays"] == sent[1]["arrays"]  # both answers are on the record

    # The next round is trained and charged as usual, and drops the stored reply of round 1.
    call_site("train", study, config, server_round=2)
    assert ledger.epsilon(study.accountant, study.delta) > spent
    replies = RoundReplay(tmp_path / "ledger", ledger.dataset, derived_study_id(study))
    assert not replies.path(1).exists() and replies.path(2).exists()


def test_other_global_weights_or_another_study_are_trained_and_charged_again(small_cohort: Path,
                                                                             tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    ledger = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    first = call_site("train", study, config, server_round=1)

    other_model = instruction("train", study, server_round=1)
    other_model.content["arrays"] = ArrayRecord(_weights(first))
    retrained = app(other_model, site_context(study, config))
    assert not _same(_weights(first), _weights(retrained))
    assert [r.status for r in _entries(ledger, derived_study_id(study), 1)] == ["settled", "settled"]

    assert not call_site("train", study, config, server_round=1, study_id="trial-7").has_error()
    assert len(_entries(ledger, "trial-7", 1)) == 1 and len(ledger.rounds()) == 3


def test_round_charged_but_killed_before_its_reply_is_charged_again(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    ledger = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    # What a site killed during training leaves: the round charged, nothing stored, nothing sent.
    ledger.charge(run_id=1, server_round=1, planned=[(1.0, 0.25, 8)], policy=SitePolicy(),
                  study_id=derived_study_id(study))
    before = ledger.epsilon(study.accountant, study.delta)
    assert not call_site("train", study, config, server_round=1).has_error()
    assert [r.status for r in _entries(ledger, derived_study_id(study), 1)] == ["charged", "settled"]
    assert ledger.epsilon(study.accountant, study.delta) > before


@pytest.mark.parametrize("damage", [b"", b"not a torch file", b"torn"])
def test_unreadable_stored_reply_is_refused_naming_the_rule_and_no_path(
        small_cohort: Path, tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    call_site("train", study, config, server_round=1)
    replies = RoundReplay(tmp_path / "ledger", dataset_id(site.name, site.site_dir), derived_study_id(study))
    replies.path(1).write_bytes(damage)
    with caplog.at_level(logging.WARNING):
        again = call_site("train", study, config, server_round=1)
    assert again.has_error() and again.error.code == SITE_REFUSAL_CODE
    assert again.error.reason == f"site {site.name} refuses round 1: {STORED_REPLY_RULE}"
    assert str(tmp_path) not in again.error.reason and "/" not in again.error.reason
    (recorded,) = [e for e in EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries() if e["kind"] == "error"]
    assert recorded["error"]["reason"] == again.error.reason  # what left is what was recorded: no path either
    assert str(replies.path(1)) in caplog.text and "refusing to train round 1" in caplog.text  # the detail stays local

"""The egress gate on the site's error replies: a refusal is recorded (kind, code, rule, round, no patient data)
before it leaves, and one the site cannot record is not sent: a fixed content-free error (code 3003) goes
instead, itself recorded whenever the record takes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flower_site import call_site, deployed_node_config, small_study

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.privacy.egress_head import HEAD_FILE
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.protocol import EGRESS_ERROR_CODE, SITE_REFUSAL_CODE
from fedfusion.site.egress_gate import PAYLOAD_DIR, WITHHELD_REASON
from fedfusion.site.site_round import PREPARED_FEATURES_RULE


def _unprepared_site(cohort: Path, tmp_path: Path, policy: str = "") -> dict[str, str]:
    """A site whose features are not prepared: every round is refused, without training."""
    site = read_cohort_index(cohort).sites[1]
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy)
    return deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", policy_file, prepared=False)


def test_a_refusal_is_recorded_with_its_code_rule_and_round(small_cohort: Path, tmp_path: Path) -> None:
    reply = call_site("train", small_study(small_cohort), _unprepared_site(small_cohort, tmp_path), server_round=5)
    assert reply.has_error() and reply.error.code == SITE_REFUSAL_CODE
    (recorded,) = EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()
    assert (recorded["kind"], recorded["round"], recorded["arrays"], recorded["metrics"]) == ("error", 5, [], {})
    assert recorded["error"] == {"code": SITE_REFUSAL_CODE, "reason": reply.error.reason,
                                 "rule": PREPARED_FEATURES_RULE}


def test_a_withheld_reply_is_itself_recorded_when_the_record_takes_it(small_cohort: Path, tmp_path: Path) -> None:
    config = _unprepared_site(small_cohort, tmp_path, "keep-egress-payloads = true\n")
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / PAYLOAD_DIR).write_text("a file where the payload folder should be")
    reply = call_site("evaluate", small_study(small_cohort), config, server_round=4)
    assert reply.has_error() and reply.error.code == EGRESS_ERROR_CODE and not reply.has_content()
    (recorded,) = EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()
    assert (recorded["kind"], recorded["round"]) == ("error", 4)
    assert recorded["error"] == {"code": EGRESS_ERROR_CODE, "reason": WITHHELD_REASON, "rule": None}


def _record_is_a_folder(ledger: Path) -> None:
    (ledger / EGRESS_FILE).mkdir(parents=True)


def _head_file_is_a_folder(ledger: Path) -> None:
    (ledger / HEAD_FILE).mkdir(parents=True)


def _record_cut_at_its_end(ledger: Path) -> None:
    record = EgressRecord(ledger / EGRESS_FILE)
    record.append({"round": 1, "kind": "train"})
    record.append({"round": 2, "kind": "train"})
    lines = record.path.read_bytes().splitlines(keepends=True)
    record.path.write_bytes(lines[0])


def _recorded(ledger: Path) -> bytes:
    record = ledger / EGRESS_FILE
    return record.read_bytes() if record.is_file() else b""


UNRECORDABLE: dict[str, Callable[[Path], None]] = {
    "a folder in place of the record": _record_is_a_folder,
    "a folder in place of the head file": _head_file_is_a_folder,
    "a record cut short of its head file": _record_cut_at_its_end,
}


@pytest.mark.parametrize("block", UNRECORDABLE)
def test_an_error_reply_that_cannot_be_recorded_is_not_sent(small_cohort: Path, tmp_path: Path, block: str) -> None:
    config = _unprepared_site(small_cohort, tmp_path)
    UNRECORDABLE[block](tmp_path / "ledger")
    before = _recorded(tmp_path / "ledger")
    reply = call_site("train", small_study(small_cohort), config, server_round=3)
    assert reply.has_error() and reply.error.code == EGRESS_ERROR_CODE and not reply.has_content()
    assert reply.error.reason == WITHHELD_REASON  # not the refusal, which could not be recorded
    assert _recorded(tmp_path / "ledger") == before  # nothing recorded, nothing sent but the fixed error

"""The egress record: hash-chained, tamper-evident, written by the ClientApp's mod for every reply, error replies
included, with the size and hash of the real serialized bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flower_site import call_site, deployed_node_config, small_study

from fedfusion.cli import main
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.errors import PrivacyError
from fedfusion.privacy import egress_record
from fedfusion.privacy.egress_record import EGRESS_FILE, GENESIS, EgressRecord, LineHashes, serialize


def _record(tmp_path: Path, count: int = 3) -> EgressRecord:
    record = EgressRecord(tmp_path / EGRESS_FILE)
    for number in range(count):
        record.append({"round": number, "kind": "train", "metrics": {"m/epsilon": 0.5 * number}})
    return record


def test_entries_chain_to_the_previous_line(tmp_path: Path) -> None:
    record = _record(tmp_path)
    lines = record.path.read_bytes().splitlines()
    entries = record.entries()
    assert [e["seq"] for e in entries] == [0, 1, 2] and entries[0]["prev"] == GENESIS
    assert [e["prev"] for e in entries[1:]] == [hashlib.sha256(line).hexdigest() for line in lines[:-1]]
    assert record.verify_chain() == 3


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
def test_tampering_breaks_the_chain(tmp_path: Path, tamper: str) -> None:
    record = _record(tmp_path)
    lines = record.path.read_bytes().splitlines()
    if tamper == "edit":
        lines[1] = lines[1].replace(b'"m/epsilon": 0.5', b'"m/epsilon": 0.1')
    elif tamper == "delete":
        del lines[1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    record.path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(PrivacyError, match="chain broken at line"):
        record.verify_chain()
    assert main(["site", "egress", str(record.path), "--verify"]) == 2


def test_client_app_records_each_reply_with_its_serialized_bytes(small_cohort: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    site = read_cohort_index(small_cohort).sites[1]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    train, evaluate = call_site("train", study, config, 3), call_site("evaluate", study, config, 3)
    record = EgressRecord(tmp_path / "ledger" / EGRESS_FILE)
    sent, evaluated = record.entries()
    payload = serialize(train)
    assert (sent["kind"], sent["round"], sent["bytes"]) == ("train", 3, len(payload))
    assert sent["sha256"] == hashlib.sha256(payload).hexdigest()
    arrays = train.content["arrays"]
    assert [(a["name"], a["shape"]) for a in sent["arrays"]] == [(f"arrays/{k}", list(v.shape))
                                                                 for k, v in arrays.items()]
    assert sent["dp"]["epsilon"] == train.content["metrics"]["epsilon"] > 0
    assert evaluated["kind"] == "evaluate" and evaluated["sha256"] == hashlib.sha256(serialize(evaluate)).hexdigest()
    assert evaluated["arrays"] == [] and evaluated["dp"] is None
    assert main(["site", "egress", str(tmp_path / "ledger"), "--verify"]) == 0
    assert main(["site", "egress", str(tmp_path / "ledger")]) == 0
    assert main(["site", "privacy", str(tmp_path / "ledger")]) == 0
    out = capsys.readouterr().out
    assert "hash chain intact over 2 entries" in out and f"site {site.name}  dataset" in out


def test_a_reply_that_cannot_be_recorded_is_withheld(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[1]
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the ledger folder should be")
    reply = call_site("evaluate", small_study(small_cohort),
                      deployed_node_config(site, tmp_path / "cache", blocked))
    assert reply.has_error() and reply.error.code == 3003 and not reply.has_content()
    assert reply.error.reason == "site egress record unavailable; reply withheld"


def test_line_hashes_are_computed_as_asked_and_equal_the_whole_records(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    record = _record(tmp_path, count=5)
    lines = record.path.read_bytes().split(b"\n")[:-1]
    hashed: list[bytes] = []
    monkeypatch.setattr(egress_record, "_sha256", lambda line: hashed.append(line) or hashlib.sha256(line).hexdigest())
    hashes = LineHashes(lines)
    assert hashes[-1] == hashes[4] == hashlib.sha256(lines[-1]).hexdigest() and hashed == [lines[-1]]  # an append's
    assert list(hashes) == hashes[:] == record.line_hashes() and hashes.index(hashes[2]) == 2
    with pytest.raises(IndexError):
        hashes[5]

"""Pinning the egress record's head: ``fedfusion site egress --verify`` prints ``HASH:COUNT``; a head pinned
elsewhere (``--expect-head``, ``--expect-head-file``) makes a record cut at its end, emptied or deleted fail, which
the hash chain alone cannot show. The site's own head file catches the same until both are rewritten."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from fedfusion.cli import main
from fedfusion.errors import PrivacyError
from fedfusion.privacy.egress_head import HEAD_FILE
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord


def _record(folder: Path, count: int = 3) -> EgressRecord:
    record = EgressRecord(folder / EGRESS_FILE)
    for number in range(count):
        record.append({"round": number, "kind": "train", "metrics": {"m/epsilon": 0.5 * number}})
    return record


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["site", "egress", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _head_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("head ")]
    return line.removeprefix("head ")


def test_an_honest_record_verifies_and_prints_its_head_to_pin(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    last = record.path.read_bytes().splitlines()[-1]
    code, out = _verify(capsys, str(tmp_path), "--verify", "--write-head", str(tmp_path / "pinned" / "head"))
    assert code == 0 and "hash chain intact over 3 entries" in out
    assert _head_line(out) == f"{hashlib.sha256(last).hexdigest()}:3"
    assert (tmp_path / "pinned" / "head").read_text() == f"{_head_line(out)}\n"
    assert (tmp_path / HEAD_FILE).read_text() == f"{_head_line(out)}\n"  # the site's own head file agrees
    pinned = _head_line(out)
    record.append({"round": 3, "kind": "evaluate"})  # the record grows after the pin: still holds it
    for pin in (["--expect-head", pinned], ["--expect-head", pinned.split(":")[0]],
                ["--expect-head-file", str(tmp_path / "pinned" / "head")]):
        code, out = _verify(capsys, str(record.path), *pin)
        assert code == 0 and "intact over 4 entries" in out and "at entry 3 (1 entries since)" in out, out
        assert _head_line(out).endswith(":4")


def _edit_last(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b'"m/epsilon": 1.0', b'"m/epsilon": 0.1'))


def _delete_last(path: Path) -> None:
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))


def _cut_mid_line(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


TAMPERING: dict[str, Callable[[Path], None]] = {
    "last line edited": _edit_last,
    "last line deleted": _delete_last,
    "cut inside the last line": _cut_mid_line,
    "emptied": lambda path: path.write_bytes(b""),
    "deleted": lambda path: path.unlink(),
}


@pytest.mark.parametrize("tamper", TAMPERING)
def test_a_pinned_head_catches_every_cut_edit_or_deletion(tmp_path: Path, tamper: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path / "ledger")
    code, out = _verify(capsys, str(record.path), "--verify", "--write-head", str(tmp_path / "pinned.head"))
    pinned = _head_line(out)
    TAMPERING[tamper](record.path)
    (tmp_path / "ledger" / HEAD_FILE).unlink()  # whoever tampered also removed the site's own head file
    for pin in (["--expect-head", pinned], ["--expect-head", pinned.split(":")[0]],
                ["--expect-head-file", str(tmp_path / "pinned.head")]):
        code, out = _verify(capsys, str(tmp_path / "ledger"), *pin)
        assert code == 2 and "intact" not in out and "\nhead " not in out, (pin, out)
        assert f"egress record {record.path}" in out
        assert any(word in out for word in ("rewritten", "cut at its end", "emptied or deleted", "incomplete")), out


def test_a_short_record_fails_against_the_pinned_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    _delete_last(record.path)
    code, out = _verify(capsys, str(record.path), "--expect-head", "ab" * 32 + ":3")
    assert code == 2 and "has 2 entries, fewer than the 3 that --expect-head pins" in out


def test_without_a_pin_an_empty_or_missing_record_is_not_called_intact(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / EGRESS_FILE
    code, out = _verify(capsys, str(missing), "--verify")
    assert code == 1 and "intact" not in out and "does not exist" in out
    assert "cannot be told from an emptied or deleted one without a head pinned elsewhere" in out
    missing.write_bytes(b"")
    code, out = _verify(capsys, str(missing), "--verify")
    assert code == 1 and "is empty" in out and "intact" not in out


def test_the_sites_own_head_file_catches_a_cut_and_the_site_stops_recording(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    _delete_last(record.path)
    code, out = _verify(capsys, str(tmp_path), "--verify")
    assert code == 2 and f"fewer than the 3 that the site's head file {tmp_path / HEAD_FILE} pins" in out
    with pytest.raises(PrivacyError, match="fewer than the 3"):
        record.append({"round": 9, "kind": "train"})
    assert len(record.path.read_bytes().splitlines()) == 2  # nothing was added after the cut


def test_a_torn_last_line_fails_and_is_not_appended_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    (tmp_path / HEAD_FILE).unlink()
    _cut_mid_line(record.path)
    code, out = _verify(capsys, str(tmp_path), "--verify")
    assert code == 2 and "its last line (line 3) is incomplete" in out and "intact" not in out
    torn = record.path.read_bytes()
    with pytest.raises(PrivacyError, match="incomplete"):
        record.append({"round": 9, "kind": "train"})
    assert record.path.read_bytes() == torn


def test_a_malformed_pin_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _record(tmp_path)
    code, out = _verify(capsys, str(tmp_path), "--expect-head", "not-a-hash")
    assert code == 2 and "--expect-head: 'not-a-hash' is not an egress head" in out
    code, out = _verify(capsys, str(tmp_path), "--expect-head-file", str(tmp_path / "nowhere"))
    assert code == 2 and f"egress head file {tmp_path / 'nowhere'} cannot be read" in out

"""The head of an egress record: the last line's hash and the number of entries, written ``HASH:COUNT``.

A hash chain alone shows an edited or reordered line, but not a record cut at its end, emptied or deleted: what
is left still chains. A head noted elsewhere (a pin) closes that gap: the pinned entry must still be in the
record, with the pinned hash. The site also keeps its own head file beside the record (``egress.head``, written
atomically after each append); it catches a cut record as long as nobody rewrote both, which is why an admin
also pins a head outside the site's folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import PrivacyError

HEAD_FILE = "egress.head"
"""The site's own head file, beside ``egress.jsonl``."""
GENESIS = "0" * 64
"""The head of an empty record (and the ``prev`` of the first line)."""

_HEAD = re.compile(r"(?P<hash>[0-9a-f]{64})(:(?P<count>\d+))?")


@dataclass(frozen=True)
class EgressHead:
    """A record's head: the sha256 of its last line (``GENESIS`` when empty) and its entry count.

    A pin may give the hash alone (``count`` None): it then matches wherever that line is in the record.
    """

    hash: str
    count: int | None

    def __str__(self) -> str:
        return self.hash if self.count is None else f"{self.hash}:{self.count}"


def head_of(line_hashes: list[str]) -> EgressHead:
    """The head of a record whose lines hash to ``line_hashes`` (``GENESIS:0`` when it has none)."""
    return EgressHead(line_hashes[-1] if line_hashes else GENESIS, len(line_hashes))


def parse_head(text: str, source: str) -> EgressHead:
    """The head written in ``text`` (``HASH`` or ``HASH:COUNT``); ``PrivacyError`` naming ``source`` otherwise."""
    match = _HEAD.fullmatch(text.strip().lower())
    if match is None:
        raise PrivacyError(f"{source}: {text.strip()[:80]!r} is not an egress head (64 hex digits, optionally "
                           f"':' and the entry count, as 'fedfusion site egress --verify' prints it)")
    count = match.group("count")
    return EgressHead(match.group("hash"), None if count is None else int(count))


def read_head_file(path: Path) -> EgressHead:
    """The head kept in the file ``path``; ``PrivacyError`` if it is missing or holds no head."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrivacyError(f"egress head file {path} cannot be read ({exc.__class__.__name__}: {exc})") from exc
    return parse_head(text, f"egress head file {path}")


def write_head_file(path: Path, head: EgressHead) -> None:
    """Replace ``path`` atomically with ``head`` (one line)."""
    atomic_write_text(Path(path), f"{head}\n")


def check_head(record: Path, line_hashes: Sequence[str], pinned: EgressHead, source: str) -> int:
    """The entry count at which ``pinned`` (from ``source``) is found in the record whose lines hash to
    ``line_hashes``; ``PrivacyError`` saying how the record falls short (deleted, emptied, cut, rewritten)."""
    pin = f"{source} pins {pinned}"
    if pinned.hash == GENESIS and pinned.count in (None, 0):
        return 0
    if not line_hashes:
        state = "is empty" if record.exists() else "does not exist"
        raise PrivacyError(f"egress record {record} {state}, but {pin}: it was emptied or deleted")
    if pinned.count is None:
        if pinned.hash not in line_hashes:
            raise PrivacyError(f"egress record {record} has no entry hashing to the pinned head "
                               f"({len(line_hashes)} entries), but {pin}: it was cut at its end or rewritten")
        return line_hashes.index(pinned.hash) + 1
    if len(line_hashes) < pinned.count:
        raise PrivacyError(f"egress record {record} has {len(line_hashes)} entries, fewer than the "
                           f"{pinned.count} that {pin}: it was cut at its end")
    found = line_hashes[pinned.count - 1] if pinned.count else GENESIS
    if found != pinned.hash:
        raise PrivacyError(f"egress record {record}: entry {pinned.count} hashes to {found[:16]}..., but {pin}: "
                           f"the record was rewritten")
    return pinned.count

"""The egress record: what a site sent, written at the site before it is sent, with a hash chain.

Append-only JSON lines in ``<ledger_dir>/egress.jsonl``. Each line is one outgoing message::

    {"seq": 0, "time": ISO, "prev": SHA256 of the previous line's bytes (64 zeros for the first),
     "run_id", "round", "kind": "train" | "evaluate" | "error", "bytes", "sha256",
     "arrays": [{"name", "dtype", "shape", "l2"}], "metrics": {name: value}, "configs": {name: value},
     "error": {"code", "reason", "rule"} | null,
     "dp": {"epsilon", "delta", "noise-multiplier", "max-grad-norm"} | null, "secure-aggregation": true | false}

``secure-aggregation`` is true for the messages of a secure-aggregation round (a train reply with public keys
instead of weights, and the ``query`` stage answers: encrypted shares, the masked vector, unmask shares).
An error reply records its code, its fixed public reason and, for a refusal, the site's rule; never exception text,
a path or patient data (the reply carries none).

``bytes``/``sha256`` are of the message as Flower's own protobuf serialization writes it
(``flwr.common.serde.message_to_proto``, through ``fedfusion.flower_compat``). Editing, removing or reordering any
line breaks the chain from there on; ``verify_chain`` finds the first broken line. Every line ends with a newline:
a last line without one is torn (a crash while writing it, whose reply was never sent, or a cut) and fails.

A chain cannot show a record cut at its end, emptied or deleted; its head (``egress_head``: the last line's hash
and the count) can, when it is kept elsewhere. Each append also rewrites the site's own head file
``egress.head`` beside the record, and refuses (nothing written, so nothing sent) when the record falls short of
it or its last line is torn.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import numpy as np
from flwr.app import Message

from fedfusion.errors import PrivacyError
from fedfusion.flower_compat import message_to_bytes
from fedfusion.privacy.egress_head import GENESIS, HEAD_FILE, EgressHead, check_head, read_head_file, write_head_file
from fedfusion.protocol import DP_METRIC_KEYS, SECAGG_RECORD

EGRESS_FILE = "egress.jsonl"
DP_METRICS = DP_METRIC_KEYS


def serialize(message: Message) -> bytes:
    """The message's bytes as Flower's protobuf serialization writes them."""
    return message_to_bytes(message)


def describe(message: Message, payload: bytes, server_round: int, rule: str | None = None) -> dict[str, Any]:
    """The record entry of an outgoing ``message`` whose serialized form is ``payload`` (without seq/prev/time);
    ``rule``: the site rule an error reply refuses under."""
    entry: dict[str, Any] = {
        "run_id": message.metadata.run_id, "round": server_round,
        "kind": "error" if message.has_error() else message.metadata.message_type.split(".")[0],
        "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
        "arrays": [], "metrics": {}, "configs": {}, "error": None, "dp": None,
        "secure-aggregation": not message.has_error() and SECAGG_RECORD in message.content.config_records,
    }
    if message.has_error():
        entry["error"] = {"code": message.error.code, "reason": message.error.reason, "rule": rule}
        return entry
    for record_name, arrays in message.content.array_records.items():
        for name, array in arrays.items():
            values = array.numpy()
            entry["arrays"].append({"name": f"{record_name}/{name}", "dtype": str(values.dtype),
                                    "shape": list(values.shape),
                                    "l2": float(np.linalg.norm(values.astype(np.float64)))})
    for record_name, metrics in message.content.metric_records.items():
        entry["metrics"].update({f"{record_name}/{k}": v for k, v in metrics.items()})
    for record_name, configs in message.content.config_records.items():
        entry["configs"].update({f"{record_name}/{k}": v for k, v in configs.items() if not _is_bytes(v)})
    dp = {key: value for name, value in entry["metrics"].items() for key in DP_METRICS if name.endswith(f"/{key}")}
    entry["dp"] = dp or None
    return entry


def _is_bytes(value: object) -> bool:
    """Bytes (keys, ciphertexts, shares) are recorded by the message's hash only, not written out."""
    return isinstance(value, bytes) or (isinstance(value, list) and any(isinstance(v, bytes) for v in value))


class EgressRecord:
    """The append-only, hash-chained record in one JSON-lines file, with the site's head file beside it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.head_file = self.path.with_name(HEAD_FILE)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add ``entry`` with its sequence number, time and the previous line's hash; fsync, then update the head
        file. ``PrivacyError`` (nothing written) when the last line is torn or the record falls short of its head
        file (cut, emptied or deleted since)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            handle.seek(0)
            hashes = LineHashes(self._lines(handle.read()))
            if self.head_file.exists():
                check_head(self.path, hashes, read_head_file(self.head_file), f"its head file {self.head_file}")
            full = {"seq": len(hashes), "time": datetime.now(UTC).isoformat(),
                    "prev": hashes[-1] if hashes else GENESIS, **entry}
            line = json.dumps(full, sort_keys=True).encode()
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            write_head_file(self.head_file, EgressHead(_sha256(line), len(hashes) + 1))
        return full

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first (empty when nothing was sent)."""
        if not self.path.exists():
            return []
        try:
            return [json.loads(line) for line in self.path.read_bytes().splitlines()]
        except json.JSONDecodeError as exc:
            raise PrivacyError(f"egress record {self.path}: line {exc.lineno} is not JSON ({exc.msg})") from exc

    def line_hashes(self) -> list[str]:
        """The sha256 of every line, oldest first, once each is whole and chains to the one before; ``PrivacyError``
        naming the first broken line. Empty when the record is empty or missing (which the chain cannot tell
        from a deleted record: check a pinned head, ``egress_head.check_head``)."""
        if not self.path.exists():
            return []
        prev = GENESIS
        hashes = []
        for number, line in enumerate(self._lines(self.path.read_bytes())):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PrivacyError(f"egress record {self.path}: line {number + 1} is not JSON ({exc.msg})") from exc
            if not isinstance(entry, dict):
                raise PrivacyError(f"egress record {self.path}: line {number + 1} is not a JSON object")
            if entry.get("seq") != number or entry.get("prev") != prev:
                raise PrivacyError(f"egress record {self.path}: chain broken at line {number + 1} "
                                   f"(seq {entry.get('seq')}, prev {str(entry.get('prev'))[:12]}, "
                                   f"expected {prev[:12]})")
            prev = _sha256(line)
            hashes.append(prev)
        return hashes

    def verify_chain(self) -> int:
        """The number of entries if every line chains to the one before; ``PrivacyError`` naming the first break."""
        return len(self.line_hashes())

    def _lines(self, data: bytes) -> list[bytes]:
        """``data``'s lines; ``PrivacyError`` when the last one has no newline (torn or cut)."""
        lines = data.split(b"\n")
        if lines[-1]:
            raise PrivacyError(f"egress record {self.path}: its last line (line {len(lines)}) is "
                               f"incomplete, a torn write or a cut; a reply torn while being recorded was never "
                               f"sent (keep a copy, remove that partial line, then verify again)")
        return lines[:-1]


def _sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


class LineHashes(Sequence[str]):
    """The sha256 of each of ``lines``, each computed when first asked: an append needs the last line's and the
    one its head file pins (the same one, unless the record was cut), not the whole record's (it grows for as
    long as the site runs studies)."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines
        self._hashes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = range(len(self))[index]  # IndexError beyond the end, as a list's
        if position not in self._hashes:
            self._hashes[position] = _sha256(self._lines[position])
        return self._hashes[position]

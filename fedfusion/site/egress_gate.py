"""The last step of every site reply: written into the site's egress record, then released to Flower.

Every reply the ClientApp sends, error replies included, passes through ``release`` (``client_app.answer``
calls it last). With the policy's ``keep-egress-payloads``, the serialized message is also kept as
``<ledger_dir>/egress-payloads/<sha256>.pb`` (written first, so every record line has its payload). If the record
cannot be written (unwritable folder, a torn last line, a record short of its head file), the reply is withheld
and replaced by a content-free error, itself recorded when the record takes it. That fixed error (code and reason
constant, nothing from the site) is the only message that can leave unrecorded: sending nothing instead would let
Flower send the exception's text. A site whose policy could not be read keeps no payload copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Error, Message

from fedfusion.atomic_io import atomic_write_bytes
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord, describe, serialize
from fedfusion.protocol import EGRESS_ERROR_CODE

logger = logging.getLogger(__name__)

PAYLOAD_DIR = "egress-payloads"
WITHHELD_REASON = "site egress record unavailable; reply withheld"
"""The reason of the error sent instead of a reply that could not be recorded."""


def release(msg: Message, reply: Message, ledger_dir: Path, *, server_round: int, keep_payload: bool,
            rule: str | None = None) -> Message:
    """``reply`` to ``msg`` once it is on the egress record in ``ledger_dir`` (``rule``: the site rule an error
    reply refuses under); the content-free error ``withheld`` otherwise."""
    try:
        _record(reply, ledger_dir, server_round, keep_payload=keep_payload, rule=rule)
    except Exception:  # an unrecorded reply must not leave; details stay in the site's log
        logger.exception("egress record in %s could not be written; reply withheld", ledger_dir)
        return withheld(msg, ledger_dir, server_round)
    return reply


def withheld(msg: Message, ledger_dir: Path | None, server_round: int = 0) -> Message:
    """The error a site sends instead of a reply it cannot record; recorded in ``ledger_dir`` if that works."""
    error = Message(Error(code=EGRESS_ERROR_CODE, reason=WITHHELD_REASON), reply_to=msg)
    if ledger_dir is None:
        logger.error("no egress record to write to; the fixed error %d leaves unrecorded", EGRESS_ERROR_CODE)
        return error
    try:
        _record(error, ledger_dir, server_round, keep_payload=False, rule=None)
    except Exception:
        logger.exception("egress record in %s refuses the fixed error %d too; it leaves unrecorded", ledger_dir,
                         EGRESS_ERROR_CODE)
    return error


def _record(reply: Message, ledger_dir: Path, server_round: int, *, keep_payload: bool, rule: str | None) -> None:
    """Append ``reply`` to the egress record (its payload first when kept); raises when either cannot be written."""
    payload = serialize(reply)
    entry = describe(reply, payload, server_round, rule)
    if keep_payload:
        atomic_write_bytes(ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb", payload)
    EgressRecord(ledger_dir / EGRESS_FILE).append(entry)

"""The last step of every site reply: written into the site's egress record, then released to Flower.

Every reply the ClientApp sends, error replies included, passes through ``release`` (``client_app.answer``
calls it last). With the policy's ``keep-egress-payloads``, the serialized message is also kept as
``<ledger_dir>/egress-payloads/<sha256>.pb`` (written first, so every record line has its payload). If the record
cannot be written, the reply is withheld and replaced by a content-free error. A site whose policy could not be
read keeps no payload copy (its reply is then that error).
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


def release(msg: Message, reply: Message, ledger_dir: Path, *, server_round: int, keep_payload: bool) -> Message:
    """``reply`` to ``msg`` once it is on the egress record in ``ledger_dir``; a content-free error otherwise."""
    try:
        payload = serialize(reply)
        entry = describe(reply, payload, server_round)
        if keep_payload:
            atomic_write_bytes(ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb", payload)
        EgressRecord(ledger_dir / EGRESS_FILE).append(entry)
    except Exception:  # an unrecorded reply must not leave; details stay in the site's log
        logger.exception("egress record in %s could not be written; reply withheld", ledger_dir)
        return withheld(msg)
    return reply


def withheld(msg: Message) -> Message:
    """The error a site sends instead of a reply it cannot record."""
    return Message(Error(code=EGRESS_ERROR_CODE, reason=WITHHELD_REASON), reply_to=msg)

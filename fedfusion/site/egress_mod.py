"""A Flower client mod that writes every outgoing message into the site's egress record before it leaves.

Registered on the ClientApp (``ClientApp(mods=[egress_record_mod])``), it wraps the train and evaluate handlers
and sees their replies, error replies included. With the policy's ``keep-egress-payloads``, the serialized
message is also kept as ``<ledger_dir>/egress-payloads/<sha256>.pb`` (written first, so every record line
has its payload). If the record cannot be written, the reply is withheld and replaced by a content-free error.
An unreadable policy file keeps no payload copy: the handler has then already refused with that error.
"""

from __future__ import annotations

import logging
from typing import cast

from flwr.app import Context, Error, Message

from fedfusion.atomic_io import atomic_write_bytes
from fedfusion.errors import ConfigError
from fedfusion.flower_compat import ClientAppCallable
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord, describe, serialize
from fedfusion.site.node_context import SiteContext, resolve_site_context
from fedfusion.site.site_privacy import resolve_ledger_dir, resolve_site_privacy
from fedfusion.study.config import StudyConfig

logger = logging.getLogger(__name__)

EGRESS_ERROR_CODE = 3003
PAYLOAD_DIR = "egress-payloads"


def egress_record_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the handler, record its reply in the site's egress record, then let Flower send it."""
    reply = call_next(msg, context)
    try:
        site = resolve_site_context(context.node_config, StudyConfig.from_run_config(context.run_config))
        ledger_dir = resolve_ledger_dir(context.node_config, site)
        payload = serialize(reply)
        server_round = int(cast(int, msg.content["config"].get("server-round", 0))) if "config" in msg.content else 0
        entry = describe(reply, payload, server_round)
        if _keeps_payloads(context, site):
            atomic_write_bytes(ledger_dir / PAYLOAD_DIR / f"{entry['sha256']}.pb", payload)
        EgressRecord(ledger_dir / EGRESS_FILE).append(entry)
    except Exception:  # an unrecorded reply must not leave; details stay in the site's log
        logger.exception("egress record could not be written; reply withheld")
        return Message(Error(code=EGRESS_ERROR_CODE, reason="site egress record unavailable; reply withheld"),
                       reply_to=msg)
    return reply


def _keeps_payloads(context: Context, site: SiteContext) -> bool:
    try:
        return resolve_site_privacy(context.node_config, site).policy.keep_egress_payloads
    except ConfigError:
        return False

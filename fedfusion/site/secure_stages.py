"""The site's side of SecAgg+ on Flower's Message API: a train handler wrapper and the stage handler.

A train message with a ``secagg`` record (see `records`) is trained as usual, but the reply keeps the weights
home: the site stores its update (trained minus global weights) and its round secrets in Flower's per-node
``context.state`` and replies with its metrics and its stage-1 public keys. The coordinator then drives stages
2-4 with ``query.secagg`` messages, answered by `stage_handler` from that state. Secrets and the update never
go into a reply; they are forgotten after the masked input (the update) and after the unmask answer or any
refusal (everything), so a round cannot be replayed at a site.

A site whose policy says ``secure-aggregation-mandatory`` refuses a train message without a ``secagg`` record.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedfusion.coordinator.strategies.patient_weighted_fedavg import WEIGHT_KEY
from fedfusion.errors import PrivacyError
from fedfusion.privacy.site_policy import SECURE_AGGREGATION_RULE
from fedfusion.secure_aggregation.site import SecAggSite
from fedfusion.secure_aggregation.wire_records import (
    MASKED_INPUT,
    SECAGG_RECORD,
    SHARE_KEYS,
    UNMASK,
    config_from,
    config_values,
    encrypted_shares_record,
    masked_input_content,
    public_keys_record,
    read_masked_input_request,
    read_share_keys_request,
    read_train_request,
    read_unmask_request,
    stage_of,
    unmask_shares_record,
)
from fedfusion.site.node_context import SiteContext
from fedfusion.site.site_privacy import SitePrivacy
from fedfusion.study.run_config import StudyRun

Handler = Callable[[Message, StudyRun, SiteContext, SitePrivacy], RecordDict]

STATE_RECORD = "secagg-state"
"""``context.state`` ConfigRecord: the round (run id, server round, config) and the site's SecAgg secrets."""
UPDATE_RECORD = "secagg-update"
"""``context.state`` ArrayRecord: the site's update (trained minus global weights) until it is masked."""


def secure_train(train: Handler, state: RecordDict) -> Handler:
    """Wrap the site's train handler so that a secure-aggregation round keeps the weights at the site."""

    def handler(msg: Message, run: StudyRun, site: SiteContext, privacy: SitePrivacy) -> RecordDict:
        forget(state)
        server_round = int(msg.content["config"].get("server-round", 0))
        if stage_of(msg.content) is None:
            if privacy.policy.secure_aggregation_mandatory:
                raise PrivacyError(f"site {site.name} refuses round {server_round} under its privacy policy: "
                                   f"{SECURE_AGGREGATION_RULE}: the coordinator asks plain aggregation")
            return train(msg, run, site, privacy)
        config, site_id = read_train_request(msg.content)
        content = train(msg, run, site, privacy)
        trained = content.array_records["arrays"]
        del content["arrays"]
        initial = msg.content.array_records["arrays"]
        if list(trained) != list(initial):
            raise PrivacyError(f"site {site.name}: trained weights do not match the global model's names")
        update = {name: trained[name].numpy() - initial[name].numpy() for name in initial}
        secagg = SecAggSite(site_id, config, content.metric_records["metrics"][WEIGHT_KEY])  # type: ignore[arg-type]
        content[SECAGG_RECORD] = public_keys_record(secagg.public_keys())
        _keep(state, secagg, {"run-id": str(msg.metadata.run_id), "server-round": server_round})
        state[UPDATE_RECORD] = ArrayRecord({name: Array(np.ascontiguousarray(u)) for name, u in update.items()})
        return content

    return handler


def stage_handler(state: RecordDict) -> Handler:
    """The handler of ``query.secagg`` messages: answer stage 2, 3 or 4 of the round in ``state``."""

    def handler(msg: Message, run: StudyRun, site: SiteContext, privacy: SitePrivacy) -> RecordDict:
        saved = state.config_records.get(STATE_RECORD)
        server_round = int(msg.content["config"].get("server-round", -1)) if "config" in msg.content else -1
        if saved is None or (saved["run-id"], saved["server-round"]) != (str(msg.metadata.run_id), server_round):
            raise PrivacyError(f"site {site.name}: no secure-aggregation round {server_round} in progress here")
        secagg = SecAggSite.from_secrets(saved, config_from(saved))
        stage = stage_of(msg.content)
        try:
            if stage == SHARE_KEYS:
                reply = RecordDict({SECAGG_RECORD: encrypted_shares_record(
                    secagg.share_keys(read_share_keys_request(msg.content)))})
            elif stage == MASKED_INPUT:
                update = {name: array.numpy() for name, array in state.array_records[UPDATE_RECORD].items()}
                masked = secagg.masked_input(read_masked_input_request(msg.content), update)
                del state[UPDATE_RECORD]
                reply = masked_input_content(masked)
            elif stage == UNMASK:
                reply = RecordDict({SECAGG_RECORD: unmask_shares_record(
                    secagg.unmask(read_unmask_request(msg.content)))})
                forget(state)
                return reply
            else:
                raise PrivacyError(f"site {site.name}: unknown secure-aggregation stage {stage!r}")
        except Exception:
            forget(state)
            raise
        _keep(state, secagg, {key: saved[key] for key in ("run-id", "server-round")})  # type: ignore[misc]
        return reply

    return handler


def forget(state: RecordDict) -> None:
    """Drop any secure-aggregation secrets and update kept in ``state``."""
    for name in (STATE_RECORD, UPDATE_RECORD):
        if name in state:
            del state[name]


def _keep(state: RecordDict, secagg: SecAggSite, round_values: dict[str, int | str]) -> None:
    state[STATE_RECORD] = ConfigRecord({**round_values, **config_values(secagg.config), **secagg.secrets()})

"""The site's side of SecAgg+ on Flower's Message API: the round's state between messages, and stages 2-4.

A train message with a ``secagg`` record is a secure round: ``secure_request`` reads it for ``SiteRound.train``,
which trains as usual but keeps the weights home (``SecureUpdate``: the update and the round's SecAgg party).
``keep_round`` stores both in Flower's per-node ``context.state`` and gives the stage-1 public keys for the reply.
The coordinator then drives stages 2-4 with ``query.secagg`` messages, answered by ``answer_stage`` from that
state (in a distributed-DP study the kept update is the clipped gradient sum, and stage 3 adds the site's
noise share in the integer domain before masking). Secrets and the update never go into a reply; they are
forgotten after the masked input (the update) and after the unmask answer or any failure (everything), so a
round cannot be replayed at a site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedfusion.errors import ProtocolError, SiteRefusal
from fedfusion.protocol import (
    SECAGG_RECORD,
    SERVER_ROUND_KEY,
    STAGE_MASKED_INPUT,
    STAGE_SHARE_KEYS,
    STAGE_UNMASK,
)
from fedfusion.secure_aggregation.integer_noise import DistributedNoise
from fedfusion.secure_aggregation.site import SecAggSite
from fedfusion.secure_aggregation.wire_records import (
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
from fedfusion.site.distributed_dp import masked_noisy_sum
from fedfusion.site.site_round import SecureRequest, SecureUpdate

STATE_RECORD = "secagg-state"
"""``context.state`` ConfigRecord: the round (run id, server round, config) and the site's SecAgg secrets."""
UPDATE_RECORD = "secagg-update"
"""``context.state`` ArrayRecord: the site's update (trained minus global weights) until it is masked."""
RUN_ID_KEY = "run-id"
"""The run of the kept round, in ``STATE_RECORD`` (with ``server-round``)."""


def secure_request(content: RecordDict) -> SecureRequest | None:
    """The secure-aggregation request of a train message, or None for a plain round; ``ProtocolError`` if bad."""
    if stage_of(content) is None:
        return None
    config, site_id = read_train_request(content)
    return SecureRequest(config, site_id)


def keep_round(state: RecordDict, secure: SecureUpdate, run_id: int, server_round: int) -> ConfigRecord:
    """Keep a secure round's secrets and update in ``state``; return the stage-1 reply (public keys)."""
    keys = public_keys_record(secure.secagg.public_keys())  # first: it moves the party on to its next stage
    _keep(state, secure.secagg, {RUN_ID_KEY: str(run_id), SERVER_ROUND_KEY: server_round})
    state[UPDATE_RECORD] = ArrayRecord({name: Array(np.ascontiguousarray(u)) for name, u in secure.update.items()})
    return keys


def answer_stage(msg: Message, state: RecordDict, site_name: str, server_round: int,
                 noise: Callable[[], DistributedNoise] | None = None) -> RecordDict:
    """Answer stage 2, 3 or 4 of round ``server_round`` kept in ``state``; forget it after stage 4 or any failure.

    With ``noise`` (a distributed-DP study) the kept update is the clipped gradient sum, which stage 3 turns into
    noisy integer words before masking (``distributed_dp.masked_noisy_sum``); ``noise()`` gives the study's numbers
    and is called at that stage only (calibrating a ``target-epsilon`` takes seconds in a fresh process). A stage
    reads only ``state`` and the message: never the cohort, never torch.
    """
    saved = state.config_records.get(STATE_RECORD)
    if saved is None or (saved[RUN_ID_KEY], saved[SERVER_ROUND_KEY]) != (str(msg.metadata.run_id), server_round):
        raise SiteRefusal(site_name, f"no secure-aggregation round {server_round} in progress here",
                          request="the secure-aggregation stage")
    kept: Mapping[str, Any] = saved  # the values SecAggSite.secrets() wrote into the record
    secagg = SecAggSite.from_secrets(kept, config_from(saved))
    stage = stage_of(msg.content)
    try:
        if stage == STAGE_SHARE_KEYS:
            reply = RecordDict({SECAGG_RECORD: encrypted_shares_record(
                secagg.share_keys(read_share_keys_request(msg.content)))})
        elif stage == STAGE_MASKED_INPUT:
            update = {name: array.numpy() for name, array in state.array_records[UPDATE_RECORD].items()}
            ciphertexts = read_masked_input_request(msg.content)
            masked = (secagg.masked_input(ciphertexts, update) if noise is None
                      else masked_noisy_sum(secagg, ciphertexts, update, noise()))
            del state[UPDATE_RECORD]
            reply = masked_input_content(masked)
        elif stage == STAGE_UNMASK:
            reply = RecordDict({SECAGG_RECORD: unmask_shares_record(
                secagg.unmask(read_unmask_request(msg.content)))})
            forget(state)
            return reply
        else:
            raise ProtocolError(f"site {site_name}: unknown secure-aggregation stage {stage!r}")
    except Exception:
        forget(state)
        raise
    _keep(state, secagg, {RUN_ID_KEY: str(saved[RUN_ID_KEY]), SERVER_ROUND_KEY: server_round})
    return reply


def forget(state: RecordDict) -> None:
    """Drop any secure-aggregation secrets and update kept in ``state``."""
    for name in (STATE_RECORD, UPDATE_RECORD):
        if name in state:
            del state[name]


def _keep(state: RecordDict, secagg: SecAggSite, round_values: dict[str, int | str]) -> None:
    state[STATE_RECORD] = ConfigRecord({**round_values, **config_values(secagg.config), **secagg.secrets()})

"""The SecAgg+ stage data as Flower records: what travels in a Message, and back.

Every stage message and reply holds one ConfigRecord under `SECAGG_RECORD` whose "stage" names the step;
the masked vector travels as the ArrayRecord `MASKED_RECORD`. Site ids are the 1-based positions the
coordinator gave the round's sites, not Flower node ids (which need not fit a signed 64-bit record value).

    train message   "secagg": {stage="train", site-id, num-sites, threshold, clipping-range, quantization-range}
    train reply     "secagg": {stage="keys", site-id, encryption-key, masking-key, weight}
    query.secagg    "secagg": {stage="share-keys", sites, encryption-keys, masking-keys, weights}
      reply         "secagg": {stage="share-keys", site-id, recipients, ciphertexts}
    query.secagg    "secagg": {stage="masked-input", senders, ciphertexts}
      reply         "secagg": {stage="masked-input", site-id, layout}   + "masked": {"vector": uint64}
    query.secagg    "secagg": {stage="unmask", survivors, dropouts}
      reply         "secagg": {stage="unmask", site-id, self-mask-sites, self-mask-shares, masking-key-sites,
                               masking-key-shares}
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
)

SECAGG_RECORD = "secagg"
MASKED_RECORD = "masked"
QUERY_ACTION = "secagg"
"""Stage messages are Flower ``query`` messages of this action: message type ``query.secagg``."""

TRAIN, KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK = "train", "keys", "share-keys", "masked-input", "unmask"


def stage_of(content: RecordDict) -> str | None:
    """The SecAgg stage a message or reply carries, or None when it carries none."""
    record = content.config_records.get(SECAGG_RECORD)
    return None if record is None else str(record.get("stage"))


def _record(content: RecordDict, stage: str) -> ConfigRecord:
    record = content.config_records.get(SECAGG_RECORD)
    if record is None or record.get("stage") != stage:
        raise PrivacyError(f"secure aggregation: expected a '{stage}' record, got {stage_of(content)!r}")
    return record


def config_values(config: SecAggConfig) -> dict[str, int | float]:
    """The SecAgg numbers as record values (read back by `config_from`)."""
    return {"num-sites": config.num_sites, "threshold": config.threshold, "clipping-range": config.clipping_range,
            "quantization-range": config.quantization_range}


def train_request(config: SecAggConfig, site_id: int) -> ConfigRecord:
    """What a train message tells one site: its id and the round's SecAgg numbers."""
    return ConfigRecord({"stage": TRAIN, "site-id": site_id, **config_values(config)})


def config_from(record: ConfigRecord) -> SecAggConfig:
    """The SecAgg numbers of `config_values` in a record (a train request, a site's kept state), validated."""
    return SecAggConfig(
        num_sites=int(record["num-sites"]), threshold=int(record["threshold"]),  # type: ignore[arg-type]
        clipping_range=float(record["clipping-range"]),  # type: ignore[arg-type]
        quantization_range=int(record["quantization-range"]),  # type: ignore[arg-type]
    )


def read_train_request(content: RecordDict) -> tuple[SecAggConfig, int]:
    """The round's config (validated) and this site's id, from a train message."""
    record = _record(content, TRAIN)
    return config_from(record), int(record["site-id"])  # type: ignore[arg-type]


def public_keys_record(keys: PublicKeys) -> ConfigRecord:
    """Stage 1 reply."""
    return ConfigRecord({"stage": KEYS, "site-id": keys.site_id, "encryption-key": keys.encryption_key,
                         "masking-key": keys.masking_key, "weight": keys.weight})


def read_public_keys(content: RecordDict) -> PublicKeys:
    """Stage 1 reply, read by the coordinator."""
    record = _record(content, KEYS)
    return PublicKeys(int(record["site-id"]), bytes(record["encryption-key"]), bytes(record["masking-key"]),  # type: ignore[arg-type]
                      int(record["weight"]))  # type: ignore[arg-type]


def share_keys_request(keys: Mapping[int, PublicKeys]) -> ConfigRecord:
    """Stage 2 request: every announced key pair."""
    sites = sorted(keys)
    return ConfigRecord({"stage": SHARE_KEYS, "sites": sites,
                         "encryption-keys": [keys[s].encryption_key for s in sites],
                         "masking-keys": [keys[s].masking_key for s in sites],
                         "weights": [keys[s].weight for s in sites]})


def read_share_keys_request(content: RecordDict) -> dict[int, PublicKeys]:
    """Stage 2 request, read by a site."""
    record = _record(content, SHARE_KEYS)
    return {int(s): PublicKeys(int(s), e, m, int(w))
            for s, e, m, w in zip(record["sites"], record["encryption-keys"], record["masking-keys"],  # type: ignore[call-overload]
                                  record["weights"], strict=True)}


def encrypted_shares_record(shares: EncryptedShares) -> ConfigRecord:
    """Stage 2 reply: one ciphertext per other site."""
    recipients = sorted(shares.ciphertexts)
    return ConfigRecord({"stage": SHARE_KEYS, "site-id": shares.site_id, "recipients": recipients,
                         "ciphertexts": [shares.ciphertexts[r] for r in recipients]})


def read_encrypted_shares(content: RecordDict) -> EncryptedShares:
    """Stage 2 reply, read by the coordinator."""
    record = _record(content, SHARE_KEYS)
    return EncryptedShares(int(record["site-id"]),  # type: ignore[arg-type]
                           dict(zip(record["recipients"], record["ciphertexts"], strict=True)))  # type: ignore[arg-type]


def masked_input_request(ciphertexts: Mapping[int, bytes]) -> ConfigRecord:
    """Stage 3 request to one site: the ciphertexts the other sites addressed to it."""
    senders = sorted(ciphertexts)
    return ConfigRecord({"stage": MASKED_INPUT, "senders": senders,
                         "ciphertexts": [ciphertexts[s] for s in senders]})


def read_masked_input_request(content: RecordDict) -> dict[int, bytes]:
    """Stage 3 request, read by a site."""
    record = _record(content, MASKED_INPUT)
    return dict(zip(record["senders"], record["ciphertexts"], strict=True))  # type: ignore[arg-type]


def masked_input_content(masked: MaskedInput) -> RecordDict:
    """Stage 3 reply: the masked vector and the names and shapes it stands for."""
    return RecordDict({
        SECAGG_RECORD: ConfigRecord({"stage": MASKED_INPUT, "site-id": masked.site_id,
                                     "layout": json.dumps([[n, list(s)] for n, s in masked.layout])}),
        MASKED_RECORD: ArrayRecord({"vector": Array(masked.vector)}),
    })


def read_masked_input(content: RecordDict) -> MaskedInput:
    """Stage 3 reply, read by the coordinator."""
    record = _record(content, MASKED_INPUT)
    layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in json.loads(str(record["layout"])))
    vector = content.array_records[MASKED_RECORD]["vector"].numpy()
    return MaskedInput(int(record["site-id"]), layout, np.asarray(vector))  # type: ignore[arg-type]


def unmask_request(request: UnmaskRequest) -> ConfigRecord:
    """Stage 4 request: who survived and who dropped out."""
    return ConfigRecord({"stage": UNMASK, "survivors": list(request.survivors), "dropouts": list(request.dropouts)})


def read_unmask_request(content: RecordDict) -> UnmaskRequest:
    """Stage 4 request, read by a site."""
    record = _record(content, UNMASK)
    return UnmaskRequest(tuple(record["survivors"]), tuple(record["dropouts"]))  # type: ignore[arg-type]


def unmask_shares_record(shares: UnmaskShares) -> ConfigRecord:
    """Stage 4 reply: shares of survivors' self-mask seeds and of dropouts' masking keys."""
    return ConfigRecord({
        "stage": UNMASK, "site-id": shares.site_id,
        "self-mask-sites": list(shares.self_mask_shares), "self-mask-shares": list(shares.self_mask_shares.values()),
        "masking-key-sites": list(shares.masking_key_shares),
        "masking-key-shares": list(shares.masking_key_shares.values()),
    })


def read_unmask_shares(content: RecordDict) -> UnmaskShares:
    """Stage 4 reply, read by the coordinator."""
    record = _record(content, UNMASK)
    return UnmaskShares(
        int(record["site-id"]),  # type: ignore[arg-type]
        dict(zip(record["self-mask-sites"], record["self-mask-shares"], strict=True)),  # type: ignore[arg-type]
        dict(zip(record["masking-key-sites"], record["masking-key-shares"], strict=True)),  # type: ignore[arg-type]
    )

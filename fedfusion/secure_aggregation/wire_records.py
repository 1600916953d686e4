"""The SecAgg+ stage data as Flower records: what travels in a Message, and back.

Every stage message and reply holds one ConfigRecord under `SECAGG_RECORD` whose "stage" names the step;
the masked vector travels as the ArrayRecord `MASKED_RECORD` (record names and stages: ``fedfusion.protocol``).
Site ids are the 1-based positions the coordinator gave the round's sites, not Flower node ids (which need not
fit a signed 64-bit record value). A record that cannot be read (wrong stage, missing key, wrong type) raises
``ProtocolError``: it came from the other side, malformed.

    train message   "secagg": {stage="train", site-id, num-sites, threshold, clipping-range, quantization-range,
                               round-nonce}
    train reply     "secagg": {stage="keys", site-id, encryption-key, masking-key, weight, signing-key,
                               seed-commitment}
    query.secagg    "secagg": {stage="share-keys", sites, encryption-keys, masking-keys, weights, signing-keys,
                               seed-commitments}
      reply         "secagg": {stage="share-keys", site-id, recipients, ciphertexts}
    query.secagg    "secagg": {stage="masked-input", senders, ciphertexts}
      reply         "secagg": {stage="masked-input", site-id, layout, tag, complaints}
                    + "masked": {"vector": uint32}
    query.secagg    "secagg": {stage="unmask", survivors, dropouts}
      reply         "secagg": {stage="unmask", site-id, self-mask-sites, self-mask-shares, self-mask-signatures,
                               masking-key-sites, masking-key-shares, masking-key-signatures}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfusion.errors import ProtocolError
from fedfusion.protocol import (
    MASKED_RECORD,
    SECAGG_RECORD,
    STAGE_KEYS,
    STAGE_MASKED_INPUT,
    STAGE_SHARE_KEYS,
    STAGE_TRAIN,
    STAGE_UNMASK,
)
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedfusion.secure_aggregation.quantize import layout_json

Value = TypeVar("Value")


def _value(record: ConfigRecord, key: str) -> object:
    if key not in record:
        raise ProtocolError(f"secure aggregation: the {record.get('stage')!r} record lacks '{key}'")
    return record[key]


def _malformed(record: ConfigRecord, key: str, expected: str) -> ProtocolError:
    return ProtocolError(f"secure aggregation: '{key}' of the {record.get('stage')!r} record is not {expected}")


def _int(record: ConfigRecord, key: str) -> int:
    value = _value(record, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(record, key, "an integer")
    return value


def _number(record: ConfigRecord, key: str) -> float:
    value = _value(record, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _malformed(record, key, "a number")
    return float(value)


def _bytes(record: ConfigRecord, key: str) -> bytes:
    value = _value(record, key)
    if not isinstance(value, bytes):
        raise _malformed(record, key, "bytes")
    return value


def _ints(record: ConfigRecord, key: str) -> list[int]:
    value = _value(record, key)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _malformed(record, key, "a list of integers")
    return [int(v) for v in value]


def _bytes_list(record: ConfigRecord, key: str) -> list[bytes]:
    value = _value(record, key)
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise _malformed(record, key, "a list of bytes")
    return [bytes(v) for v in value]


def _paired(record: ConfigRecord, keys: str, values: str, read: Callable[[ConfigRecord, str], list[Value]]
            ) -> dict[int, Value]:
    """``record[keys][i] -> record[values][i]``; ``ProtocolError`` when the two lists differ in length."""
    ids, items = _ints(record, keys), read(record, values)
    if len(ids) != len(items):
        raise _malformed(record, values, f"as long as '{keys}'")
    return dict(zip(ids, items, strict=True))


def stage_of(content: RecordDict) -> str | None:
    """The SecAgg stage a message or reply carries, or None when it carries none."""
    record = content.config_records.get(SECAGG_RECORD)
    return None if record is None else str(record.get("stage"))


def _record(content: RecordDict, stage: str) -> ConfigRecord:
    record = content.config_records.get(SECAGG_RECORD)
    if record is None or record.get("stage") != stage:
        raise ProtocolError(f"secure aggregation: expected a '{stage}' record, got {stage_of(content)!r}")
    return record


def config_values(config: SecAggConfig) -> dict[str, int | float | bytes]:
    """The SecAgg numbers as record values (read back by `config_from`)."""
    return {"num-sites": config.num_sites, "threshold": config.threshold, "clipping-range": config.clipping_range,
            "quantization-range": config.quantization_range, "round-nonce": config.round_nonce}


def train_request(config: SecAggConfig, site_id: int) -> ConfigRecord:
    """What a train message tells one site: its id and the round's SecAgg numbers."""
    return ConfigRecord({"stage": STAGE_TRAIN, "site-id": site_id, **config_values(config)})


def config_from(record: ConfigRecord) -> SecAggConfig:
    """The SecAgg numbers of `config_values` in a record (a train request, a site's kept state), validated."""
    return SecAggConfig(num_sites=_int(record, "num-sites"), threshold=_int(record, "threshold"),
                        clipping_range=_number(record, "clipping-range"),
                        quantization_range=_int(record, "quantization-range"),
                        round_nonce=_bytes(record, "round-nonce"))


def read_train_request(content: RecordDict) -> tuple[SecAggConfig, int]:
    """The round's config (validated) and this site's id, from a train message."""
    record = _record(content, STAGE_TRAIN)
    return config_from(record), _int(record, "site-id")


def public_keys_record(keys: PublicKeys) -> ConfigRecord:
    """Stage 1 reply."""
    return ConfigRecord({"stage": STAGE_KEYS, "site-id": keys.site_id, "encryption-key": keys.encryption_key,
                         "masking-key": keys.masking_key, "weight": keys.weight, "signing-key": keys.signing_key,
                         "seed-commitment": keys.seed_commitment})


def read_public_keys(content: RecordDict) -> PublicKeys:
    """Stage 1 reply, read by the coordinator."""
    record = _record(content, STAGE_KEYS)
    return PublicKeys(_int(record, "site-id"), _bytes(record, "encryption-key"), _bytes(record, "masking-key"),
                      _int(record, "weight"), _bytes(record, "signing-key"), _bytes(record, "seed-commitment"))


def share_keys_request(keys: Mapping[int, PublicKeys]) -> ConfigRecord:
    """Stage 2 request: every announced key pair."""
    sites = sorted(keys)
    return ConfigRecord({"stage": STAGE_SHARE_KEYS, "sites": sites,
                         "encryption-keys": [keys[s].encryption_key for s in sites],
                         "masking-keys": [keys[s].masking_key for s in sites],
                         "weights": [keys[s].weight for s in sites],
                         "signing-keys": [keys[s].signing_key for s in sites],
                         "seed-commitments": [keys[s].seed_commitment for s in sites]})


def read_share_keys_request(content: RecordDict) -> dict[int, PublicKeys]:
    """Stage 2 request, read by a site."""
    record = _record(content, STAGE_SHARE_KEYS)
    encryption = _paired(record, "sites", "encryption-keys", _bytes_list)
    masking = _paired(record, "sites", "masking-keys", _bytes_list)
    weights = _paired(record, "sites", "weights", _ints)
    signing = _paired(record, "sites", "signing-keys", _bytes_list)
    commitments = _paired(record, "sites", "seed-commitments", _bytes_list)
    return {site: PublicKeys(site, encryption[site], masking[site], weights[site], signing[site], commitments[site])
            for site in encryption}


def encrypted_shares_record(shares: EncryptedShares) -> ConfigRecord:
    """Stage 2 reply: one ciphertext per other site."""
    recipients = sorted(shares.ciphertexts)
    return ConfigRecord({"stage": STAGE_SHARE_KEYS, "site-id": shares.site_id, "recipients": recipients,
                         "ciphertexts": [shares.ciphertexts[r] for r in recipients]})


def read_encrypted_shares(content: RecordDict) -> EncryptedShares:
    """Stage 2 reply, read by the coordinator."""
    record = _record(content, STAGE_SHARE_KEYS)
    return EncryptedShares(_int(record, "site-id"), _paired(record, "recipients", "ciphertexts", _bytes_list))


def masked_input_request(ciphertexts: Mapping[int, bytes]) -> ConfigRecord:
    """Stage 3 request to one site: the ciphertexts the other sites addressed to it."""
    senders = sorted(ciphertexts)
    return ConfigRecord({"stage": STAGE_MASKED_INPUT, "senders": senders,
                         "ciphertexts": [ciphertexts[s] for s in senders]})


def read_masked_input_request(content: RecordDict) -> dict[int, bytes]:
    """Stage 3 request, read by a site."""
    record = _record(content, STAGE_MASKED_INPUT)
    return _paired(record, "senders", "ciphertexts", _bytes_list)


def masked_input_content(masked: MaskedInput) -> RecordDict:
    """Stage 3 reply: the masked vector and the names and shapes it stands for."""
    return RecordDict({
        SECAGG_RECORD: ConfigRecord({"stage": STAGE_MASKED_INPUT, "site-id": masked.site_id,
                                     "layout": layout_json(masked.layout), "tag": masked.tag,
                                     "complaints": list(masked.complaints)}),
        MASKED_RECORD: ArrayRecord({"vector": Array(masked.vector)}),
    })


def read_masked_input(content: RecordDict) -> MaskedInput:
    """Stage 3 reply, read by the coordinator."""
    record = _record(content, STAGE_MASKED_INPUT)
    try:
        layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in json.loads(str(_value(record, "layout"))))
        vector = content.array_records[MASKED_RECORD]["vector"].numpy()
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"secure aggregation: unreadable masked input ({type(exc).__name__}: {exc})") from exc
    return MaskedInput(_int(record, "site-id"), layout, np.asarray(vector), _bytes(record, "tag"),
                       tuple(_ints(record, "complaints")))


def unmask_request(request: UnmaskRequest) -> ConfigRecord:
    """Stage 4 request: who survived and who dropped out."""
    return ConfigRecord({"stage": STAGE_UNMASK, "survivors": list(request.survivors),
                         "dropouts": list(request.dropouts)})


def read_unmask_request(content: RecordDict) -> UnmaskRequest:
    """Stage 4 request, read by a site."""
    record = _record(content, STAGE_UNMASK)
    return UnmaskRequest(tuple(_ints(record, "survivors")), tuple(_ints(record, "dropouts")))


def unmask_shares_record(shares: UnmaskShares) -> ConfigRecord:
    """Stage 4 reply: shares of survivors' self-mask seeds and of dropouts' masking keys."""
    survivors, dropouts = list(shares.self_mask_shares), list(shares.masking_key_shares)
    return ConfigRecord({
        "stage": STAGE_UNMASK, "site-id": shares.site_id,
        "self-mask-sites": survivors, "self-mask-shares": [shares.self_mask_shares[s] for s in survivors],
        "self-mask-signatures": [shares.self_mask_signatures[s] for s in survivors],
        "masking-key-sites": dropouts, "masking-key-shares": [shares.masking_key_shares[s] for s in dropouts],
        "masking-key-signatures": [shares.masking_key_signatures[s] for s in dropouts],
    })


def read_unmask_shares(content: RecordDict) -> UnmaskShares:
    """Stage 4 reply, read by the coordinator."""
    record = _record(content, STAGE_UNMASK)
    return UnmaskShares(_int(record, "site-id"),
                        _paired(record, "self-mask-sites", "self-mask-shares", _bytes_list),
                        _paired(record, "masking-key-sites", "masking-key-shares", _bytes_list),
                        _paired(record, "self-mask-sites", "self-mask-signatures", _bytes_list),
                        _paired(record, "masking-key-sites", "masking-key-signatures", _bytes_list))

"""A deployed message's whole content packed into one record: three objects on the wire, whatever it holds.

Flower sends a message as a tree of objects (the message, its RecordDict, every record, every Array, every 5 MiB
chunk of an Array), and a deployed SuperNode pulls or pushes each object with its own request through the
coordinator's gateway (TLS, a signature check, the SuperLink's database), two at a time. Measured on a busy 2-core
host: 5.6 objects per message and 4.8 per reply (a train message 8), each request 0.1-0.25 s, about half of every
secure-aggregation stage's round trip. `pack` serializes the whole RecordDict as Flower does on the wire
(``fedfusion.flower_compat.recorddict_to_bytes``: every record, array and value, in order) into one ConfigRecord
`PACKED_RECORD`: the message, its RecordDict and that record, three objects. Content larger than Flower's array chunk
(``MAX_ARRAY_CHUNK_BYTES``, 5 MiB; a model of more than about a million parameters) goes into one uint8 Array
instead, which Flower cuts into chunks, so no request grows beyond what Flower sends today. `unpack` restores the
same records, arrays bit for bit. The coordinator's grid packs what it sends and unpacks what it gets
(``fedfusion.coordinator.prompt_grid``, deployment only); the site's ClientApp mod `packing_mod` unpacks an
instruction and packs the reply of a packed one. A simulation sends nothing packed, so nothing changes there.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedfusion.errors import ProtocolError
from fedfusion.flower_compat import (
    MAX_ARRAY_CHUNK_BYTES,
    ClientAppCallable,
    recorddict_from_bytes,
    recorddict_to_bytes,
)
from fedfusion.protocol import PACKED_CONTENT_KEY, PACKED_RECORD


def is_packed(content: RecordDict) -> bool:
    """Whether ``content`` is a packed content (its one record is `PACKED_RECORD`)."""
    return list(content.keys()) == [PACKED_RECORD]


def pack(content: RecordDict) -> RecordDict:
    """``content`` as one record (see the module docstring)."""
    payload = recorddict_to_bytes(content)
    if len(payload) <= MAX_ARRAY_CHUNK_BYTES:
        return RecordDict({PACKED_RECORD: ConfigRecord({PACKED_CONTENT_KEY: payload})})
    return RecordDict({PACKED_RECORD: ArrayRecord({PACKED_CONTENT_KEY: Array(np.frombuffer(payload, np.uint8))})})


def unpack(content: RecordDict) -> RecordDict:
    """The content `pack` packed into ``content``; anything not packed unchanged; :class:`ProtocolError` when the
    packed record cannot be read."""
    if not is_packed(content):
        return content
    record = content[PACKED_RECORD]
    try:
        if isinstance(record, ArrayRecord):
            data = record[PACKED_CONTENT_KEY].numpy()
            if data.dtype != np.uint8 or data.ndim != 1:
                raise ValueError(f"its array is {data.dtype} of shape {data.shape}, not a uint8 vector")
            payload = data.tobytes()
        else:
            value = record[PACKED_CONTENT_KEY]
            if not isinstance(value, bytes):
                raise ValueError(f"its '{PACKED_CONTENT_KEY}' is {type(value).__name__}, not bytes")
            payload = value
        return recorddict_from_bytes(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"the packed record {PACKED_RECORD!r} cannot be read: {exc}") from None


def packing_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A ClientApp mod: unpack a packed instruction before the handler and pack its reply; anything else as it is."""
    if not (message.has_content() and is_packed(message.content)):
        return call_next(message, context)
    message.content = unpack(message.content)
    reply = call_next(message, context)
    if reply.has_content():
        reply.content = pack(reply.content)
    return reply

"""A deployed message's ArrayRecords packed into one Array each: one object on the wire instead of two per array.

Flower sends every Array of a message as its own object (plus one per chunk), and a deployed SuperNode pulls each
object with its own request through the coordinator's gateway (TLS, a signature check, the SuperLink's database):
measured on a busy 2-core host, a model of 20 arrays was 44 objects and 53 requests, 3 s per train or evaluate
message. `pack` replaces each ArrayRecord of more than one array by one with a single uint8 Array (the arrays' raw
bytes, one after another) and a ConfigRecord ``<name>.packed-layout`` (names, dtypes, shapes, as JSON); `unpack`
restores the same records, arrays bit for bit. The coordinator's grid packs what it sends and unpacks what it gets
(``fedfusion.coordinator.prompt_grid``, deployment only); the site's ClientApp mod `packing_mod` unpacks an
instruction and packs the reply of a packed one. A simulation sends nothing packed, so nothing changes there.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedfusion.errors import ProtocolError
from fedfusion.flower_compat import ClientAppCallable
from fedfusion.protocol import PACKED_ARRAY_KEY, PACKED_LAYOUT_KEY, PACKED_LAYOUT_SUFFIX


def is_packed(content: RecordDict) -> bool:
    """Whether ``content`` holds a packed ArrayRecord."""
    return any(name.endswith(PACKED_LAYOUT_SUFFIX) for name in content.config_records)


def pack(content: RecordDict) -> RecordDict:
    """``content`` with each ArrayRecord of more than one array packed (see the module docstring)."""
    packed = RecordDict()
    for name, record in content.items():
        if isinstance(record, ArrayRecord) and len(record) > 1:
            arrays = {key: array.numpy() for key, array in record.items()}  # tobytes(): C order
            layout = [[key, a.dtype.str, list(a.shape)] for key, a in arrays.items()]
            data = np.frombuffer(b"".join(a.tobytes() for a in arrays.values()), dtype=np.uint8)
            packed[name] = ArrayRecord({PACKED_ARRAY_KEY: Array(data)})
            packed[name + PACKED_LAYOUT_SUFFIX] = ConfigRecord({PACKED_LAYOUT_KEY: json.dumps(layout)})
        else:
            packed[name] = record
    return packed


def unpack(content: RecordDict) -> RecordDict:
    """``content`` with every packed ArrayRecord restored; :class:`ProtocolError` when one does not match its
    layout."""
    layouts = {name.removesuffix(PACKED_LAYOUT_SUFFIX): record for name, record in content.config_records.items()
               if name.endswith(PACKED_LAYOUT_SUFFIX)}
    unpacked = RecordDict()
    for name, record in content.items():
        if name.endswith(PACKED_LAYOUT_SUFFIX) and name.removesuffix(PACKED_LAYOUT_SUFFIX) in content.array_records:
            continue
        if name in layouts and isinstance(record, ArrayRecord):
            unpacked[name] = _restored(name, record, layouts[name])
        else:
            unpacked[name] = record
    return unpacked


def packing_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A ClientApp mod: unpack a packed instruction before the handler and pack its reply; anything else as it is."""
    if not (message.has_content() and is_packed(message.content)):
        return call_next(message, context)
    message.content = unpack(message.content)
    reply = call_next(message, context)
    if reply.has_content():
        reply.content = pack(reply.content)
    return reply


def _restored(name: str, record: ArrayRecord, layout_record: ConfigRecord) -> ArrayRecord:
    try:
        layout: list[Any] = json.loads(str(layout_record[PACKED_LAYOUT_KEY]))
        data = record[PACKED_ARRAY_KEY].numpy()
        arrays, offset = {}, 0
        for key, dtype, shape in layout:
            kind = np.dtype(dtype)
            size = kind.itemsize * int(np.prod(shape, dtype=np.int64))
            if offset + size > data.size:
                raise ValueError("the packed data is shorter than its layout")
            chunk = data[offset:offset + size].tobytes()
            arrays[str(key)] = Array(np.frombuffer(chunk, dtype=kind).reshape(tuple(shape)))
            offset += size
        if offset != data.size:
            raise ValueError("the packed data is longer than its layout")
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"the packed array record {name!r} does not match its layout: {exc}") from None
    return ArrayRecord(arrays)

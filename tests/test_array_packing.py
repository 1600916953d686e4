"""`fedfusion.array_packing`: arrays packed into one and restored bit for bit; a bad layout is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from fedfusion.array_packing import is_packed, pack, packing_mod, unpack
from fedfusion.errors import ProtocolError
from fedfusion.protocol import ARRAYS_RECORD, CONFIG_RECORD, PACKED_LAYOUT_KEY, PACKED_LAYOUT_SUFFIX


def model_content() -> RecordDict:
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.arange(4, dtype=np.float64),
              "steps": np.array(7, dtype=np.int64), "empty": np.zeros((0, 2), dtype=np.float32)}
    return RecordDict({ARRAYS_RECORD: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                       "one": ArrayRecord({"vector": Array(np.ones(3))}),
                       CONFIG_RECORD: ConfigRecord({"server-round": 2}), "metrics": MetricRecord({"x": 1.0})})


def test_a_model_packs_into_one_array_and_unpacks_bit_for_bit() -> None:
    content = model_content()
    packed = pack(content)
    assert is_packed(packed) and not is_packed(content)
    assert list(packed[ARRAYS_RECORD].keys()) == ["packed"]
    assert packed["one"] is content["one"] and packed[CONFIG_RECORD] is content[CONFIG_RECORD]  # left as they are
    restored = unpack(packed)
    assert list(restored.keys()) == list(content.keys())
    for name in (ARRAYS_RECORD, "one"):
        assert list(restored[name].keys()) == list(content[name].keys())
        for key, array in content[name].items():
            got = restored[name][key].numpy()
            assert got.dtype == array.numpy().dtype and got.shape == array.numpy().shape
            assert got.tobytes() == array.numpy().tobytes()
    assert unpack(content) == content  # nothing packed: unchanged


def test_a_layout_that_does_not_match_is_a_protocol_error_naming_the_record() -> None:
    packed = pack(model_content())
    layout = json.loads(str(packed[ARRAYS_RECORD + PACKED_LAYOUT_SUFFIX][PACKED_LAYOUT_KEY]))
    packed[ARRAYS_RECORD + PACKED_LAYOUT_SUFFIX] = ConfigRecord({PACKED_LAYOUT_KEY: json.dumps(layout[:-2])})
    with pytest.raises(ProtocolError, match=r"'arrays' does not match its layout: .*longer"):
        unpack(packed)
    too_long = json.dumps([*layout, ["x", "<f8", [9]]])
    packed[ARRAYS_RECORD + PACKED_LAYOUT_SUFFIX] = ConfigRecord({PACKED_LAYOUT_KEY: too_long})
    with pytest.raises(ProtocolError, match="shorter"):
        unpack(packed)


def instruction(content: RecordDict) -> Message:
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=2, reply_to_message_id="", group_id="2",
                        created_at=0.0, ttl=60.0, message_type="train")
    return Message(metadata=metadata, content=content)


def test_the_mod_unpacks_a_packed_instruction_and_packs_its_reply_only() -> None:
    seen: list[RecordDict] = []

    def handler(message: Message, context: Context) -> Message:
        seen.append(message.content)
        return Message(RecordDict({ARRAYS_RECORD: message.content[ARRAYS_RECORD]}), reply_to=message)

    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    packed_instruction = instruction(pack(model_content()))
    reply = packing_mod(packed_instruction, context, handler)
    assert not is_packed(seen[-1]) and len(seen[-1][ARRAYS_RECORD]) == 4 and is_packed(reply.content)
    plain = instruction(model_content())
    reply = packing_mod(plain, context, handler)
    assert not is_packed(reply.content)  # a simulation's message and its reply: as they are

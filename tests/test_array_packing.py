"""`fedfusion.array_packing`: a content packed into one record and restored bit for bit; a bad one is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from fedfusion import array_packing
from fedfusion.array_packing import is_packed, pack, packing_mod, unpack
from fedfusion.errors import ProtocolError
from fedfusion.protocol import ARRAYS_RECORD, CONFIG_RECORD, PACKED_CONTENT_KEY, PACKED_RECORD


def model_content() -> RecordDict:
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.arange(4, dtype=np.float64),
              "steps": np.array(7, dtype=np.int64), "empty": np.zeros((0, 2), dtype=np.float32)}
    return RecordDict({ARRAYS_RECORD: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                       "one": ArrayRecord({"vector": Array(np.ones(3))}),
                       CONFIG_RECORD: ConfigRecord({"server-round": 2, "nonce": b"\x00\xff", "sites": [3, 1]}),
                       "metrics": MetricRecord({"x": 1.5, "n": 4})})


def assert_same(restored: RecordDict, content: RecordDict) -> None:
    assert list(restored.keys()) == list(content.keys())
    for name in (ARRAYS_RECORD, "one"):
        assert list(restored[name].keys()) == list(content[name].keys())
        for key, array in content[name].items():
            got = restored[name][key].numpy()
            assert got.dtype == array.numpy().dtype and got.shape == array.numpy().shape
            assert got.tobytes() == array.numpy().tobytes()
    assert dict(restored[CONFIG_RECORD]) == dict(content[CONFIG_RECORD])
    assert dict(restored["metrics"]) == dict(content["metrics"])


def test_a_content_packs_into_one_config_record_and_unpacks_bit_for_bit() -> None:
    content = model_content()
    packed = pack(content)
    assert is_packed(packed) and not is_packed(content)
    assert list(packed.keys()) == [PACKED_RECORD] and isinstance(packed[PACKED_RECORD], ConfigRecord)
    assert_same(unpack(packed), content)
    assert unpack(content) is content  # nothing packed: unchanged


def test_a_content_larger_than_a_chunk_packs_into_one_array(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(array_packing, "MAX_ARRAY_CHUNK_BYTES", 64)
    content = model_content()
    packed = pack(content)
    assert isinstance(packed[PACKED_RECORD], ArrayRecord) and list(packed[PACKED_RECORD].keys()) == [PACKED_CONTENT_KEY]
    assert_same(unpack(packed), content)


@pytest.mark.parametrize("record", [ConfigRecord({PACKED_CONTENT_KEY: b"\xff not a record dict"}),
                                    ConfigRecord({PACKED_CONTENT_KEY: "text"}), ConfigRecord({"other": b""}),
                                    ArrayRecord({PACKED_CONTENT_KEY: Array(np.ones(3))})])
def test_a_packed_record_that_cannot_be_read_is_a_protocol_error_naming_it(record: ConfigRecord | ArrayRecord) -> None:
    with pytest.raises(ProtocolError, match=f"packed record '{PACKED_RECORD}' cannot be read"):
        unpack(RecordDict({PACKED_RECORD: record}))


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
    assert list(unpack(reply.content)[ARRAYS_RECORD].keys()) == ["w", "b", "steps", "empty"]
    plain = instruction(model_content())
    reply = packing_mod(plain, context, handler)
    assert not is_packed(reply.content)  # a simulation's message and its reply: as they are

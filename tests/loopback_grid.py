"""A Flower ``Grid`` that delivers each message to the real ClientApp of an in-process node, over the wire format.

Every message and reply goes through Flower's own protobuf serialization (``message_to_proto`` /
``message_from_proto``) as it would between SuperLink and SuperNode, and each node keeps its ``Context`` (with
``context.state``) across messages, as a SuperNode does. ``received`` holds every reply the coordinator got, as
bytes: the coordinator's whole view. ``drop(message)`` returning True makes the message's node miss it (a site
that dropped out): no reply comes back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 7
SUPERLINK_NODE_ID = 1


def wire(message: Message) -> tuple[Message, bytes]:
    """The message as the other end rebuilds it from its serialized bytes, and those bytes."""
    payload = message_to_proto(message).SerializeToString()
    return message_from_proto(ProtoMessage.FromString(payload)), payload


class LoopbackGrid(Grid):
    """Delivers messages to ``app`` as the nodes in ``node_configs`` (node id -> node config)."""

    def __init__(self, app: ClientApp, node_configs: Mapping[int, Mapping[str, str]],
                 run_config: Mapping[str, object], drop: Callable[[Message], bool] = lambda _: False) -> None:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID
        self.app = app
        self.contexts = {
            node: Context(run_id=RUN_ID, node_id=node, node_config=dict(config), state=RecordDict(),
                          run_config=dict(run_config))  # type: ignore[arg-type]
            for node, config in node_configs.items()
        }
        self.drop = drop
        self.sent: list[Message] = []
        self.received: list[bytes] = []
        self._replies: dict[str, Message] = {}
        self._run = Run.create_empty(run_id=RUN_ID)

    def set_run(self, run: Run) -> None:
        """Not used: the run is fixed."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run."""
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """A new message (the deprecated Grid API)."""
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The nodes' ids."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node now; keep the reply (unless the node dropped it)."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(message)
            ids.append(message.metadata.message_id)
            if self.drop(message):
                continue
            delivered, _ = wire(message)
            reply = self.app(delivered, self.contexts[message.metadata.dst_node_id])
            returned, payload = wire(reply)
            self.received.append(payload)
            self._replies[message.metadata.message_id] = returned
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that came back for ``message_ids``."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull every reply that came (a dropped node's never does)."""
        return self.pull_messages(self.push_messages(messages))

"""A Flower ``Grid`` that delivers each message to the real ClientApp of an in-process node, over the wire format.

Every message and reply goes through Flower's own protobuf serialization (``wire``, from
``fedfusion.simulation.in_process_grid``) as it would between SuperLink and SuperNode, and each node keeps its
``Context`` (with ``context.state``) across messages, as a SuperNode does. ``received`` holds every reply the
coordinator got, as bytes: the coordinator's whole view. ``drop(message)`` returning True makes the message's node
miss it (a site that dropped out): no reply comes back. ``alter(message, reply)`` may rewrite a reply in place before
it goes on the wire (a hostile site).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedfusion.simulation.in_process_grid import RUN_ID, SUPERLINK_NODE_ID, InProcessGrid, set_message_id, wire

__all__ = ["RUN_ID", "SUPERLINK_NODE_ID", "LoopbackGrid", "wire"]


class LoopbackGrid(InProcessGrid):
    """Delivers messages to ``app`` as the nodes in ``node_configs`` (node id -> node config)."""

    def __init__(self, app: ClientApp, node_configs: Mapping[int, Mapping[str, str]],
                 run_config: Mapping[str, object], drop: Callable[[Message], bool] = lambda _: False,
                 alter: Callable[[Message, Message], None] = lambda _message, _reply: None) -> None:
        super().__init__(RUN_ID)
        self.app = app
        self.contexts = {
            node: Context(run_id=RUN_ID, node_id=node, node_config=dict(config), state=RecordDict(),
                          run_config=dict(run_config))  # type: ignore[arg-type]
            for node, config in node_configs.items()
        }
        self.drop = drop
        self.alter = alter
        self.sent: list[Message] = []
        self.received: list[bytes] = []

    def get_node_ids(self) -> Iterable[int]:
        """The nodes' ids."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node now; keep the reply (unless the node dropped it)."""
        ids = []
        for message in messages:
            set_message_id(message, uuid.uuid4().hex)
            self.sent.append(message)
            ids.append(message.metadata.message_id)
            if self.drop(message):
                continue
            delivered, _ = wire(message)
            reply = self.app(delivered, self.contexts[message.metadata.dst_node_id])
            self.alter(delivered, reply)
            returned, payload = wire(reply)
            self.received.append(payload)
            self._replies[message.metadata.message_id] = returned
        return ids

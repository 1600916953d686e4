"""`InProcessGrid`: the base of a Flower ``Grid`` whose nodes answer in this process, over Flower's wire format.

A strategy started on such a grid (``strategy.start(grid, ...)``) runs exactly as under a SuperLink, but each
message is delivered by a function call: tests drive the real ClientApp with it (``tests/loopback_grid.py``) and
the secure-aggregation benchmark times a round with it (``benchmarks/secure_aggregation.py``). The base holds the
Grid boilerplate: a fixed run, message creation, the replies waiting to be pulled, ``send_and_receive`` as push
then pull, and `wire`, the protobuf round trip every message and reply takes between SuperLink and SuperNode. A
subclass says which nodes exist (``get_node_ids``) and delivers (``push_messages``), keeping each reply in
``_replies`` under its message id. Flower's run and task identity and the wire format come from the seam
(``fedfusion.flower_compat``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedfusion.flower_compat import Run, empty_run, message_from_bytes, message_to_bytes, set_task_identity

RUN_ID = 7
"""The run id of every in-process grid."""
SUPERLINK_NODE_ID = 1
"""The node id of the ServerApp's side (what Flower's SuperLink uses)."""


def wire(message: Message) -> tuple[Message, bytes]:
    """The message as the other end rebuilds it from its serialized bytes, and those bytes."""
    payload = message_to_bytes(message)
    return message_from_bytes(payload), payload


def set_message_id(message: Message, message_id: str) -> None:
    """Give a message its id, as the SuperLink does when a message is pushed."""
    message.metadata.__dict__["_message_id"] = message_id


class InProcessGrid(Grid):
    """A Grid for one fixed run whose subclass delivers messages in this process."""

    def __init__(self, run_id: int = RUN_ID) -> None:
        set_task_identity(task_id=1, run_id=run_id, node_id=SUPERLINK_NODE_ID)  # Flower reads it for new messages
        self._run = empty_run(run_id)
        self._replies: dict[str, Message] = {}

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

    @abstractmethod
    def get_node_ids(self) -> Iterable[int]:
        """The nodes' ids."""

    @abstractmethod
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver the messages; keep each reply in ``_replies`` under its message's id; return the ids."""

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that came back for ``message_ids`` (each is pulled once)."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull every reply that came (a node that dropped a message never replies to it)."""
        return self.pull_messages(self.push_messages(messages))

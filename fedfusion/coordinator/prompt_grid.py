"""`PromptGrid`: the deployed ServerApp's grid, pulling replies promptly and logging when each message left and each
reply came back.

Flower 1.41 hands a deployed ServerApp an HTTP grid on the SuperLink's ServerAppIo (Runtime) API that sleeps 3 s
between pulls for replies: every message round trip (train, each secure-aggregation stage, evaluate) waited 1.5 s on
average after its last reply had arrived. That API is on the coordinator's own host (loopback), so asking often costs
little. `PromptGrid` delegates everything to Flower's grid and replaces only ``send_and_receive``: it pulls right
after the push, then waits `FIRST_PULL_DELAY_S` and doubles the wait after every pull that left replies missing, up
to `MAX_PULL_DELAY_S`. A reply is noticed at most `MAX_PULL_DELAY_S` after it arrived (and at most as late as it took
to come, for quick ones), and a long training is asked about at most 10 times a second.

It also logs, on Flower's logger (so the line reaches ``flwr log`` and ``fedfusion study start``), one line per
message pushed and one per reply pulled::

    grid sent type=<message type> node=<destination node> round=<round> message=<message id> at=<epoch s>
    grid received type=<message type> node=<source node> round=<round> message=<id it answers> at=<epoch s>

The round is the message's ``server-round`` (its config record; ``-`` without one), a reply's that of the message it
answers. ``at`` is ``time.time()`` when the push began (a site may take its message before the push has returned:
the SuperLink lists it before its objects, and the push uploads every destination's objects in turn) or once the pull
returned (the reply is here). `parse_grid_line` reads such a line back (``benchmarks/deployment_overhead.py`` times
each message with them). `prompt` wraps only Flower's HTTP grid: a simulation keeps its in-memory grid (which pulls
every 0.1 s) unchanged.

A reply is listed by the SuperLink as soon as its site announced it, before the site has uploaded its objects; Flower's
grid then retried a missing object after 1 s, and almost every reply cost that second. `prompt` shortens that
backoff in this process (``fedfusion.flower_compat.shorten_object_pull_backoff``). It also packs each message's
whole content into one record (``fedfusion.array_packing``; the site's ClientApp unpacks it and packs its reply) and
unpacks each reply's: three objects per message, where each record, array and chunk was one, each pulled by the site
with its own request through the gateway. A reply whose packed content cannot be read is replaced by an error reply
(``UNREADABLE_REPLY_CODE``, naming the node), so one site's garbage counts as its failure instead of ending the
ServerApp. It moves a message's three objects at once (``fedfusion.flower_compat.widen_object_transfers``), where
Flower moves two at a time on a 2-core host.

After each push it tells the coordinator's Fleet gateway which sites' nodes got a message
(``fedfusion.coordinator.push_notice``): the gateway holds an idle site's pull and answers it as soon as that notice
comes.

In deployment it also hears when a site has handed in a reply (``fedfusion.coordinator.reply_notice``): it then waits
for that notice between pulls (at most `reply_notice.FALLBACK_PULL_S`) instead of pulling every `MAX_PULL_DELAY_S`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

from flwr.app import Error, Message, RecordDict
from flwr.serverapp import Grid

from fedfusion.array_packing import pack, unpack
from fedfusion.coordinator.push_notice import PushNotifier, push_notifier
from fedfusion.coordinator.reply_notice import FALLBACK_PULL_S, ReplyNotices, reply_notices
from fedfusion.errors import ProtocolError
from fedfusion.flower_compat import (
    FLOWER_LOGGER,
    SERVERAPP_GRID_MODULE,
    FlowerNodeInfo,
    Run,
    is_superlink_grid,
    shorten_object_pull_backoff,
    widen_object_transfers,
)
from fedfusion.protocol import CONFIG_RECORD, SERVER_ROUND_KEY, UNREADABLE_REPLY_CODE

FIRST_PULL_DELAY_S = 0.01
"""The wait after the first pull that left replies missing."""
MAX_PULL_DELAY_S = 0.1
"""The longest wait between two pulls (Flower's own: 3 s)."""
SENT, RECEIVED = "sent", "received"
NO_ROUND = "-"
_LINE = re.compile(r"grid (?P<event>sent|received) type=(?P<type>\S+) node=(?P<node>\d+) round=(?P<round>\S*) "
                   r"message=(?P<message>\S*) at=(?P<at>\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class GridEvent:
    """One logged message or reply: whether it was sent or received, its type, its site's node, round and time."""

    event: str
    message_type: str
    node: int
    round: str
    """The study's round (``-`` when the message named none)."""
    message_id: str
    """The message's id (for a reply: the id of the message it answers)."""
    at: float


def parse_grid_line(line: str) -> GridEvent | None:
    """The event a ``grid sent`` / ``grid received`` line logs (anywhere in ``line``), or None for any other line."""
    match = _LINE.search(line)
    if match is None:
        return None
    return GridEvent(match["event"], match["type"], int(match["node"]), match["round"], match["message"],
                     float(match["at"]))


def prompt(grid: Grid) -> Grid:
    """A `PromptGrid` over a deployed ServerApp's grid, its reply objects pulled with a short backoff; any other grid
    (a simulation's, a test's) unchanged."""
    if not is_superlink_grid(grid):
        return grid
    shorten_object_pull_backoff(SERVERAPP_GRID_MODULE)
    widen_object_transfers()
    return PromptGrid(grid, push_notifier(), reply_notices())


class PromptGrid(Grid):
    """``inner`` with replies pulled promptly and every message and reply logged (see the module docstring)."""

    def __init__(self, inner: Grid, notify: PushNotifier | None = None, replies: ReplyNotices | None = None) -> None:
        self.inner = inner
        self._notify: PushNotifier = notify or (lambda node_ids: None)
        """Told the nodes of the messages each push took."""
        self._replies = replies
        """Wakes `send_and_receive` when a site has handed in a reply (None: it pulls every `MAX_PULL_DELAY_S`)."""
        self._sent: dict[str, tuple[str, Message]] = {}
        """Each message sent and not answered yet, with its round, by message id."""

    def set_run(self, run: Run) -> None:
        """Set the inner grid's run."""
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        """The inner grid's run."""
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """The inner grid's new message."""
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The connected nodes, as the inner grid lists them."""
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[FlowerNodeInfo]:
        """The connected nodes' information, as the inner grid gives it."""
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push through the inner grid, each message's content packed (``fedfusion.array_packing``); log each message
        it took (its id is empty or None otherwise) and notify the gateway of their nodes."""
        messages = list(messages)
        rounds = [_server_round(message) for message in messages]
        for message in messages:
            if message.has_content():
                message.content = pack(message.content)
        at = time.time()  # before: a site may take its message while the push still uploads the others' objects
        ids = list(self.inner.push_messages(messages))
        for message, server_round, message_id in zip(messages, rounds, ids, strict=False):
            if message_id:
                self._sent[message_id] = (server_round, message)
                _log(SENT, message, message.metadata.dst_node_id, server_round, message_id, at)
        self._notify(message.metadata.dst_node_id for message, message_id in zip(messages, ids, strict=False)
                     if message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull through the inner grid; log each reply and unpack its content (a reply that cannot be unpacked is
        replaced by an error reply, `UNREADABLE_REPLY_CODE`, so that it counts as its site's failure)."""
        replies = []
        for pulled in self.inner.pull_messages(message_ids):
            answered = pulled.metadata.reply_to_message_id
            server_round, message = self._sent.pop(answered, (NO_ROUND, None))
            replies.append(reply := _unpacked(pulled, message))
            _log(RECEIVED, reply, reply.metadata.src_node_id, server_round, answered, time.time())
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull until every one is answered or ``timeout`` seconds passed (None: no limit);
        return the replies that came. With reply notices, each pull waits for one (or `FALLBACK_PULL_S`)."""
        pending = {message_id for message_id in self.push_messages(messages) if message_id}
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        delay = FIRST_PULL_DELAY_S
        while pending:
            if self._replies is not None:
                self._replies.wait(min(FALLBACK_PULL_S, max(deadline - time.monotonic(), 0.0)))
                self._replies.drain()  # the pull below sees the replies these notices announced
            pulled = list(self.pull_messages(pending))
            replies.extend(pulled)
            pending -= {reply.metadata.reply_to_message_id for reply in pulled}
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            if self._replies is None:
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_PULL_DELAY_S)
        for message_id in pending:  # not answered in time: not kept (a late reply is not pulled)
            self._sent.pop(message_id, None)
        return replies


def _unpacked(reply: Message, message: Message | None) -> Message:
    """``reply`` with its content unpacked; when that content cannot be read, an error reply to ``message`` (the
    message it answers) in its place, or an empty content if that message is unknown (both count as a failure)."""
    if not reply.has_content():
        return reply
    try:
        reply.content = unpack(reply.content)
    except ProtocolError as exc:
        reason = f"node {reply.metadata.src_node_id}: unreadable reply: {exc}"
        FLOWER_LOGGER.log(WARNING, "grid: %s; counted as the site's failure", reason)
        if message is None:
            reply.content = RecordDict()
            return reply
        return Message(Error(code=UNREADABLE_REPLY_CODE, reason=reason), reply_to=message)
    return reply


def _server_round(message: Message) -> str:
    """The ``server-round`` of an instruction's config record, as text; `NO_ROUND` without one."""
    config = message.content.config_records.get(CONFIG_RECORD) if message.has_content() else None
    value = None if config is None else config.get(SERVER_ROUND_KEY)
    return NO_ROUND if value is None else str(value)


def _log(event: str, message: Message, node: int, server_round: str, message_id: str, at: float) -> None:
    FLOWER_LOGGER.log(INFO, "grid %s type=%s node=%d round=%s message=%s at=%.3f", event,
                      message.metadata.message_type, node, server_round, message_id, at)

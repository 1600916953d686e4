"""The site a reply comes from, by the name the site gives itself, also when the reply is an error.

A reply's sender node id does not always name its site: when a site does not answer (it went offline, or the
message expired) Flower's SuperLink answers in its place, with an error reply whose sender is the SuperLink itself
(node id 1 for every such site). Every reply names the message it answers (``reply_to_message_id``), and that
message's destination is the site's node; a node's site name is what the site's own replies carry in their
``SITE_RECORD_KEY`` record. A node that never answered is named by its full node id.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message

from fedfusion.protocol import SITE_NAME_KEY, SITE_RECORD_KEY

MAX_SITE_NAME = 100
"""Longest site name shown as given; a longer or unprintable one is shown cut and quoted (it came off the wire)."""


class SiteNames:
    """Names the sites of one strategy's replies; remembers each node's site name across rounds."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._sent: list[Message] = []

    def sent(self, messages: Iterable[Message]) -> list[Message]:
        """Keep the messages of the current phase (the grid gives them their ids when it sends them)."""
        self._sent = list(messages)
        return self._sent

    def name(self, reply: Message) -> str:
        """The site's name from the reply, else the name its node gave before, else ``node <node id>``."""
        node = self._node_of(reply)
        if not reply.has_error():
            record = reply.content.config_records.get(SITE_RECORD_KEY)
            if record is not None and SITE_NAME_KEY in record:
                name = str(record[SITE_NAME_KEY])
                shown = name.isprintable() and len(name) <= MAX_SITE_NAME
                self._names[node] = name if shown else repr(name[:MAX_SITE_NAME])
        return self._names.get(node, f"node {node}")

    def _node_of(self, reply: Message) -> int:
        """The node the answered message went to (the reply's sender when that message is not known)."""
        for message in self._sent:
            if message.metadata.message_id and message.metadata.message_id == reply.metadata.reply_to_message_id:
                return message.metadata.dst_node_id
        return reply.metadata.src_node_id

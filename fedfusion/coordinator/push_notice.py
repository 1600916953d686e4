"""The deployed ServerApp tells the coordinator's Fleet gateway which sites it has just pushed a message to.

The gateway holds a site's ``pull-messages`` request that found no message for up to a second
(``fedfusion.deployment.coordinator.held_pulls``) and asks the SuperLink again as soon as a notice names that site's
node. A notice is one datagram on a Unix socket in the coordinator's state folder, whose path the coordinator daemon
puts in the SuperLink's environment (`PUSH_NOTICE_SOCKET_ENV`, inherited by its SuperExec and ServerApps): the node
ids as decimal ASCII, separated by spaces. Sending never blocks and never fails: a lost notice only costs the hold
time (the site's next pull finds the message).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Mapping

from fedfusion.protocol import PUSH_NOTICE_SOCKET_ENV

PushNotifier = Callable[[Iterable[int]], None]
"""Tells the gateway that messages for these nodes were pushed."""


def encode_nodes(node_ids: Iterable[int]) -> bytes:
    """One notice's datagram: the node ids, decimal, separated by spaces."""
    return b" ".join(str(node_id).encode("ascii") for node_id in node_ids)


def decode_nodes(payload: bytes) -> list[int]:
    """The node ids of a notice's datagram; a word that is not a decimal number is left out."""
    return [int(word) for word in payload.split() if word.isdigit()]


def push_notifier(environ: Mapping[str, str] | None = None) -> PushNotifier:
    """The notifier for the socket named in the environment (`PUSH_NOTICE_SOCKET_ENV`); one that does nothing when
    it is unset."""
    path = (os.environ if environ is None else environ).get(PUSH_NOTICE_SOCKET_ENV)
    if not path:
        return lambda node_ids: None
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)

    def notify(node_ids: Iterable[int]) -> None:
        payload = encode_nodes(node_ids)
        if payload:
            with contextlib.suppress(OSError):  # no gateway listening, or its queue full: the hold time is the cost
                sender.sendto(payload, path)

    return notify

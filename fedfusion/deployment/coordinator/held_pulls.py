"""The gateway's end of the ServerApp's push notices: a held ``pull-messages`` waits here for its node's next notice.

A site's SuperNode asks for its next message every ``--pull-interval`` (0.1 s) while it waits for the other sites,
and each ask cost the SuperLink about 10 ms of CPU. The gateway (``fleet_gateway.py``) now holds a pull that the
SuperLink answered with no message for up to `PULL_HOLD_S` and asks again as soon as the ServerApp has pushed a
message for that node (``fedfusion.coordinator.push_notice``). `PushNotices` binds the notice socket (mode 0600,
in the coordinator's state folder), counts the notices per node, and wakes the held pulls of the nodes a notice
names. A notice that came while the SuperLink was answering is not lost: a pull notes the node's count before it is
forwarded and is forwarded again at once when the count has moved. A notice only makes the gateway ask the SuperLink
once more, with the same signed request, for the node that signed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from fedfusion.coordinator.push_notice import decode_nodes
from fedfusion.deployment.unix_socket import state_socket_path

PUSH_NOTICE_SOCKET_FILE = "push-notice.sock"
"""In the coordinator's state folder."""
PULL_HOLD_S = 0.9
"""The longest a pull with no message is held. Below the gateway's upstream keep-alive (1 s), so the pull's next ask
reuses a loopback TLS connection; well inside the SuperNode's 30 s request timeout and the age Flower accepts for a
request's signed timestamp (300 s, plus 5 s of clock skew), which a re-forwarded request keeps. An idle site asks
about once a second instead of ten times."""
_MAX_NOTICE_BYTES = 65536


def push_notice_path(state_dir: Path) -> Path:
    """The notice socket of the coordinator whose state folder is ``state_dir``; :class:`ConfigError` naming the
    folder when the path is longer than a Unix socket's path may be."""
    return state_socket_path(state_dir, PUSH_NOTICE_SOCKET_FILE, "the coordinator's push-notice socket")


class PushNotices:
    """The notice socket at ``path`` (a stale file is replaced) and the notices read from it, per node.

    `start` on the gateway's event loop before the first `wait`; `close` removes the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._socket.bind(str(path))
        os.chmod(path, 0o600)  # only the coordinator's user (its ServerApps) may send
        self._socket.setblocking(False)
        self._counts: dict[int, int] = {}
        self._woken: dict[int, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read notices on ``loop`` from now on."""
        self._loop = loop
        loop.add_reader(self._socket.fileno(), self._read)

    def count(self, node_id: int) -> int:
        """How many notices named ``node_id`` so far."""
        return self._counts.get(node_id, 0)

    async def wait(self, node_id: int, seen: int, timeout_s: float) -> bool:
        """Wait until a notice names ``node_id`` (at once when its count is no longer ``seen``) or ``timeout_s``
        passed; True when notified."""
        if self.count(node_id) != seen:
            return True
        woken = self._woken.setdefault(node_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout_s)
        return self.count(node_id) != seen

    def close(self) -> None:
        """Stop reading and remove the socket file."""
        if self._loop is not None:
            self._loop.remove_reader(self._socket.fileno())
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _read(self) -> None:
        while True:
            try:
                payload = self._socket.recv(_MAX_NOTICE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            for node_id in decode_nodes(payload):
                self._counts[node_id] = self.count(node_id) + 1
                woken = self._woken.pop(node_id, None)
                if woken is not None:
                    woken.set()

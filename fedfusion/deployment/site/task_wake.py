"""The SuperNode wakes the site's SuperExec when a message has arrived, instead of being asked every 0.05 s.

A site's SuperExec (``site_exec``) used to ask its SuperNode for a task 20 times a second, and took a task as soon
as the SuperNode had created it, before the SuperNode had fetched the message's objects from the coordinator; its
worker then asked for them every 10-50 ms until they came. Measured on a busy 2-core host (3 sites): 15 task
requests per second per site, about five tries per object, and 8% of a core for the three SuperExecs plus the
SuperNodes' share of answering them, on the same cores as the SuperLink that every message waits for.

Now the SuperNode (``supernode_launch``) sends a one-byte datagram to a Unix socket in the site's state folder once
it holds a message's objects (``fedfusion.flower_compat.notify_when_message_pulled``), and the SuperExec waits on
that socket (`TaskWakeListener`), asking for a task when woken and at least every `FALLBACK_POLL_S` (a wake-up that
came before it listened, or a task the SuperNode made another way, is still taken). The datagram only means "ask":
the task itself is still taken with the SuperExec's HMAC and handed to the worker with its token, so a local process
that sends datagrams here can only cause an extra task request. The socket file lives in the state folder (which
holds the SuperExec's secret), is made by the SuperExec and removed when it stops.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable
from pathlib import Path

from fedfusion.deployment.unix_socket import state_socket_path

TASK_WAKE_SOCKET_FILE = "task-wake.sock"
"""In the site's state folder."""
FALLBACK_POLL_S = 0.5
"""The SuperExec asks for a task at least this often, woken or not."""


def task_wake_path(state_dir: Path) -> Path:
    """The wake-up socket of the site whose state folder is ``state_dir``; :class:`ConfigError` naming the folder
    when the path is longer than a Unix socket's path may be."""
    return state_socket_path(state_dir, TASK_WAKE_SOCKET_FILE, "the site's wake-up socket")


class TaskWakeListener:
    """The SuperExec's end: bound to ``path`` (a stale file of a killed predecessor is replaced); close it to
    remove the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    def wait(self, timeout_s: float) -> bool:
        """Wait until woken or ``timeout_s`` passed; True when woken (every wake-up queued so far is consumed)."""
        ready, _, _ = select.select([self._socket], [], [], timeout_s)
        woken = False
        while ready:
            try:
                self._socket.recv(16)
            except BlockingIOError:
                break
            woken = True
        return woken

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def task_wake_sender(path: Path) -> Callable[[], None]:
    """The SuperNode's end: a function that wakes the listener at ``path``, never blocking and never failing (no
    listener yet, or wake-ups it has not read: the SuperExec's fallback poll takes the task)."""
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    target = str(path)

    def wake() -> None:
        with contextlib.suppress(OSError):
            sender.sendto(b"\x01", target)

    return wake

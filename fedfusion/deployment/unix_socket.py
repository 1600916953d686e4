"""Where a daemon's local notice sockets live: a path in its state folder, checked against Linux's limit on a Unix
socket's path (the site's task wake-up, the coordinator's push notices and reply notices)."""

from __future__ import annotations

from pathlib import Path

from fedfusion.errors import ConfigError

MAX_SOCKET_PATH_BYTES = 107
"""Linux's limit on a Unix socket's path (``sun_path`` holds 108 bytes with the final NUL)."""


def state_socket_path(state_dir: Path, relative: str, what: str) -> Path:
    """The socket ``relative`` to the state folder ``state_dir``, resolved; :class:`ConfigError` naming the folder
    and ``what`` the socket is when the path is longer than a Unix socket's path may be."""
    path = state_dir.resolve() / relative
    if len(str(path).encode()) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(f"--state-dir {state_dir}: {what} {path} would be longer than {MAX_SOCKET_PATH_BYTES} bytes "
                          "(a Unix socket's limit); choose a shorter state folder")
    return path

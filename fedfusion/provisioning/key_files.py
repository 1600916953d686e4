"""Write key and certificate files atomically with the right permissions."""

from __future__ import annotations

import os
from pathlib import Path

from fedfusion.atomic_io import atomic_write

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_private(path: Path, data: bytes) -> None:
    """Atomically write a private key: readable and writable by its owner only (0600), never wider."""
    _write(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Atomically write a certificate, public key or other shareable file (0644)."""
    _write(path, data, PUBLIC_MODE)


def _write(path: Path, data: bytes, mode: int) -> None:
    def write(tmp: Path) -> None:
        # mode is set before the content goes in, so a private key is never readable by others, even briefly
        os.chmod(tmp, mode)
        tmp.write_bytes(data)

    atomic_write(path, write)

"""Daemon logging: fedfusion's own log lines to a file and to stderr (journald keeps stderr under systemd)."""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(log_file: Path) -> None:
    """Send INFO and above of the ``fedfusion`` loggers to ``log_file`` (appended) and to stderr."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("fedfusion")
    root.setLevel(logging.INFO)
    root.propagate = False  # Flower puts a handler on the root logger; print each line once
    for handler in (logging.FileHandler(log_file, encoding="utf-8"), logging.StreamHandler()):
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)

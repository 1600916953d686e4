"""A study's live progress lines, on Flower's logger so they reach ``flwr log`` in deployment too.

``quiet_flower_console`` is for interactive runs (``fedfusion simulate``): Flower's console then shows only
these progress lines plus warnings and errors, and no line twice (Opacus configures the root logger at import,
which would otherwise repeat every Flower line).
"""

from __future__ import annotations

import logging
from logging import INFO, WARNING

from fedfusion.flower_compat import FLOWER_LOGGER, flower_console_handlers

_MARK = "fedfusion_progress"


def emit_progress(line: str) -> None:
    """Log one progress line of the study."""
    FLOWER_LOGGER.log(INFO, line, extra={_MARK: True})


def quiet_flower_console() -> None:
    """Show only progress lines, warnings and errors on Flower's console handler."""
    FLOWER_LOGGER.propagate = False
    for handler in flower_console_handlers():
        if not any(isinstance(f, _ProgressOnly) for f in handler.filters):
            handler.addFilter(_ProgressOnly())


class _ProgressOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= WARNING or bool(getattr(record, _MARK, False))

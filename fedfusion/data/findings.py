"""Problems found in a site's data, collected rather than raised one at a time.

The table readers record every problem they find in a ``Findings``; the loaders then raise one ``DataError``
listing the errors (``raise_errors``), while ``fedfusion site check`` reports errors and warnings together.
One validation logic serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from fedfusion.errors import DataError

MAX_PROBLEMS_LISTED = 10
"""Errors spelled out in a raised ``DataError``; the rest are counted."""


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, where (file or site, as words) and what is wrong."""

    severity: str
    """``"error"`` (the data cannot be used as is) or ``"warning"`` (used, but worth a look)."""
    where: str
    """The file or site it is about, e.g. ``"clinical table /site/clinical.csv"``."""
    message: str
    """What is wrong, naming the patient, gene or sample when there is one."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Findings:
    """An ordered list of errors and warnings."""

    items: list[Finding] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        """Record a problem that makes the data unusable as is."""
        self.items.append(Finding("error", where, message))

    def warning(self, where: str, message: str) -> None:
        """Record a problem the data path works around (and reports)."""
        self.items.append(Finding("warning", where, message))

    @property
    def errors(self) -> list[Finding]:
        """The errors, in the order found."""
        return [f for f in self.items if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The warnings, in the order found."""
        return [f for f in self.items if f.severity == "warning"]

    def raise_errors(self) -> None:
        """Raise one ``DataError`` listing the errors (grouped by file), if there are any."""
        errors = self.errors
        if not errors:
            return
        shown = errors[:MAX_PROBLEMS_LISTED]
        parts = [f"{where}: " + "; ".join(f.message for f in group)
                 for where, group in groupby(shown, key=lambda f: f.where)]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise DataError(" | ".join(parts) + more)

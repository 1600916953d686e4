"""One clinical covariate's cell -> its model input columns, by the study schema's rule (``Covariate``).

numeric: ``(value - center) / scale`` (after ``log(value + 1)`` when declared); categorical: one-hot over the
fixed levels (a value outside them maps to the declared ``other`` level or is an error); binary: 1 for a
``positive`` value, 0 for a ``negative`` one (case-insensitive). A blank cell (or NA, NaN, N/A) is missing: an
error with ``missing = "refuse"``, else the study-fixed ``fill`` (categorical: all zeros) and a 1 in the missing
indicator column. Nothing depends on other patients.
"""

from __future__ import annotations

import math

from fedfusion.study.schema import Covariate

MISSING_TEXTS = frozenset({"", "na", "nan", "n/a", "null", "none", "."})
"""Cell texts that mean "not recorded" (compared lower-case)."""


class CovariateValueError(ValueError):
    """A cell that the covariate's rule cannot encode; the message names the value and what was expected."""


def is_missing(text: str) -> bool:
    """True for a blank or NA-like cell."""
    return text.strip().lower() in MISSING_TEXTS


def encode_covariate(covariate: Covariate, text: str) -> list[float]:
    """The covariate's ``width`` input values for one cell; ``CovariateValueError`` saying why not."""
    indicator = covariate.missing == "indicator"
    if is_missing(text):
        if not indicator:
            raise CovariateValueError(f"{covariate.name} is missing (the schema says missing = \"refuse\")")
        base = [0.0] * len(covariate.levels) if covariate.type == "categorical" else [covariate.fill]
        return [*base, 1.0]
    value = _encode_present(covariate, text.strip())
    return [*value, 0.0] if indicator else value


def _encode_present(covariate: Covariate, text: str) -> list[float]:
    if covariate.type == "numeric":
        try:
            number = float(text)
        except ValueError:
            raise CovariateValueError(f"{covariate.name} must be a number, got {text!r}") from None
        if not math.isfinite(number):
            raise CovariateValueError(f"{covariate.name} must be a finite number, got {text!r}")
        if covariate.log:
            if number < 0:
                raise CovariateValueError(f"{covariate.name} must be >= 0 (it is log-transformed), got {text!r}")
            number = math.log(number + 1.0)
        return [(number - covariate.center) / covariate.scale]
    if covariate.type == "binary":
        key = text.lower()
        if key in {v.lower() for v in covariate.positive}:
            return [1.0]
        if key in {v.lower() for v in covariate.negative}:
            return [0.0]
        raise CovariateValueError(f"{covariate.name} must be one of {list(covariate.positive + covariate.negative)}, "
                                  f"got {text!r}")
    level = _level(covariate, text)
    return [1.0 if candidate == level else 0.0 for candidate in covariate.levels]


def _level(covariate: Covariate, text: str) -> str:
    """The declared level ``text`` names (exact, else case-insensitive), else ``other``; else an error."""
    if text in covariate.levels:
        return text
    folded = {level.lower(): level for level in covariate.levels}
    if text.lower() in folded:
        return folded[text.lower()]
    if covariate.other:
        return covariate.other
    raise CovariateValueError(f"{covariate.name} level {text!r} is not one of the schema's levels "
                              f"{list(covariate.levels)} (declare it, or an `other` level)")

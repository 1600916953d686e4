"""Error types. Every message names the file, patient or site it is about and what is wrong."""

from __future__ import annotations


class FedfusionError(Exception):
    """Base class of all errors fedfusion raises on purpose."""


class ConfigError(FedfusionError):
    """A study or site configuration value is missing or invalid."""


class DataError(FedfusionError):
    """A site's input data (slide, table, manifest) is unreadable or invalid."""


class SlideError(DataError):
    """A whole-slide image cannot be opened or holds no usable tissue."""


class PrivacyError(FedfusionError):
    """A privacy requirement (budget, policy) forbids the requested operation."""


class AppNotApprovedError(FedfusionError):
    """A site was asked to run a Flower app (FAB) its admin has not approved."""

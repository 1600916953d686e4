"""Error types. Every message names the file, patient or site it is about and what is wrong.

That text is for the local log and the local operator. What a site sends to the coordinator is narrower: a
refusal (``SiteRefusal``) sends its ``public_reason``, fixed text naming the site and the rule; any other error
sends only the site's name and the error's class. Paths, patient ids and exception text stay at the site.
"""

from __future__ import annotations

from pathlib import Path


class FedfusionError(Exception):
    """Base class of all errors fedfusion raises on purpose."""


class ConfigError(FedfusionError):
    """A study or site configuration value is missing or invalid."""


class DataError(FedfusionError):
    """A site's input data (slide, table, manifest) is unreadable or invalid."""


class SlideError(DataError):
    """A whole-slide image cannot be opened or holds no usable tissue."""


class VolumeError(DataError):
    """A radiology volume (DICOM series or NIfTI file) or its mask cannot be read or does not fit the study."""


class FeaturesNotPreparedError(DataError):
    """Slides of a site have no tile features in its feature cache: ``fedfusion site prepare`` was not run.

    Training only reads the cache (``fedfusion.data.slides.prepare`` writes it, ahead of any study); the message
    names the site, how many slides lack features, one of them and the exact command that prepares them.
    """

    def __init__(self, site: str, slides: list[Path], command: str, kind: str = "slides") -> None:
        self.site = site
        self.slides = list(slides)
        self.command = command
        super().__init__(f"site {site}: features not prepared for {len(self.slides)} {kind} (e.g. {self.slides[0]}): "
                         f"run {command}")


class PrivacyError(FedfusionError):
    """A privacy requirement (budget, policy) forbids the requested operation."""


class SiteRefusal(PrivacyError):
    """A site refuses a request under one of its rules.

    ``public_reason`` (``"site <site> refuses <request>: <rule>"``) is all the coordinator learns: the site, what
    it refuses and the rule, in text fedfusion writes itself. ``detail`` (numbers, paths, the text of the error
    that caused the refusal) goes only into ``str()``, for the site's own log.
    """

    def __init__(self, site: str, rule: str, *, request: str = "the request", detail: str = "") -> None:
        self.site = site
        self.rule = rule
        self.request = request
        self.detail = detail
        super().__init__(self.public_reason + (f" ({detail})" if detail else ""))

    @property
    def public_reason(self) -> str:
        """The fixed text sent to the coordinator: site, request and rule, never a path or exception text."""
        return f"site {self.site} refuses {self.request}: {self.rule}"


class CorruptStateError(FedfusionError):
    """A file fedfusion wrote to keep its own state is unreadable (truncated, edited, another format).

    Never repaired silently: the owner decides (restore a copy, or move the file away and start again).
    """

    def __init__(self, what: str, path: Path, problem: str, remedy: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{what} {path} is unreadable ({problem})" + (f"; {remedy}" if remedy else ""))


class CorruptLedgerError(CorruptStateError, PrivacyError):
    """A site's privacy ledger is unreadable: the spend is unknown, so nothing may be trained."""


class CorruptReplyError(CorruptStateError, PrivacyError):
    """A site's stored reply to a round is unreadable: what was sent is unknown, so the round is not trained."""


class CorruptCheckpointError(CorruptStateError):
    """The coordinator's checkpoint of a study (or its record of the study) is unreadable."""


class ProtocolError(FedfusionError):
    """A message from the other side is malformed: a record or value is missing, of the wrong type or stage."""


class AppNotApprovedError(FedfusionError):
    """A site was asked to run a Flower app (FAB) its admin has not approved."""

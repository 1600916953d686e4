"""What Flower's run config carries for one study: the study itself, its id, and the coordinator's settings.

Three kinds of values travel together in ``context.run_config`` because Flower has one channel for them, and are
kept apart here:

- the study (``StudyConfig``): what it computes; hashed into its identity; every site reads it;
- the study's id (``study-id``): its name across coordinator restarts (a resubmitted study gets a new Flower run
  id); sites key their privacy-ledger rounds and stored replies by it;
- the coordinator's runtime settings (``CoordinatorSettings``): where its results go and how long it waits for
  sites. Changing them changes nothing about the study; sites ignore them.

A site's own facts (data folder, device, ledger folder) never travel here: they are node config
(``fedfusion.site.node_context``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedfusion.errors import ConfigError
from fedfusion.study.config import RUN_KEYS, StudyConfig
from fedfusion.study.identity import derived_study_id

STUDY_ID_KEY = "study-id"
RESULTS_DIR_KEY = "results-dir"
ROUND_TIMEOUT_KEY = "round-timeout"
DEFAULT_ROUND_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class CoordinatorSettings:
    """How and where the coordinator runs a study; not part of the study (not hashed, ignored by sites)."""

    results_dir: str = ""
    """The coordinator's results folder for the study (metrics, checkpoint, final model); empty: ``runs/<time>``."""
    round_timeout: float = DEFAULT_ROUND_TIMEOUT_S
    """Seconds the coordinator waits for the sites' replies in each round phase; a site that has not answered by
    then is left out of the round (it rejoins the next one)."""

    def __post_init__(self) -> None:
        if not self.round_timeout > 0:
            raise ConfigError(f"run config '{ROUND_TIMEOUT_KEY}' must be > 0 seconds, got {self.round_timeout}")


@dataclass(frozen=True)
class StudyRun:
    """A study as submitted to Flower: the study, its id and the coordinator's settings."""

    study: StudyConfig
    study_id: str
    """Always set: the operator's name for the study, or ``cfg-<hash>`` of the study (``derived_study_id``)."""
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)

    @classmethod
    def of(cls, study: StudyConfig, study_id: str = "",
           coordinator: CoordinatorSettings | None = None) -> StudyRun:
        """The run of ``study`` under ``study_id`` (empty: derived from the study's hash)."""
        return cls(study, study_id or derived_study_id(study), coordinator or CoordinatorSettings())

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> StudyRun:
        """Parse Flower's ``context.run_config``; unknown keys stay in ``study.extra``."""
        study = StudyConfig.from_run_config(run_config)
        try:
            timeout = float(run_config.get(ROUND_TIMEOUT_KEY, DEFAULT_ROUND_TIMEOUT_S))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"run config '{ROUND_TIMEOUT_KEY}': not a number: "
                              f"{run_config[ROUND_TIMEOUT_KEY]!r}") from exc
        coordinator = CoordinatorSettings(results_dir=str(run_config.get(RESULTS_DIR_KEY, "")), round_timeout=timeout)
        return cls.of(study, str(run_config.get(STUDY_ID_KEY, "")), coordinator)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The dashed ``key -> value`` mapping Flower carries as ``run_config``."""
        run_keys: dict[str, bool | int | float | str] = {
            STUDY_ID_KEY: self.study_id,
            RESULTS_DIR_KEY: self.coordinator.results_dir,
            ROUND_TIMEOUT_KEY: self.coordinator.round_timeout,
        }
        if set(run_keys) != RUN_KEYS:
            raise ConfigError(f"internal: run keys {sorted(run_keys)} differ from StudyConfig's {sorted(RUN_KEYS)}")
        return {**self.study.to_run_config(), **run_keys}

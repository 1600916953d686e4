"""``studies/<id>/study.json`` at the coordinator: what was submitted and how it ended.

A study whose state is still ``running`` when the coordinator starts was interrupted; its folder keeps the exact
Flower app (same FAB hash, so the sites need no new approval) and its results folder, so it can be resubmitted
under the same id (``fedfusion study start --resubmit ID``).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.deployment.coordinator.state import CoordinatorPaths
from fedfusion.errors import ConfigError, CorruptCheckpointError

STUDY_FILE = "study.json"
PREPARED, RUNNING, FINISHED, FAILED = "prepared", "running", "finished", "failed"


@dataclass(frozen=True)
class StudyRecord:
    """One study submitted to this coordinator."""

    study_id: str
    status: str
    fab_hash: str
    app_dir: str
    results_dir: str
    submitted: str
    ended: str | None = None
    submissions: int = 1


def study_folder(paths: CoordinatorPaths, study_id: str) -> Path:
    """The folder of one study."""
    return paths.studies_dir / study_id


def write_study(paths: CoordinatorPaths, record: StudyRecord) -> None:
    """Save a study's state atomically."""
    atomic_write_text(study_folder(paths, record.study_id) / STUDY_FILE, json.dumps(asdict(record), indent=2) + "\n")


def read_study(paths: CoordinatorPaths, study_id: str) -> StudyRecord:
    """A study's state; :class:`ConfigError` naming the file when it is missing, ``CorruptCheckpointError`` when it
    is malformed."""
    path = study_folder(paths, study_id) / STUDY_FILE
    try:
        return StudyRecord(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError(f"no study {study_id!r} at this coordinator ({path} is missing)") from exc
    except (ValueError, TypeError) as exc:
        raise CorruptCheckpointError(f"study {study_id!r}: its record", path, repr(exc)) from exc


def ended(record: StudyRecord, status: str) -> StudyRecord:
    """The record of a study that has just ended with ``status``."""
    return replace(record, status=status, ended=now())


def interrupted_studies(paths: CoordinatorPaths) -> list[str]:
    """Ids of studies still marked running (the coordinator stopped during them)."""
    if not paths.studies_dir.is_dir():
        return []
    return sorted(folder.name for folder in paths.studies_dir.iterdir()
                  if (folder / STUDY_FILE).is_file() and read_study(paths, folder.name).status == RUNNING)


def now() -> str:
    """The current UTC time, ISO format."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

"""The coordinator's checkpoint: after every completed round, enough to resume the study at the next one.

``<results-dir>/checkpoint/`` holds ``global-round-<k>.pt`` (the global model after round k, a PyTorch state
dict) and ``state.json``::

    {"format": 1, "study_id", "config_hash", "config": {run config}, "completed_round": k, "num_rounds": N,
     "finished": k == N, "arrays_file", "arrays_sha256", "site_rows": [...], "round_rows": [...], "saved_at"}

The model file is written first and ``state.json`` names it with its sha256: replacing ``state.json`` (atomically)
is the commit point, so a kill at any moment leaves either the previous round's checkpoint or this one, never a
mix. ``site_rows``/``round_rows`` are the results recorder's rows so far, so the results folder of a resumed study
lists every round exactly once. ``PatientWeightedFedAvg`` keeps no state of its own between rounds (FedAvg
aggregates each round from the replies alone), so the global model, the round number and the recorder's rows are
the whole state worth keeping.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fedfusion.atomic_io import atomic_write_bytes, atomic_write_text
from fedfusion.errors import ConfigError, CorruptCheckpointError
from fedfusion.study.config import StudyConfig
from fedfusion.study.identity import config_hash

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """A study's progress: the last completed round, the global model after it and the recorder's rows."""

    completed_round: int
    num_rounds: int
    weights: dict[str, torch.Tensor]
    site_rows: list[dict[str, Any]] = field(default_factory=list)
    round_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True when every round of the study is done."""
        return self.completed_round >= self.num_rounds


class CoordinatorCheckpoint:
    """Reads and writes the checkpoint of one study in ``<results_dir>/checkpoint/``."""

    def __init__(self, results_dir: Path, study: StudyConfig, study_id: str) -> None:
        self.directory = Path(results_dir) / CHECKPOINT_DIR
        self.study = study
        self.study_id = study_id

    @property
    def state_path(self) -> Path:
        """The commit file (``state.json``)."""
        return self.directory / STATE_FILE

    def load(self) -> Checkpoint | None:
        """This study's checkpoint, or None when the folder holds none.

        ``ConfigError`` when the folder holds another study's checkpoint or this study's with a changed config;
        ``CorruptCheckpointError`` for an unreadable or inconsistent one (named; never silently restarted, which
        would spend privacy again).
        """
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if state["format"] != CHECKPOINT_FORMAT:
                raise ValueError(f"format {state['format']} is not {CHECKPOINT_FORMAT}")
            self._check_same_study(state)
            arrays_path = self.directory / str(state["arrays_file"])
            data = arrays_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != state["arrays_sha256"]:
                raise ValueError(f"{arrays_path.name} does not match the sha256 in {STATE_FILE}")
            weights = torch.load(io.BytesIO(data), weights_only=True)
            return Checkpoint(completed_round=int(state["completed_round"]), num_rounds=int(state["num_rounds"]),
                              weights=weights, site_rows=list(state["site_rows"]),
                              round_rows=list(state["round_rows"]))
        except ConfigError:
            raise
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
                RuntimeError) as exc:
            raise CorruptCheckpointError("coordinator checkpoint", self.state_path, str(exc),
                                         f"move the folder {self.directory} away to start the study again") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` (model file first, then the commit file), then drop older model files."""
        buffer = io.BytesIO()
        torch.save(checkpoint.weights, buffer)
        data = buffer.getvalue()
        arrays_file = f"global-round-{checkpoint.completed_round}.pt"
        atomic_write_bytes(self.directory / arrays_file, data)
        state = {
            "format": CHECKPOINT_FORMAT, "study_id": self.study_id, "config_hash": config_hash(self.study),
            "config": self.study.to_run_config(), "completed_round": checkpoint.completed_round,
            "num_rounds": checkpoint.num_rounds, "finished": checkpoint.finished, "arrays_file": arrays_file,
            "arrays_sha256": hashlib.sha256(data).hexdigest(), "site_rows": checkpoint.site_rows,
            "round_rows": checkpoint.round_rows,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(self.state_path, json.dumps(state, indent=1) + "\n")
        for old in self.directory.glob("global-round-*.pt"):
            if old.name != arrays_file:
                old.unlink(missing_ok=True)

    def _check_same_study(self, state: dict[str, Any]) -> None:
        if state["study_id"] != self.study_id:
            raise ConfigError(f"results folder {self.directory.parent} holds a checkpoint of study "
                              f"'{state['study_id']}', not of study '{self.study_id}'; choose another results "
                              "folder (a changed study config without a 'study-id' is another study)")
        if state["config_hash"] != config_hash(self.study):
            saved, now = dict(state["config"]), self.study.to_run_config()
            changed = sorted(key for key in {*saved, *now} if saved.get(key) != now.get(key))
            details = ", ".join(f"'{key}' {saved.get(key)!r} -> {now.get(key)!r}" for key in changed)
            raise ConfigError(f"study '{self.study_id}' in {self.directory.parent} was started with another "
                              f"config ({details}); resume it with the same config or start a new study")

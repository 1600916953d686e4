"""The coordinator's checkpoint: after every completed round, enough to resume the study at the next one.

``<results-dir>/checkpoint/`` holds ``global-round-<k>.pt`` (the global model after round k, a PyTorch state
dict), ``server-optimizer-round-<k>.pt`` (the server optimizer's moments, tensors by name) and ``state.json``::

    {"format": 2, "study_id", "config_hash", "config": {run config}, "completed_round": k, "num_rounds": N,
     "finished": k == N, "arrays_file", "arrays_sha256", "server_optimizer": null or {"rule", "step",
     "moments_file", "moments_sha256"}, "site_rows": [...], "round_rows": [...], "saved_at"}

The model and moments files are written first and ``state.json`` names them with their sha256: replacing
``state.json`` (atomically) is the commit point, so a kill at any moment leaves either the previous round's
checkpoint or this one, never a mix. ``site_rows``/``round_rows`` are the results recorder's rows so far, so the
results folder of a resumed study lists every round exactly once. Besides the global model, the round number and
the recorder's rows, the only state between rounds is the server optimizer's (its step count and moments,
``coordinator/server_optimizer.py``); FedAvg aggregates each round from the replies alone. A format-1 checkpoint
(written before server optimizers existed) is refused with that reason.
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

import numpy as np
import torch

from fedfusion.atomic_io import atomic_write_bytes, atomic_write_text
from fedfusion.coordinator.server_optimizer import NDArray, ServerOptimizerState
from fedfusion.errors import ConfigError, CorruptCheckpointError
from fedfusion.study.config import StudyConfig
from fedfusion.study.identity import config_hash

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
MODEL_PREFIX = "global-round-"
OPTIMIZER_PREFIX = "server-optimizer-round-"
CHECKPOINT_FORMAT = 2
"""2: with the server optimizer's state (1: without; refused)."""


@dataclass
class Checkpoint:
    """A study's progress: the last completed round, the global model after it and the recorder's rows."""

    completed_round: int
    num_rounds: int
    weights: dict[str, torch.Tensor]
    site_rows: list[dict[str, Any]] = field(default_factory=list)
    round_rows: list[dict[str, Any]] = field(default_factory=list)
    server_optimizer: ServerOptimizerState | None = None
    """The server optimizer after round ``completed_round`` (None: a fresh one)."""

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
                raise ValueError(f"format {state['format']} is not {CHECKPOINT_FORMAT} (format 1 was written by a "
                                 "fedfusion without server optimizers and holds no server optimizer state)")
            self._check_same_study(state)
            weights = self._read_tensors(str(state["arrays_file"]), str(state["arrays_sha256"]))
            optimizer = state["server_optimizer"]
            return Checkpoint(completed_round=int(state["completed_round"]), num_rounds=int(state["num_rounds"]),
                              weights=weights, site_rows=list(state["site_rows"]),
                              round_rows=list(state["round_rows"]),
                              server_optimizer=None if optimizer is None else ServerOptimizerState(
                                  str(optimizer["rule"]), int(optimizer["step"]),
                                  _to_numpy(self._read_tensors(str(optimizer["moments_file"]),
                                                               str(optimizer["moments_sha256"])))))
        except ConfigError:
            raise
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError,
                RuntimeError) as exc:
            raise CorruptCheckpointError("coordinator checkpoint", self.state_path, str(exc),
                                         f"move the folder {self.directory} away to start the study again") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` (model and optimizer files first, then the commit file), then drop older files."""
        completed = checkpoint.completed_round
        arrays_file = f"{MODEL_PREFIX}{completed}.pt"
        arrays_sha256 = self._write_tensors(arrays_file, checkpoint.weights)
        optimizer: dict[str, Any] | None = None
        if checkpoint.server_optimizer is not None:
            moments = {name: torch.from_numpy(np.array(value)) for name, value in
                       checkpoint.server_optimizer.moments.items()}
            moments_file = f"{OPTIMIZER_PREFIX}{completed}.pt"
            optimizer = {"rule": checkpoint.server_optimizer.rule, "step": checkpoint.server_optimizer.step,
                         "moments_file": moments_file, "moments_sha256": self._write_tensors(moments_file, moments)}
        state = {
            "format": CHECKPOINT_FORMAT, "study_id": self.study_id, "config_hash": config_hash(self.study),
            "config": self.study.to_run_config(), "completed_round": completed,
            "num_rounds": checkpoint.num_rounds, "finished": checkpoint.finished, "arrays_file": arrays_file,
            "arrays_sha256": arrays_sha256, "server_optimizer": optimizer, "site_rows": checkpoint.site_rows,
            "round_rows": checkpoint.round_rows,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(self.state_path, json.dumps(state, indent=1) + "\n")
        kept = {arrays_file, *([optimizer["moments_file"]] if optimizer else [])}
        for old in [*self.directory.glob(f"{MODEL_PREFIX}*.pt"), *self.directory.glob(f"{OPTIMIZER_PREFIX}*.pt")]:
            if old.name not in kept:
                old.unlink(missing_ok=True)

    def _write_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> str:
        """Write ``tensors`` to ``name`` in the checkpoint folder (atomically); return the file's sha256."""
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(self.directory / name, data)
        return hashlib.sha256(data).hexdigest()

    def _read_tensors(self, name: str, sha256: str) -> dict[str, torch.Tensor]:
        """The tensors of file ``name``, after checking its sha256 against ``state.json``'s."""
        path = self.directory / name
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{path.name} does not match the sha256 in {STATE_FILE}")
        tensors: dict[str, torch.Tensor] = torch.load(io.BytesIO(data), weights_only=True)
        return tensors

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


def _to_numpy(tensors: dict[str, torch.Tensor]) -> dict[str, NDArray]:
    return {name: tensor.numpy() for name, tensor in tensors.items()}

"""The site's count of its evaluations, beside its privacy ledger: the policy's evaluation limits, kept across restarts.

Evaluation metrics are not DP, so the site limits how often the coordinator may look at its held-out patients
(``max-evaluations-per-round``, ``max-evaluations-per-study``; ``fedfusion.privacy.site_policy``). One JSON file per
dataset, ``<ledger_dir>/evaluations/<dataset key>.json``, rewritten atomically under an exclusive lock::

    {"format": 1, "dataset": KEY, "evaluations": [{"id", "study_id", "server_round", "model_sha256",
                                                   "counted_at", "metrics": {...} | null}]}

An evaluation is **counted** before the metrics are computed (a kill never under-counts) and **answered** with
the metrics the site sent. The same study, round and global model asked again gets the answered metrics again,
uncounted: nothing new leaves (with ``eval-metric-noise``, not even fresh noise). A counted evaluation that was
killed before it was answered has nothing to repeat: asked again, it counts again.
"""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import CorruptLedgerError, SiteRefusal
from fedfusion.privacy.ledger import DatasetId
from fedfusion.privacy.site_policy import SitePolicy

EVALUATIONS_DIR = "evaluations"
EVALUATION_LOG_FORMAT = 1


@dataclass(frozen=True)
class Evaluation:
    """One counted evaluation of a study's round."""

    id: str
    study_id: str
    server_round: int
    model_sha256: str
    """The digest of the global model evaluated (``fedfusion.site.round_replay.weights_digest``)."""
    counted_at: str
    metrics: dict[str, float] | None = None
    """What the site sent; None while counted but not answered (or killed before it was)."""


class EvaluationLog:
    """The evaluations of one dataset, persisted in ``<ledger_dir>/evaluations/``."""

    def __init__(self, ledger_dir: Path, dataset: DatasetId) -> None:
        self.directory = Path(ledger_dir) / EVALUATIONS_DIR
        self.dataset = dataset

    @property
    def path(self) -> Path:
        """The log file of this dataset."""
        return self.directory / f"{self.dataset.key}.json"

    def evaluations(self) -> list[Evaluation]:
        """Every counted evaluation, oldest first."""
        return self._read()

    def answered(self, study_id: str, server_round: int, model_sha256: str) -> dict[str, float] | None:
        """The metrics already sent for this study, round and global model; None when there are none to repeat."""
        for evaluation in reversed(self._read()):
            if (evaluation.study_id, evaluation.server_round, evaluation.model_sha256) == (
                    study_id, server_round, model_sha256) and evaluation.metrics is not None:
                return dict(evaluation.metrics)
        return None

    def count(self, study_id: str, server_round: int, model_sha256: str, policy: SitePolicy) -> str:
        """Count one evaluation before it is computed; its id. ``SiteRefusal`` (nothing written) beyond the
        policy's ``max-evaluations-per-round`` or ``max-evaluations-per-study``."""
        request = f"evaluation of round {server_round}"
        with self._locked():
            evaluations = self._read()
            of_study = [e for e in evaluations if e.study_id == study_id]
            if sum(e.server_round == server_round for e in of_study) >= policy.max_evaluations_per_round:
                raise SiteRefusal(self.dataset.site,
                                  f"rule 'max-evaluations-per-round' ({policy.max_evaluations_per_round})",
                                  request=request, detail=f"study {study_id}")
            if len(of_study) >= policy.max_evaluations_per_study:
                raise SiteRefusal(self.dataset.site,
                                  f"rule 'max-evaluations-per-study' ({policy.max_evaluations_per_study})",
                                  request=request, detail=f"study {study_id}")
            counted = Evaluation(uuid.uuid4().hex, study_id, server_round, model_sha256,
                                 datetime.now(UTC).isoformat(timespec="seconds"))
            self._write([*evaluations, counted])
        return counted.id

    def answer(self, evaluation_id: str, metrics: dict[str, float]) -> None:
        """Record the metrics sent for the counted evaluation ``evaluation_id``."""
        with self._locked():
            evaluations = self._read()
            index = next((i for i, e in enumerate(evaluations) if e.id == evaluation_id), None)
            if index is None:
                raise CorruptLedgerError(f"site {self.dataset.site}: evaluation log", self.path,
                                         f"it has no counted evaluation {evaluation_id}")
            evaluations[index] = Evaluation(**{**asdict(evaluations[index]), "metrics": dict(metrics)})
            self._write(evaluations)

    def _read(self) -> list[Evaluation]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw["format"] != EVALUATION_LOG_FORMAT or raw["dataset"] != self.dataset.key:
                raise ValueError(f"format {raw['format']} / dataset {raw['dataset']} is not "
                                 f"{EVALUATION_LOG_FORMAT} / {self.dataset.key}")
            return [Evaluation(**e) for e in raw["evaluations"]]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CorruptLedgerError(f"site {self.dataset.site}: evaluation log", self.path, str(exc),
                                     "refusing to evaluate without knowing how often it did") from exc

    def _write(self, evaluations: Sequence[Evaluation]) -> None:
        document = {"format": EVALUATION_LOG_FORMAT, "dataset": self.dataset.key,
                    "evaluations": [asdict(e) for e in evaluations]}
        atomic_write_text(self.path, json.dumps(document, indent=1, allow_nan=True) + "\n")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

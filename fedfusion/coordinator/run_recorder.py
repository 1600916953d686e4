"""Collects what sites report each round, prints it live, and writes a study's results folder.

Only aggregate numbers reach the coordinator (per site: patients, epsilon, loss, C-index, AUC, MCC and pair
counts; with ``personalization-epochs`` the last round's ``personalized-*`` metrics of each site's personalized
model), so only those are recorded. Files are written atomically; ``personalization.csv`` puts each site's global
and personalized held-out metrics side by side.

Whether the study trained at all is the recorder's to say (``TrainingOutcome``, from its round rows, which the
checkpoint keeps across restarts): ``training.json`` names the rounds that aggregated. A study in which no round
aggregated is "not trained": its results hold no ``final_model.pt`` (the model would be the untrained initial one)
and its live lines show no metric of that model.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from fedfusion.atomic_io import atomic_write_bytes, atomic_write_text
from fedfusion.coordinator.progress_plot import write_progress_plot
from fedfusion.coordinator.strategies.patient_weighted_fedavg import SiteReply
from fedfusion.protocol import (
    EPSILON_KEY,
    NOT_AGGREGATED_KEY,
    PERSONALIZATION_REFUSED_KEY,
    PERSONALIZED_PREFIX,
    POOLED_C_INDEX_KEY,
    REJECTED_KEY,
    REJECTED_REPLIES_KEY,
    SECURE_AGGREGATION_SITES_KEY,
    WEIGHT_KEY,
)
from fedfusion.study.config import StudyConfig

SITE_METRICS_FILE = "site_metrics.csv"
ROUND_METRICS_FILE = "round_metrics.csv"
METRICS_JSON_FILE = "metrics.json"
CONFIG_FILE = "config.json"
MODEL_FILE = "final_model.pt"
PLOT_FILE = "progress.png"
TRAINING_FILE = "training.json"
PERSONALIZATION_FILE = "personalization.csv"


@dataclass(frozen=True)
class TrainingOutcome:
    """Which of a study's rounds aggregated (changed the global model)."""

    num_rounds: int
    aggregated_rounds: tuple[int, ...]
    recorded_rounds: tuple[int, ...]
    """Train rounds recorded so far, aggregated or not."""

    @classmethod
    def from_rows(cls, num_rounds: int, round_rows: list[dict[str, object]]) -> TrainingOutcome:
        """The outcome a recorder's round rows describe (a train row without ``not-aggregated`` aggregated)."""
        train = [row for row in round_rows if row.get("phase") == "train"]
        aggregated = [row for row in train if not row.get(NOT_AGGREGATED_KEY)]
        return cls(num_rounds, tuple(sorted({_round(row) for row in aggregated})),
                   tuple(sorted({_round(row) for row in train})))

    @property
    def trained(self) -> bool:
        """True when at least one round aggregated."""
        return bool(self.aggregated_rounds)

    @property
    def status(self) -> str:
        """``trained``, ``partly trained`` (some round did not aggregate) or ``not trained``."""
        if not self.trained:
            return "not trained"
        return "trained" if len(self.aggregated_rounds) == len(self.recorded_rounds) else "partly trained"

    def describe(self) -> str:
        """One line for the console and the results: what trained, and what the final model is."""
        if not self.trained:
            return (f"NOT TRAINED: none of the {len(self.recorded_rounds)} rounds aggregated (reasons in the "
                    "warnings above); no final model is written and no C-index is reported")
        missed = sorted(set(self.recorded_rounds) - set(self.aggregated_rounds))
        if not missed:
            return f"trained: all {len(self.aggregated_rounds)} rounds aggregated"
        return (f"partly trained: {len(self.aggregated_rounds)} of {len(self.recorded_rounds)} rounds aggregated "
                f"(not aggregated: {', '.join(map(str, missed))}); the final model is the global model after round "
                f"{self.aggregated_rounds[-1]}")

    def to_json(self) -> str:
        """The content of ``training.json``."""
        return json.dumps({"status": self.status, "num_rounds": self.num_rounds,
                           "aggregated_rounds": list(self.aggregated_rounds),
                           "recorded_rounds": list(self.recorded_rounds), "summary": self.describe()}, indent=2)

    @classmethod
    def read(cls, results_dir: Path) -> TrainingOutcome | None:
        """The outcome a results folder's ``training.json`` records; None when it has none."""
        path = results_dir / TRAINING_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(int(raw["num_rounds"]), tuple(int(r) for r in raw["aggregated_rounds"]),
                   tuple(int(r) for r in raw["recorded_rounds"]))


def _round(row: dict[str, object]) -> int:
    value = row["round"]
    return int(value) if isinstance(value, (int, float, str)) else 0


@dataclass
class RunRecorder:
    """Accumulates per-site and per-round metrics of one study run."""

    study: StudyConfig
    emit: Callable[[str], None] = print
    site_rows: list[dict[str, object]] = field(default_factory=list)
    round_rows: list[dict[str, object]] = field(default_factory=list)

    def site_reply(self, reply: SiteReply) -> None:
        """Record (and print) one site's numbers for one round and phase."""
        self.site_rows.append({"round": reply.server_round, "phase": reply.phase, "site": reply.site,
                               **reply.metrics})
        self.emit(f"{self._round_tag(reply.server_round)} {reply.phase:<8} {reply.site:<10} "
                  f"{self._describe(reply.phase, reply.metrics)}")

    def round_aggregated(self, server_round: int, phase: str, metrics: dict[str, float]) -> None:
        """Record (and print) the federation's aggregate for one round and phase."""
        self.round_rows.append({"round": server_round, "phase": phase, **metrics})
        self.emit(f"{self._round_tag(server_round)} {phase:<8} {'federation':<10} {self._describe(phase, metrics)}")

    def training_outcome(self) -> TrainingOutcome:
        """Which rounds aggregated so far."""
        return TrainingOutcome.from_rows(self.study.num_server_rounds, self.round_rows)

    def _describe(self, phase: str, metrics: dict[str, float]) -> str:
        if phase == "evaluate" and "error" not in metrics and not self.training_outcome().trained:
            return UNTRAINED_EVALUATION
        return _describe(phase, metrics)

    def _round_tag(self, server_round: int) -> str:
        return f"[round {server_round}/{self.study.num_server_rounds}]"

    def write(self, results_dir: Path, final_weights: dict[str, torch.Tensor] | None) -> TrainingOutcome:
        """Write metrics (CSV + JSON), the plot, the config used, ``training.json`` and the final model (only when
        some round aggregated) into ``results_dir``; return the training outcome."""
        results_dir.mkdir(parents=True, exist_ok=True)
        site_table = pd.DataFrame(self.site_rows)
        round_table = pd.DataFrame(self.round_rows)
        atomic_write_text(results_dir / SITE_METRICS_FILE, site_table.to_csv(index=False))
        atomic_write_text(results_dir / ROUND_METRICS_FILE, round_table.to_csv(index=False))
        atomic_write_text(
            results_dir / METRICS_JSON_FILE,
            json.dumps({"sites": _json_safe(self.site_rows), "rounds": _json_safe(self.round_rows)}, indent=2),
        )
        atomic_write_text(results_dir / CONFIG_FILE, json.dumps(self.study.to_run_config(), indent=2))
        outcome = self.training_outcome()
        atomic_write_text(results_dir / TRAINING_FILE, outcome.to_json() + "\n")
        if final_weights is not None and outcome.trained:
            buffer = io.BytesIO()
            torch.save(final_weights, buffer)
            atomic_write_bytes(results_dir / MODEL_FILE, buffer.getvalue())
        else:
            (results_dir / MODEL_FILE).unlink(missing_ok=True)
        personalization = personalization_table(self.site_rows)
        if personalization.empty:
            (results_dir / PERSONALIZATION_FILE).unlink(missing_ok=True)
        else:
            atomic_write_text(results_dir / PERSONALIZATION_FILE, personalization.to_csv(index=False))
        if not site_table.empty:
            write_progress_plot(site_table, round_table, results_dir / PLOT_FILE)
        return outcome


def personalization_table(site_rows: list[dict[str, object]]) -> pd.DataFrame:
    """Per site, from the evaluate rows carrying personalized metrics (the last round's): the round, each metric of
    the global model beside its ``personalized-`` counterpart, and ``personalization-refused`` where a site refused.

    Empty when no site reported personalization."""
    rows = [row for row in site_rows if row.get("phase") == "evaluate"
            and any(str(key).startswith(PERSONALIZED_PREFIX) or key == PERSONALIZATION_REFUSED_KEY for key in row)]
    table = []
    for row in rows:
        personalized = [str(key) for key in row if str(key).startswith(PERSONALIZED_PREFIX)]
        columns = [column for key in personalized for column in (key.removeprefix(PERSONALIZED_PREFIX), key)]
        extra = [PERSONALIZATION_REFUSED_KEY] if PERSONALIZATION_REFUSED_KEY in row else []
        table.append({"round": row["round"], "site": row["site"], **{c: row.get(c) for c in [*columns, *extra]}})
    return pd.DataFrame(table)


COUNT_LABELS = ("patients", "secure-aggregation sites", "personalization refused", "rejected")
UNTRAINED_EVALUATION = "not trained yet (no round aggregated): the initial model's metrics are not shown"


def _describe(phase: str, metrics: dict[str, float]) -> str:
    if "error" in metrics:
        return "FAILED (see the site's log)"
    if NOT_AGGREGATED_KEY in metrics:
        return "NOT AGGREGATED: the global model stays as it was (reason in the warning above)"
    if REJECTED_KEY in metrics:
        return "REJECTED: invalid reply, left out like a dropout (reason in the warning above)"
    keys = ([("patients", "patients"), (WEIGHT_KEY, "patients"), (EPSILON_KEY, "eps"), ("train-loss", "loss"),
             (SECURE_AGGREGATION_SITES_KEY, "secure-aggregation sites"), (REJECTED_REPLIES_KEY, "rejected")]
            if phase == "train" else
            [("patients", "patients"), (WEIGHT_KEY, "patients"), ("c-index", "C-index"),
             (POOLED_C_INDEX_KEY, "pooled C-index"), ("td-auc", "td-AUC"), ("ibs", "IBS"),
             (PERSONALIZED_PREFIX + "c-index", "personalized C-index"),
             (PERSONALIZATION_REFUSED_KEY, "personalization refused"),
             (REJECTED_REPLIES_KEY, "rejected"),
             *((key, key.replace("-auc", " AUC").replace("-mcc", " MCC")) for key in sorted(metrics)
               if key.endswith(("-auc", "-mcc")) and key != "td-auc" and not key.startswith(PERSONALIZED_PREFIX))])
    parts = []
    for key, label in keys:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{label}={int(value)}" if label in COUNT_LABELS and math.isfinite(value)
                         else f"{label}={value:.3f}")
    return "  ".join(parts)


def _json_safe(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Replace NaN/inf (not valid JSON) with null."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in rows]

"""Collects what sites report each round, prints it live, and writes a study's results folder.

Only aggregate numbers reach the coordinator (per site: patients, epsilon, loss, C-index, AUC, MCC and pair
counts), so only those are recorded. Files are written atomically.
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
    POOLED_C_INDEX_KEY,
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
                  f"{_describe(reply.phase, reply.metrics)}")

    def round_aggregated(self, server_round: int, phase: str, metrics: dict[str, float]) -> None:
        """Record (and print) the federation's aggregate for one round and phase."""
        self.round_rows.append({"round": server_round, "phase": phase, **metrics})
        self.emit(f"{self._round_tag(server_round)} {phase:<8} {'federation':<10} {_describe(phase, metrics)}")

    def _round_tag(self, server_round: int) -> str:
        return f"[round {server_round}/{self.study.num_server_rounds}]"

    def write(self, results_dir: Path, final_weights: dict[str, torch.Tensor] | None) -> None:
        """Write metrics (CSV + JSON), the plot, the config used and the final model into ``results_dir``."""
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
        if final_weights is not None:
            buffer = io.BytesIO()
            torch.save(final_weights, buffer)
            atomic_write_bytes(results_dir / MODEL_FILE, buffer.getvalue())
        if not site_table.empty:
            write_progress_plot(site_table, round_table, results_dir / PLOT_FILE)


COUNT_LABELS = ("patients", "secure-aggregation sites")


def _describe(phase: str, metrics: dict[str, float]) -> str:
    if "error" in metrics:
        return "FAILED (see the site's log)"
    if NOT_AGGREGATED_KEY in metrics:
        return "NOT AGGREGATED: the global model stays as it was (reason in the warning above)"
    keys = ([("patients", "patients"), (WEIGHT_KEY, "patients"), (EPSILON_KEY, "eps"), ("train-loss", "loss"),
             (SECURE_AGGREGATION_SITES_KEY, "secure-aggregation sites")]
            if phase == "train" else
            [("patients", "patients"), (WEIGHT_KEY, "patients"), ("c-index", "C-index"),
             (POOLED_C_INDEX_KEY, "pooled C-index"), ("td-auc", "td-AUC"), ("ibs", "IBS"),
             *((key, key.replace("-auc", " AUC").replace("-mcc", " MCC")) for key in sorted(metrics)
               if key.endswith(("-auc", "-mcc")) and key != "td-auc")])
    parts = []
    for key, label in keys:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{label}={int(value)}" if label in COUNT_LABELS else f"{label}={value:.3f}")
    return "  ".join(parts)


def _json_safe(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Replace NaN/inf (not valid JSON) with null."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in rows]

"""A site's aggregate metrics per study task, from the model's outputs on its patients (what evaluation sends).

Survival tasks: Harrell's C-index with its pair counts (the coordinator pools those exactly), the mean
time-dependent AUC and the integrated Brier score at the task's bin edges (study-fixed times; the censoring
distribution is estimated from the site's training patients, at the site). Classification and binary tasks:
one-vs-rest AUC, MCC and balanced accuracy. The primary survival task's keys are unprefixed (``c-index``,
``concordant-pairs``, ...); every other task's keys are ``<task>-<metric>``. Only aggregates leave the site.

``with_metric_noise`` adds the site policy's ``eval-metric-noise`` (b) to a reply's metrics: Laplace noise of scale
b times one patient's share of each metric over the n held-out patients (1/n of its range for the metrics in
[0, 1], 2/n for MCC, n - 1 pairs for the pair counts), drawn from the OS; results are clipped back into range. The
mean loss is unbounded per patient, so no scale covers it: with noise on it is not sent. A deterrent calibrated to
one patient's share, not a formal DP guarantee (one patient can move a C-index or AUC by more than 1/n when there
are few comparable pairs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from fedfusion.data.patient_records import ClassLabel, PatientRecord, SurvivalLabel
from fedfusion.evaluation.metrics import (
    balanced_accuracy,
    concordance,
    integrated_brier_score,
    subtype_auc,
    subtype_mcc,
    time_dependent_auc,
)
from fedfusion.models.survival_loss import risk_score, survival_at_edges
from fedfusion.protocol import COMPARABLE_PAIRS_KEY, CONCORDANT_PAIRS_KEY
from fedfusion.study.schema import StudySchema, Task


def metric_prefix(schema: StudySchema, task: Task) -> str:
    """``""`` for the primary survival task, else ``"<task name>-"``."""
    return "" if task.is_survival and task is schema.primary_task else f"{task.name}-"


def task_metrics(schema: StudySchema, outputs: Sequence[torch.Tensor], patients: Sequence[PatientRecord],
                 reference: Sequence[PatientRecord]) -> dict[str, float]:
    """Every task's metrics on ``patients`` (``outputs`` in schema task order, one row per patient).

    ``reference`` (the site's training patients) estimates the censoring distribution of the survival metrics.
    """
    metrics: dict[str, float] = {}
    for index, (task, output) in enumerate(zip(schema.tasks, outputs, strict=True)):
        prefix = metric_prefix(schema, task)
        if task.is_survival:
            metrics.update({prefix + k: v for k, v in _survival(task, index, output, patients, reference).items()})
        else:
            labels = np.array([_class(p, index) for p in patients])
            probabilities = torch.softmax(output, dim=1).numpy()
            metrics[prefix + "auc"] = subtype_auc(labels, probabilities)
            metrics[prefix + "mcc"] = subtype_mcc(labels, probabilities)
            metrics[prefix + "balanced-accuracy"] = balanced_accuracy(labels, probabilities)
    return metrics


def empty_metrics(schema: StudySchema) -> dict[str, float]:
    """The metric keys of ``task_metrics`` for a site without patients in the split: NaN, pair counts 0."""
    nan = float("nan")
    metrics: dict[str, float] = {}
    for task in schema.tasks:
        prefix = metric_prefix(schema, task)
        names = (("c-index", nan), (CONCORDANT_PAIRS_KEY, 0.0), (COMPARABLE_PAIRS_KEY, 0.0), ("td-auc", nan),
                 ("ibs", nan)) if task.is_survival else (("auc", nan), ("mcc", nan), ("balanced-accuracy", nan))
        metrics.update({prefix + name: value for name, value in names})
    return metrics


RATE_METRICS = ("c-index", "td-auc", "ibs", "auc", "balanced-accuracy")
"""Metrics in [0, 1] (matched by the end of their key, so every task's and the personalized ones)."""
UNBOUNDED_METRICS = ("loss",)
"""Metrics no noise scale covers (a patient's loss is unbounded): not sent with ``eval-metric-noise``."""


def with_metric_noise(metrics: dict[str, float], patients: int, noise: float,
                      rng: np.random.Generator | None = None) -> dict[str, float]:
    """``metrics`` with Laplace noise of scale ``noise`` x one patient's share of each (see the module docstring);
    unchanged for ``noise`` 0. ``num-examples`` and flags stay exact; ``rng`` only for tests (default: the OS)."""
    if noise == 0:
        return dict(metrics)
    draw = rng if rng is not None else np.random.default_rng()
    patients = max(patients, 1)  # an empty split's metrics are NaN anyway
    noisy: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith(UNBOUNDED_METRICS):
            continue
        if key.endswith((CONCORDANT_PAIRS_KEY, COMPARABLE_PAIRS_KEY)):
            noisy[key] = max(0.0, value + float(draw.laplace(0.0, noise * max(patients - 1, 1))))
        elif key.endswith("mcc"):
            noisy[key] = float(np.clip(value + draw.laplace(0.0, noise * 2 / patients), -1.0, 1.0))
        elif key.endswith(RATE_METRICS):
            noisy[key] = float(np.clip(value + draw.laplace(0.0, noise / patients), 0.0, 1.0))
        else:
            noisy[key] = value  # num-examples, personalization-refused: counts and flags, not patient outcomes
    for prefix in {key[: -len(CONCORDANT_PAIRS_KEY)] for key in noisy if key.endswith(CONCORDANT_PAIRS_KEY)}:
        comparable = noisy.get(prefix + COMPARABLE_PAIRS_KEY, 0.0)
        noisy[prefix + CONCORDANT_PAIRS_KEY] = min(noisy[prefix + CONCORDANT_PAIRS_KEY], comparable)
    return noisy


def survival_outcomes(patients: Sequence[PatientRecord],
                      index: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Times, events and the known-label mask of task ``index`` over ``patients``."""
    labels = [p.labels[index] for p in patients]
    times = np.array([label.time if isinstance(label, SurvivalLabel) else np.nan for label in labels], dtype=float)
    events = np.array([label.event if isinstance(label, SurvivalLabel) else 0 for label in labels], dtype=float)
    return np.nan_to_num(times), events, np.isfinite(times)


def _survival(task: Task, index: int, hazard_logits: torch.Tensor, patients: Sequence[PatientRecord],
              reference: Sequence[PatientRecord]) -> dict[str, float]:
    times, events, known = survival_outcomes(patients, index)
    risks = risk_score(hazard_logits).numpy()
    pairs = concordance(times[known], risks[known], events[known])
    ref_times, ref_events, ref_known = survival_outcomes(reference, index)
    eval_times = np.array(task.time_bins, dtype=float)
    args = (ref_times[ref_known], ref_events[ref_known], times[known], events[known])
    return {
        "c-index": pairs.c_index,
        CONCORDANT_PAIRS_KEY: float(pairs.concordant),
        COMPARABLE_PAIRS_KEY: float(pairs.comparable),
        "td-auc": time_dependent_auc(*args, risks[known], eval_times),
        "ibs": integrated_brier_score(*args, survival_at_edges(hazard_logits).numpy()[known], eval_times),
    }


def _class(patient: PatientRecord, index: int) -> int:
    label = patient.labels[index]
    return label.index if isinstance(label, ClassLabel) else -1

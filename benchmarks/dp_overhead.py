"""DP-SGD overhead: local training time per epoch with DP vs without DP, same model and data.

Batch 32 patients x K = 128 tiles, 64 tile features, the synthetic schema's omics panels (200 + 40 genes).
Configurations are measured side by side in one process with interleaved repetitions (order alternating); the
medians are reported. Timing is ``SiteTrainer.train``'s "train-seconds" (the epoch loop: sampling, forward,
backward, clipping, noise, step). Writes ``benchmarks/results/dp_overhead.json`` and a line in
``benchmarks/results/README.md``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.patient_records import ClassLabel, PatientRecord, SiteCohort, SurvivalLabel
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.dp_sgd import GRAD_SAMPLE_MODE
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig

RESULTS = Path(__file__).resolve().parent / "results"
PATIENTS = 640
REPETITIONS = 9
MODES_COMPARED = ("hooks", "ew")
MALLOC_KEYS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def synthetic_cohort(study: StudyConfig, seed: int = 0) -> SiteCohort:
    """Patients with 128-384 tiles each (so K = 128 are sampled), omics and clinical rows."""
    rng = np.random.default_rng(seed)
    patients = [
        PatientRecord(
            patient_id=f"bench-{i}",
            tile_features=rng.normal(size=(int(rng.integers(128, 385)), study.tile_feature_dim)).astype(np.float32),
            omics=tuple(rng.normal(size=layer.width).astype(np.float32) for layer in study.spec.omics),
            clinical=rng.normal(size=study.spec.clinical_dim).astype(np.float32),
            labels=(SurvivalLabel(float(rng.exponential(30.0)), int(rng.random() < 0.6)),
                    ClassLabel(int(rng.integers(0, study.tasks[1].num_outputs)))),
        )
        for i in range(PATIENTS)
    ]
    return SiteCohort("benchmark", train=patients, test=[])


def epoch_seconds(trainer: SiteTrainer, weights: dict[str, torch.Tensor], seed: int) -> float:
    """Wall time of one local epoch."""
    return trainer.train(weights, seed=seed).metrics["train-seconds"]


def main() -> None:
    """Measure, print and record the DP/non-DP epoch-time ratio per grad-sample mode."""
    study = StudyConfig(batch_size=32, tiles_per_patient=128, tile_feature_dim=64, local_epochs=1,
                        noise_multiplier=1.0, max_grad_norm=1.0)
    cohort = synthetic_cohort(study)
    weights = build_model(study, seed=0).state_dict()
    trainers = {"no-dp": SiteTrainer(cohort, study.replace(dp=False), device="cpu")}
    for mode in MODES_COMPARED:
        trainers[f"dp-{mode}"] = SiteTrainer(cohort, study, device="cpu", grad_sample_mode=mode)
    for trainer in trainers.values():  # warm-up
        epoch_seconds(trainer, weights, seed=0)
    samples: dict[str, list[float]] = {name: [] for name in trainers}
    for rep in range(REPETITIONS):
        names = list(trainers) if rep % 2 == 0 else list(reversed(trainers))
        for name in names:
            samples[name].append(epoch_seconds(trainers[name], weights, seed=rep + 1))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    ratios = {mode: medians[f"dp-{mode}"] / medians["no-dp"] for mode in MODES_COMPARED}
    result = {
        "benchmark": "dp_overhead",
        "setup": {"patients": PATIENTS, "batch_size": study.batch_size, "tiles_per_patient": study.tiles_per_patient,
                  "tile_feature_dim": study.tile_feature_dim, "omics_dim": study.spec.omics_input_dim,
                  "fusion": study.fusion, "hidden_dim": study.hidden_dim, "repetitions": REPETITIONS},
        "grad_sample_mode_used": GRAD_SAMPLE_MODE,
        "median_epoch_seconds": medians,
        "samples_epoch_seconds": samples,
        "ratio_dp_over_no_dp": ratios,
        "ratio": ratios[GRAD_SAMPLE_MODE],
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cuda": torch.cuda.is_available(), "machine": platform.machine(),
                        "cpu_count": os.cpu_count(), **{k: os.environ.get(k, "") for k in MALLOC_KEYS}},
    }
    atomic_write_text(RESULTS / "dp_overhead.json", json.dumps(result, indent=2) + "\n")
    malloc = "glibc malloc tuned" if os.environ.get("MALLOC_MMAP_MAX_") == "0" else "default glibc malloc"
    line = (f"DP/no-DP epoch time at 32 patients x 128 tiles: **{ratios[GRAD_SAMPLE_MODE]:.2f}x** with "
            f"'{GRAD_SAMPLE_MODE}' (" + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items())
            + f"; no-DP {medians['no-dp']:.3f} s/epoch of {PATIENTS} patients; {torch.get_num_threads()} "
            f"threads, {malloc}) -> [dp_overhead.json](dp_overhead.json)")
    print(line)
    record_summary("dp_overhead", line)


def record_summary(name: str, line: str) -> None:
    """Replace (or add) this benchmark's line in ``benchmarks/results/README.md``."""
    readme = RESULTS / "README.md"
    header = "# Benchmark results\n\nWritten by `python benchmarks/run.py`; one line per benchmark, latest run.\n\n"
    lines = readme.read_text(encoding="utf-8").splitlines() if readme.exists() else header.splitlines()
    entry = f"- `{name}`: {line}"
    kept = [existing for existing in lines if not existing.startswith(f"- `{name}`:")]
    atomic_write_text(readme, "\n".join([*kept, entry]) + "\n")


if __name__ == "__main__":
    main()

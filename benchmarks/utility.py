"""Does federation pay? Held-out C-index of every training arm, side by side, on a synthetic and a real cohort.

Cohorts (each built with the product's own commands, into a temporary folder):

- ``synthetic``: the default synthetic cohort of ``fedfusion simulate`` (3 sites, WSI + omics + clinical);
- ``gbsg2-random``: lifelines' GBSG2 (686 breast cancer patients, clinical covariates) via ``fedfusion
  example-cohort gbsg2``, split by ``fedfusion partition --random 4 --stratify cens``;
- ``gbsg2-skewed``: the same cohort in 4 sites by age quartile (``--by-pattern`` with a mapping file), so each
  hospital sees another age range.

Arms, each ``fedfusion simulate`` (Flower's simulation engine, the study defaults unless overridden, secure
aggregation "auto" = on with 3 or more sites) with ``SEEDS`` training seeds on the same held-out patients:

- ``federated DP`` (the default study, local DP-SGD at target epsilon 8 per site) with ``--baselines``:
  centralized non-private (trained to convergence), single-modality centralized, each site alone under the same
  DP recipe;
- ``federated DP, distributed``: DP-FedSGD with the noise added in shares under secure aggregation, same target
  epsilon (``DP_RECIPES["distributed"]``: every training patient in each of 20 rounds);
- ``federated non-private`` (on GBSG2 with ``--baselines``: each site alone without DP);
- the other model (linear on the synthetic cohort, fusion on GBSG2) under the default DP recipe; on the synthetic
  cohort with its own baselines (centralized and each site alone with the linear model), so that "best site alone"
  is each site with the better of the two models.

Writes ``benchmarks/results/utility.json`` (every row: mean, sd, per-seed C-index, bootstrap CI, the target
checks), ``benchmarks/results/utility.md`` (the tables) and a line in ``benchmarks/results/README.md``.
``python benchmarks/utility.py --seeds 2 --cohorts synthetic`` runs a smaller version; ``--arms`` (names separated
by ';') and ``--resume`` run some arms and keep the others. Utility, not timing: nothing here depends on machine
speed but the wall time. A full run takes about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp_overhead import record_summary

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.simulation.baselines import BaselineRow
from fedfusion.simulation.local_study import simulate_study
from fedfusion.study.config import DP_RECIPES, StudyConfig
from fedfusion.study.schema import load_schema

RESULTS = Path(__file__).resolve().parent / "results"
FEDFUSION = [sys.executable, "-m", "fedfusion.cli"]
SEEDS = 5


@dataclass(frozen=True)
class Arm:
    """One way of training: study overrides and whether the baselines are trained beside it."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    baselines: bool = False


DISTRIBUTED = DP_RECIPES["distributed"]
"""Distributed DP's recipe (``--dp-recipe distributed``, the default of ``scripts/simulate``): one DP gradient step
of the federation per round over every site's training patients, 20 rounds, server step 1.0, the linear model."""
LINEAR = {"model": "linear"}
"""The small-cohort model (``models/linear_survival.py``)."""
ARMS: dict[str, tuple[Arm, ...]] = {
    "synthetic": (
        Arm("federated DP", baselines=True),
        Arm("federated DP, distributed", DISTRIBUTED),
        Arm("federated non-private", {"dp": False}),
        Arm("federated DP, linear model", LINEAR, baselines=True),
    ),
    "gbsg2-random": (
        Arm("federated DP", LINEAR, baselines=True),
        Arm("federated DP, distributed", {**LINEAR, **DISTRIBUTED}),
        Arm("federated non-private", {**LINEAR, "dp": False}, baselines=True),
        Arm("federated DP, fusion model", baselines=False),
    ),
    "gbsg2-skewed": (
        Arm("federated DP", LINEAR, baselines=True),
        Arm("federated non-private", {**LINEAR, "dp": False}, baselines=True),
    ),
}
"""Each cohort's arms. GBSG2 has clinical covariates only: its studies use the linear model (the fusion model is
one arm, for comparison)."""
COHORTS = tuple(ARMS)


def build_cohort(name: str, root: Path) -> Path:
    """The cohort folder of ``name`` under ``root``, made with the product's commands (synthetic: made by the first
    ``simulate`` into the empty folder)."""
    folder = root / name
    if name == "synthetic":
        return folder
    pooled = root / "gbsg2-pooled"
    if not pooled.exists():
        _fedfusion("example-cohort", "gbsg2", "--out", str(pooled))
    if name == "gbsg2-random":
        _fedfusion("partition", str(pooled), "--out", str(folder), "--random", "4", "--stratify", "cens", "--seed", "0")
    else:
        clinical = pd.read_csv(pooled / "clinical.csv")
        quartile = pd.qcut(clinical["age"], 4, labels=["age-q1", "age-q2", "age-q3", "age-q4"])
        mapping = root / "gbsg2-age-quartiles.csv"
        pd.DataFrame({"code": clinical["patient_id"], "site": quartile}).to_csv(mapping, index=False)
        _fedfusion("partition", str(pooled), "--out", str(folder), "--by-pattern", "^(.*)$", "--mapping", str(mapping))
    return folder


def _fedfusion(*args: str) -> None:
    subprocess.run([*FEDFUSION, *args], check=True, stdout=subprocess.DEVNULL)


def run_arm(arm: Arm, cohort_dir: Path, results_dir: Path, seeds: int) -> dict[str, Any]:
    """One arm on one cohort: every row of its comparison table, and its wall time."""
    schema_file = cohort_dir / SCHEMA_FILE
    base = StudyConfig(schema=load_schema(schema_file).to_json()) if schema_file.is_file() else StudyConfig()
    study = base.replace(**arm.overrides)
    started = time.monotonic()
    result = simulate_study(study, results_dir, cohort_dir, with_baselines=arm.baselines, seeds=seeds,
                            emit=lambda line: print(f"    {line}", flush=True))
    seconds = round(time.monotonic() - started, 1)
    if not result.trained or result.report is None:
        return {"arm": arm.name, "trained": False, "seconds": seconds}
    rows = [_row(row) for row in result.report.rows]
    rows[0]["model"] = arm.name
    return {"arm": arm.name, "trained": True, "seconds": seconds, "overrides": dict(arm.overrides),
            "rows": rows, "verdicts": list(result.report.verdicts)}


def _row(row: BaselineRow) -> dict[str, Any]:
    s = row.summary
    return {"model": row.model, "training": row.training, "modalities": row.modalities, "mean": round(s.mean, 4),
            "sd": None if s.sd != s.sd else round(s.sd, 4), "per_seed": [round(c, 4) for c in s.per_seed],
            "ci95": [round(s.ci_low, 4), round(s.ci_high, 4)], "training_patients": row.training_patients}


def checks(cohort: str, arms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue's targets compare, and each target as measured (None where an arm is missing)."""
    def mean(arm: str, model: str | None = None) -> float | None:
        for result in arms:
            if result["arm"] == arm and result.get("trained"):
                row = next((r for r in result["rows"] if r["model"] == (model or arm)), None)
                return None if row is None else float(row["mean"])
        return None

    def alone(arm: str) -> list[float]:
        result = next((r for r in arms if r["arm"] == arm and r.get("trained")), None)
        return [] if result is None else [r["mean"] for r in result["rows"] if r["model"].endswith(" alone")]

    dp_alone = alone("federated DP") + alone("federated DP, linear model")  # each site with its better model
    plain_alone = alone("federated non-private")
    figures: dict[str, float | None] = {
        "centralized (non-private)": mean("federated DP", "centralized"),
        "centralized (non-private), linear model": mean("federated DP, linear model", "centralized"),
        "federated DP": mean("federated DP"),
        "federated DP, distributed": mean("federated DP, distributed"),
        "federated non-private": mean("federated non-private"),
        "best site alone (DP)": max(dp_alone, default=None),
        "mean site alone (non-private)": sum(plain_alone) / len(plain_alone) if plain_alone else None}
    private = [v for v in (figures["federated DP"], figures["federated DP, distributed"]) if v is not None]
    best_private = max(private, default=None)
    central, plain = figures["centralized (non-private)"], figures["federated non-private"]

    def at_least(value: float | None, bound: float | None, margin: float) -> bool | None:
        return None if value is None or bound is None else value >= bound + margin - 1e-9

    targets = {"best federated DP >= best site alone (DP) + 0.05":
               at_least(best_private, figures["best site alone (DP)"], 0.05),
               "best federated DP >= centralized - 0.03": at_least(best_private, central, -0.03),
               "federated non-private >= centralized - 0.01": at_least(plain, central, -0.01),
               "distributed DP >= local DP + 0.02": at_least(figures["federated DP, distributed"],
                                                             figures["federated DP"], 0.02),
               "federated DP >= mean site alone (non-private)": at_least(figures["federated DP"],
                                                                         figures["mean site alone (non-private)"],
                                                                         0.0)}
    return {"figures": figures, "targets": {k: v for k, v in targets.items() if v is not None}}


def markdown(report: Mapping[str, Any]) -> str:
    """``utility.md``: every cohort's rows (arm, model, held-out C-index mean +- sd, 95% CI) and its targets."""
    out = [f"# Utility benchmark ({report['seeds']} training seeds per row; `python benchmarks/utility.py`)", ""]
    for cohort, data in report["cohorts"].items():
        out += [f"## {cohort}", "",
                "| arm | model | training | modalities | held-out C-index | 95% CI | arm time (s) |",
                "|---|---|---|---|---|---|---|"]
        for arm in data["arms"]:
            if not arm.get("trained"):
                out.append(f"| {arm['arm']} | not trained | | | | | {arm['seconds']} |")
                continue
            for index, row in enumerate(arm["rows"]):
                sd = "" if row["sd"] is None else f" +- {row['sd']:.3f}"
                out.append(f"| {arm['arm'] if index == 0 else ''} | {row['model']} | {row['training']} | "
                           f"{row['modalities']} | {row['mean']:.3f}{sd} | {row['ci95'][0]:.3f} - {row['ci95'][1]:.3f}"
                           f" | {arm['seconds'] if index == 0 else ''} |")
        out += ["", *(f"- {name}: **{'met' if met else 'not met'}**"
                      for name, met in data["targets"]["targets"].items()), ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """Run every arm on every cohort (or those chosen), print the figures and record ``utility.json`` after each
    arm; with ``--resume`` the arms already in ``utility.json`` (same seeds) are kept and not run again."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--cohorts", default=",".join(COHORTS))
    parser.add_argument("--arms", default=None, help="arm names separated by ';' (default: all)")
    parser.add_argument("--resume", action="store_true", help="keep the arms utility.json already holds")
    args = parser.parse_args(argv)
    results_file = RESULTS / "utility.json"
    report: dict[str, Any] = {"benchmark": "utility", "seeds": args.seeds, "platform": platform.platform(),
                              "cohorts": {}}
    if args.resume and results_file.exists():
        saved = json.loads(results_file.read_text(encoding="utf-8"))
        if saved.get("seeds") == args.seeds:
            report["cohorts"] = saved.get("cohorts", {})
    chosen = None if args.arms is None else set(args.arms.split(";"))
    with tempfile.TemporaryDirectory(prefix="fedfusion-utility-") as tmp:
        root = Path(tmp)
        for cohort in args.cohorts.split(","):
            done = {r["arm"]: r for r in report["cohorts"].get(cohort, {}).get("arms", []) if r.get("trained")}
            todo = [a for a in ARMS[cohort] if a.name not in done and (chosen is None or a.name in chosen)]
            if not todo:
                continue
            print(f"== {cohort}", flush=True)
            folder = build_cohort(cohort, root)
            for arm in todo:
                print(f"  -- {arm.name}", flush=True)
                done[arm.name] = run_arm(arm, folder, root / "runs" / cohort / arm.name.replace(" ", "-"),
                                         args.seeds)
                results = [done[a.name] for a in ARMS[cohort] if a.name in done]
                report["cohorts"][cohort] = {"arms": results, "targets": checks(cohort, results)}
                atomic_write_text(results_file, json.dumps(report, indent=1) + "\n")
                atomic_write_text(RESULTS / "utility.md", markdown(report) + "\n")
    lines = []
    for cohort, data in report["cohorts"].items():
        figures = data["targets"]["figures"]
        lines.append(f"{cohort}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if v is not None))
    print("\n".join(lines))
    record_summary("utility", f"held-out C-index, {args.seeds} training seeds: " + "; ".join(lines)
                   + " -> [utility.json](utility.json)")


if __name__ == "__main__":
    main()

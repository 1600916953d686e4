"""In-process distributed DP (DP-FedSGD) for tuning its recipe: seconds per run instead of minutes, same arithmetic.

One run is what ``fedfusion simulate --dp-recipe distributed`` computes, round by round, without Flower: each site's
``clipped_gradient_sum`` at the global weights (Opacus per-patient gradients, clipped to C, summed; the round's
seed as a site uses it), the sum over the sites plus Gaussian noise of standard deviation sigma C (sigma from
``distributed_noise``, calibrated to the study's target epsilon), ``DistributedFedSGD.mean_update`` and the
study's ``ServerOptimizer``; the final model is scored as the utility benchmark scores the federated model
(``federated_report``: the pooled held-out patients). Left out: Flower, SecAgg+ and the Skellam shares. Their
unmasked sum has the Gaussian's variance (docs/DP_RECIPE.md: measured error 2.688 against sigma C = 2.692 at the
recipe's gamma) and the two paths agree on the benchmark cohort (0.699 +- 0.011 over 20 runs here, 0.699 +- 0.013
in the benchmark). The noise comes from a seeded generator, one per training seed and draw, so a run repeats; a
real site's comes from the OS.

Tune on a cohort other than the benchmark's (``fedfusion synth --seed 1``), then confirm once on the benchmark's:
docs/DP_RECIPE.md. Example, ten training seeds of the recipe with 30 rounds::

    python benchmarks/distributed_dp_sweep.py --cohort-dir cohorts/seed-1 --seeds 10 --set num-server-rounds=30
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.secure_fedavg import DistributedFedSGD
from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.data.patient_records import SiteCohort
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.simulation.baselines import federated_report
from fedfusion.simulation.cohort_folder import SiteChoice, open_cohort, plan_cohort
from fedfusion.simulation.local_study import prepare_sites
from fedfusion.site.distributed_dp import clipped_gradient_sum
from fedfusion.site.site_round import round_seed
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig

NOISE_SEED_BASE = 1000
"""Draw ``d`` of training seed ``s`` uses the generator seeded with (NOISE_SEED_BASE, s, d)."""


def load_sites(cohort_dir: Path, study: StudyConfig) -> list[SiteCohort]:
    """Every site of an existing cohort folder, its slide features prepared (cached) and split as a simulation
    splits it."""
    plan = plan_cohort(cohort_dir, SiteChoice())
    if plan.generate is not None:
        raise ConfigError(f"{cohort_dir} holds no cohort: make one first (fedfusion synth --out {cohort_dir})")
    return prepare_sites(study, open_cohort(plan, seed=study.seed, emit=print), "cpu", lambda line: None)


def train(study: StudyConfig, cohorts: Sequence[SiteCohort], draw: int = 0) -> dict[str, torch.Tensor]:
    """The final global model of one distributed-DP study (``study.training_seed``, noise draw ``draw``)."""
    distributed = DistributedFedSGD.from_study(study)
    if distributed is None:
        raise ConfigError("the sweep runs distributed DP only: give --dp-recipe distributed or dp-mode=distributed")
    trainers = [SiteTrainer(cohort, study, device="cpu") for cohort in cohorts]
    patients = sum(len(cohort.train) for cohort in cohorts)
    std = distributed.noise.noise_multiplier * distributed.noise.max_grad_norm
    rng = np.random.default_rng((NOISE_SEED_BASE, study.training_seed, draw))
    optimizer = ServerOptimizer.of(study)
    weights: dict[str, NDArray[np.float32]] = {
        name: tensor.numpy() for name, tensor in build_model(study, seed=study.training_seed).state_dict().items()}
    for server_round in range(1, study.num_server_rounds + 1):
        received = {name: torch.from_numpy(array.copy()) for name, array in weights.items()}
        sums = [clipped_gradient_sum(trainer, received, seed=round_seed(study, server_round), rng=rng)[0]
                for trainer in trainers]
        noisy = {name: sum(s[name] for s in sums) + rng.normal(0.0, std, array.shape)
                 for name, array in weights.items()}
        weights = optimizer.step(weights, distributed.mean_update(noisy, patients, weights))
    return {name: torch.from_numpy(np.asarray(array)) for name, array in weights.items()}


def sweep(study: StudyConfig, cohorts: Sequence[SiteCohort], seeds: int, draws: int) -> list[float]:
    """The held-out C-index of each training seed (``training-seed`` and after) times each noise draw."""
    runs = [train(study.replace(training_seed=study.training_seed + seed), cohorts, draw)
            for seed in range(seeds) for draw in range(draws)]
    return list(federated_report(study, cohorts, runs).federated.summary.per_seed)


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Parse the options, run the sweep, print each run's C-index and their mean +- sd; return the C-indexes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort-dir", type=Path, required=True, help="an existing cohort folder (fedfusion synth)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds (default: 5)")
    parser.add_argument("--draws", type=int, default=1, help="noise draws per training seed (default: 1)")
    add_study_options(parser)
    parser.set_defaults(dp_recipe="distributed")
    args = parser.parse_args(argv)
    schema = args.cohort_dir / SCHEMA_FILE
    study = study_from_args(args, default_schema=schema if schema.is_file() else None)
    scores = sweep(study, load_sites(args.cohort_dir, study), args.seeds, args.draws)
    spread = f" +- {np.std(scores, ddof=1):.4f}" if len(scores) > 1 else ""
    print(f"held-out C-index {np.mean(scores):.4f}{spread} over {len(scores)} runs: "
          + " ".join(f"{score:.3f}" for score in scores))
    return scores


if __name__ == "__main__":
    main()

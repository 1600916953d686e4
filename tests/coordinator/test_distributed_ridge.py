"""The true ridge of distributed DP: the coordinator adds ``l2 * w`` to the noisy mean gradient (weight matrices only)
before the server optimizer steps, the path both the strategy and ``benchmarks/distributed_dp_sweep.py`` take."""

from __future__ import annotations

import numpy as np
import pytest

from fedfusion.coordinator.server_optimizer import ServerOptimizer
from fedfusion.coordinator.strategies.secure_fedavg import DistributedFedSGD
from fedfusion.study.config import StudyConfig

Q, PATIENTS, L2, LR = 0.5, 40, 0.3, 2.0


def distributed(l2: float) -> DistributedFedSGD:
    study = StudyConfig(dp_mode="distributed", sample_rate=Q, min_sites=3, distributed_dp_tolerance=1,
                        noise_multiplier=1.0, target_epsilon=0.0, l2_penalty=l2)
    strategy = DistributedFedSGD.from_study(study)
    assert strategy is not None
    return strategy


@pytest.mark.parametrize("l2", [0.0, L2])
def test_update_is_minus_lr_times_mean_gradient_plus_ridge_on_weight_matrices_only(l2: float) -> None:
    rng = np.random.default_rng(0)
    weights = {"head.weight": rng.normal(size=(2, 3)).astype(np.float32),
               "head.bias": np.array([0.5, -1.0], np.float32)}
    noisy_sum = {name: rng.normal(size=array.shape) * PATIENTS for name, array in weights.items()}
    mean_gradient = {name: values / (Q * PATIENTS) for name, values in noisy_sum.items()}
    strategy = distributed(l2)
    assert strategy.l2_penalty == l2
    updated = ServerOptimizer("fedavg", learning_rate=LR).step(
        weights, strategy.mean_update(noisy_sum, PATIENTS, weights))
    np.testing.assert_allclose(updated["head.weight"], weights["head.weight"] - LR * (
        mean_gradient["head.weight"] + l2 * weights["head.weight"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updated["head.bias"], weights["head.bias"] - LR * mean_gradient["head.bias"],
                               rtol=1e-5, atol=1e-6)

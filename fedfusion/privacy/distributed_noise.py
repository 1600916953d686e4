"""The study's distributed-DP noise: the one place both the sites and the coordinator read it from.

Another developer adds target-epsilon calibration (``privacy/calibration.py``); ``distributed_noise_multiplier``
is the seam where it plugs in (it returns the study's ``noise-multiplier`` until then). Every site and the
coordinator must derive the same numbers, since gamma (the integer scale) depends on them.
"""

from __future__ import annotations

from fedfusion.secure_aggregation.integer_noise import DistributedNoise
from fedfusion.study.config import StudyConfig


def distributed_noise_multiplier(study: StudyConfig) -> float:
    """Sigma of the central Gaussian mechanism that the sites' noise shares add up to (one step per round)."""
    return study.noise_multiplier


def distributed_noise(study: StudyConfig) -> DistributedNoise:
    """The numbers every party of a distributed-DP round uses: sigma, the clipping norm C and the tolerance t."""
    return DistributedNoise(distributed_noise_multiplier(study), study.max_grad_norm, study.distributed_dp_tolerance)

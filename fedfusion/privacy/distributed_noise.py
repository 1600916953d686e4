"""The study's distributed-DP noise: the one place both the sites and the coordinator read it from.

With a ``target-epsilon`` the noise multiplier is calibrated (``privacy/calibration.py``, Opacus' own calibration)
for the study's sample rate and one step per round over ``num-server-rounds`` rounds, with the study's accountant:
inputs that are the same at every party, so every site and the coordinator derive the same sigma (gamma, the
integer scale, depends on it); without one it is the study's ``noise-multiplier``. A site still accounts each round
in its own ledger with its own accountant and refuses a round beyond the target.
"""

from __future__ import annotations

from functools import cache

from fedfusion.privacy.calibration import study_noise_multiplier
from fedfusion.secure_aggregation.integer_noise import DistributedNoise
from fedfusion.study.config import StudyConfig


def distributed_noise_multiplier(study: StudyConfig) -> float:
    """Sigma of the central Gaussian mechanism that the sites' noise shares add up to (one step per round)."""
    return _once(study)


@cache
def _once(study: StudyConfig) -> float:
    """``study_noise_multiplier`` once per process and study (calibrating takes seconds; every round asks again)."""
    return study_noise_multiplier(study, 0, study.accountant)


def distributed_noise(study: StudyConfig) -> DistributedNoise:
    """The numbers every party of a distributed-DP round uses: sigma, the clipping norm C and the tolerance t."""
    return DistributedNoise(distributed_noise_multiplier(study), study.max_grad_norm, study.distributed_dp_tolerance)

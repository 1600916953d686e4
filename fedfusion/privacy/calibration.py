"""The privacy budget as the input: a site's noise multiplier derived from a study's target epsilon.

A study with ``target-epsilon`` > 0 declares the whole study's epsilon (at its ``delta``) per site. Each site
derives its noise multiplier once, from its own training patients and the study's planned steps, by Opacus'
calibration (``get_noise_multiplier``'s bisection on sigma over the Opacus accountant's epsilon, bounded here) and
verifies the result by replaying the planned history: the calibrated noise never spends more than the target and,
within ``CALIBRATION_TOLERANCE``, not much less. With ``target-epsilon`` = 0 the study's fixed
``noise-multiplier`` is the site's noise: one code path.
"""

from __future__ import annotations

import logging

from fedfusion.errors import PrivacyError
from fedfusion.privacy.accounting import epsilon_spent, round_sampling
from fedfusion.privacy.ledger import PrivacyLedger, StudyCalibration
from fedfusion.study.config import StudyConfig

logger = logging.getLogger(__name__)

CALIBRATION_TOLERANCE = 0.01
"""How far below the target the calibrated epsilon may land, relative to the target (the bisection stops within
it, or after ``MAX_BISECTIONS``)."""
INITIAL_NOISE = 10.0
"""The first upper end of the search (doubled until it spends at most the target), as in Opacus; with the PRV
accountant the first upper end is RDP's calibrated noise instead."""
MAX_NOISE = 2.0**12
"""Beyond this noise multiplier the target counts as unreachable."""
MAX_BISECTIONS = 40
"""Halvings of the noise interval at most: 10 / 2**40 is far below any meaningful noise difference."""


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier (within ``CALIBRATION_TOLERANCE``) whose ``steps`` Poisson-sampled steps at
    ``sample_rate`` spend at most ``target_epsilon`` at ``delta`` by ``accountant`` ("prv"/"rdp").

    Opacus' ``get_noise_multiplier`` bisection, bounded: Opacus loops until epsilon is within the tolerance, which
    never happens when the PRV accountant's discretized epsilon jumps over the target between two noise levels
    (measured: a coordinator hung for 20 minutes at q = 0.3, 40 steps, epsilon 8). Here the search also stops
    after ``MAX_BISECTIONS`` halvings and keeps the upper end, whose epsilon is verified to be at most the target.
    ``PrivacyError`` when no noise reaches the target or the verified epsilon exceeds it.
    """
    if not target_epsilon > 0:
        raise PrivacyError(f"a target epsilon must be > 0, got {target_epsilon}")

    def spent(sigma: float) -> float:
        return epsilon_spent(accountant, [(sigma, sample_rate, steps)], delta)

    # PRV is slow far from the answer (minutes at sigma 10 for q 0.3, 40 steps, in a busy process) and never looser
    # than RDP: RDP's own calibration, which is instant, is the first upper end.
    low, high = 0.0, INITIAL_NOISE if accountant != "prv" else calibrate_noise(
        target_epsilon, delta, sample_rate, steps, "rdp")
    eps_high = spent(high)
    while eps_high > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE:
            raise PrivacyError(f"no noise multiplier up to {MAX_NOISE} reaches epsilon {target_epsilon} at delta "
                               f"{delta} over {steps} steps at sample rate {sample_rate:.6g}")
        eps_high = spent(high)
    for _ in range(MAX_BISECTIONS):
        if target_epsilon - eps_high <= CALIBRATION_TOLERANCE * target_epsilon:
            break
        middle = (low + high) / 2
        eps = spent(middle)
        if eps <= target_epsilon:
            high, eps_high = middle, eps
        else:
            low = middle
    if eps_high > target_epsilon:
        raise PrivacyError(f"calibrated noise multiplier {high} spends epsilon {eps_high} > target {target_epsilon}")
    return high


def study_sampling(study: StudyConfig, num_patients: int) -> tuple[float, int]:
    """The sample rate and the whole study's planned DP steps of a site with ``num_patients`` training patients.

    Local DP: every round samples from the site's own patients, ``local-epochs`` epochs of batches. Distributed DP:
    one step per round at the study's ``sample-rate``, the same at every site.
    """
    if study.dp_mode == "distributed":
        return study.sample_rate, study.num_server_rounds
    sample_rate, steps_per_round = round_sampling(num_patients, study.batch_size, study.local_epochs)
    return sample_rate, steps_per_round * study.num_server_rounds


def study_noise_multiplier(study: StudyConfig, num_patients: int, accountant: str) -> float:
    """The noise multiplier of a site with ``num_patients`` training patients in ``study``: calibrated to its
    ``target-epsilon`` at its ``delta`` by ``accountant``, or its fixed ``noise-multiplier`` when the target is 0.

    In distributed DP every party must derive the same sigma (the shares add up to it), so it is calibrated with
    the study's accountant from study-wide inputs (``fedfusion.privacy.distributed_noise``), whatever ``accountant``
    the site keeps its ledger with.
    """
    if study.target_epsilon == 0:
        return study.noise_multiplier
    if study.dp_mode == "distributed":
        accountant = study.accountant
    return calibrate_noise(study.target_epsilon, study.delta, *study_sampling(study, num_patients), accountant)


def site_calibration(ledger: PrivacyLedger, study: StudyConfig, study_id: str, num_patients: int,
                     accountant: str) -> StudyCalibration:
    """The site's calibration for ``study_id`` (a study with a target epsilon): the one in ``ledger``, else a new
    one, recorded. A recorded one is kept when the cohort changed since (logged)."""
    recorded = ledger.calibration(study_id)
    if recorded is None:
        sample_rate, steps = study_sampling(study, num_patients)
        recorded = ledger.record_calibration(StudyCalibration(
            study_id=study_id, target_epsilon=study.target_epsilon, delta=study.delta, accountant=accountant,
            sample_rate=sample_rate, planned_steps=steps,
            noise_multiplier=study_noise_multiplier(study, num_patients, accountant), patients=num_patients))
        logger.info("site %s: study %s calibrated to noise multiplier %.4f (target epsilon %s at delta %s, %s, "
                    "%d steps at sample rate %.4g)", ledger.dataset.site, study_id, recorded.noise_multiplier,
                    recorded.target_epsilon, recorded.delta, accountant, steps, sample_rate)
    elif recorded.patients != num_patients:
        logger.info("site %s: study %s keeps its recorded noise multiplier %.4f although the training patients "
                    "changed from %d to %d (the ledger's study-budget check still applies)", ledger.dataset.site,
                    study_id, recorded.noise_multiplier, recorded.patients, num_patients)
    return recorded

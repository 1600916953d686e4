"""The privacy ledger: an Opacus accountant's history carried across federated rounds.

A history entry is ``(noise_multiplier, sample_rate, steps)``. Replaying the whole history into a fresh
accountant gives the epsilon of one long run, so epsilon is cumulative over rounds. (Counting only the
current round under-reports; summing per-round epsilons over-reports.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]  # (scikit-learn's dependency)

from fedfusion.errors import PrivacyError
from fedfusion.privacy.rdp_memo import memoize_step_rdp

if TYPE_CHECKING:
    from opacus.accountants import IAccountant

logger = logging.getLogger(__name__)

AccountantHistory = list[tuple[float, float, int]]
PRV_EPS_ERROR = 0.01
"""The PRV accountant's epsilon error (Opacus' default), given explicitly so the grid checked is the grid used."""
PRV_GRID_LIMIT = 2**22
"""The most points the PRV accountant may discretize (its grid's size times the history's entries, each discretized
on it; about 200-300 bytes each at its peak). The grid's width follows the RDP epsilon at a tiny delta, so a tiny noise
multiplier or an enormous spend asks for a grid without bound (noise multiplier 0.01: 1.25e9 points, hundreds of
GiB): a study could crash the site before its budget check refuses it. Beyond the limit the RDP accountant's epsilon
is used instead, also an upper bound on the spend (never an under-count) and computed without a grid. Realistic
studies stay below it: 86k points for noise 1.0, sample rate 0.2, 50 steps (epsilon 10); 800k for 100 rounds of
the local-DP recipe; 980k for distributed DP's recipe over 20 studies (a site's ledger adds one entry per study)."""
EPSILONS_KEPT = 64
"""Epsilon answers kept per process (``epsilon_spent``), each keyed by its mechanism, exact history and delta."""


def restore_accountant(mechanism: str, history: Sequence[Sequence[float]]) -> IAccountant:
    """A fresh ``mechanism`` ("prv" or "rdp") accountant holding ``history`` (validated)."""
    from opacus.accountants import create_accountant  # Opacus loads torch: only when epsilon is computed

    memoize_step_rdp()
    accountant = create_accountant(mechanism=mechanism)
    accountant.load_state_dict({"history": validated_history(history), "mechanism": accountant.mechanism()})
    return accountant


def history_of(accountant: IAccountant) -> AccountantHistory:
    """The accountant's history as plain ``(float, float, int)`` tuples."""
    return validated_history(accountant.history)


def epsilon_spent(mechanism: str, history: Sequence[Sequence[float]], delta: float) -> float:
    """Cumulative epsilon at ``delta`` of all steps in ``history`` (0.0 for an empty history).

    A pure function of its arguments, so each answer is kept (``EPSILONS_KEPT``): a round asks the same epsilon up
    to three times (the ledger's limit, the study's target, the reply's metric) and the PRV accountant takes
    0.05-0.5 s per answer (more as steps add up).
    """
    return _epsilon_of(mechanism, tuple(validated_history(history)), float(delta))


@lru_cache(maxsize=EPSILONS_KEPT)
def _epsilon_of(mechanism: str, history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    if not history:
        return 0.0
    # PRV takes log(0) on its grid's edge by design; the result is finite. One BLAS thread: in a busy process (the
    # simulation's ServerApp thread on a loaded machine) OpenBLAS' threaded dot products of the PRV grid were seen to
    # spin in exec_blas for many minutes (gdb), holding the coordinator's distributed-DP calibration; alone they take
    # well under a second.
    with np.errstate(divide="ignore"), _blas().limit(limits=1, user_api="blas"):
        if mechanism == "prv":
            if (points := prv_grid_points(history, delta)) <= PRV_GRID_LIMIT:
                return float(restore_accountant("prv", history).get_epsilon(
                    delta=delta, eps_error=PRV_EPS_ERROR, delta_error=_prv_delta_error(delta)))
            logger.warning("the PRV accountant would need a grid of %d points (limit %d) for this history; epsilon is "
                           "the RDP accountant's (an upper bound, never an under-count)", points, PRV_GRID_LIMIT)
            mechanism = "rdp"
        return float(restore_accountant(mechanism, history).get_epsilon(delta=delta))


def prv_grid_points(history: Sequence[tuple[float, float, int]], delta: float) -> int:
    """The points the PRV accountant discretizes for ``history`` at ``delta``: Opacus' own safe domain (from the RDP
    epsilon, cheap) at its mesh, once per history entry (each is discretized on it). Computed without allocating it."""
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    domain = PRVAccountant()._get_domain(  # Opacus 1.6's own rule (tests/privacy/test_accounting.py)
        prvs=[PoissonSubsampledGaussianPRV(rate, sigma) for sigma, rate, _ in history],
        num_self_compositions=[steps for _, _, steps in history],
        eps_error=PRV_EPS_ERROR, delta_error=_prv_delta_error(delta))
    return int(domain.size) * len(history)


def _prv_delta_error(delta: float) -> float:
    """The PRV accountant's delta error: Opacus' default."""
    return delta / 1000


@cache
def _blas() -> Any:
    """The process' thread pools, found once (finding them walks every loaded library: slow with torch loaded)."""
    return ThreadpoolController()


def planned_round(noise_multiplier: float, num_patients: int, batch_size: int, local_epochs: int) -> AccountantHistory:
    """The history entries one round of ``make_private`` training will add, known before it starts."""
    sample_rate, steps = round_sampling(num_patients, batch_size, local_epochs)
    return [(float(noise_multiplier), sample_rate, steps)]


def round_sampling(num_patients: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """The sample rate and accounted steps of one round of ``make_private`` training (whatever its noise).

    Opacus sets the sample rate to ``1 / len(loader)`` (``ceil(patients / batch_size)`` batches) and its Poisson
    sampler draws ``int(1 / sample_rate)`` batches per epoch; every batch is one accounted step (empty ones too).
    """
    if num_patients <= 0:
        raise PrivacyError(f"a DP round needs training patients, got {num_patients}")
    sample_rate = 1 / math.ceil(num_patients / batch_size)
    return sample_rate, int(1 / sample_rate) * local_epochs


def planned_distributed_round(noise_multiplier: float, sample_rate: float) -> AccountantHistory:
    """The history entry of one distributed-DP round: one DP-SGD step of the whole federation.

    Every site Poisson-samples its patients at the study's ``sample_rate`` and the survivors' noise shares add up
    to the central noise ``noise_multiplier`` (at most t sites missing), so each site charges the central entry.
    """
    return validated_history([(noise_multiplier, sample_rate, 1)])


def merged_history(entries: Sequence[Sequence[float]]) -> AccountantHistory:
    """``entries`` with consecutive equal ``(noise, sample_rate)`` merged, as Opacus' accountant steps them."""
    merged: AccountantHistory = []
    for sigma, rate, steps in validated_history(entries):
        if merged and merged[-1][:2] == (sigma, rate):
            merged[-1] = (sigma, rate, merged[-1][2] + steps)
        else:
            merged.append((sigma, rate, steps))
    return merged


def history_delta(prior: Sequence[Sequence[float]], total: Sequence[Sequence[float]]) -> AccountantHistory:
    """The entries ``total`` adds to ``prior`` (an accountant restored from ``prior`` that stepped on).

    ``PrivacyError`` if ``total`` does not extend ``prior``.
    """
    before, after = merged_history(prior), merged_history(total)
    if not before:
        return after
    last = len(before) - 1
    extends = (len(after) >= len(before) and after[:last] == before[:last]
               and after[last][:2] == before[last][:2] and after[last][2] >= before[last][2])
    if not extends:
        raise PrivacyError(f"accountant history {after!r} does not extend the ledger's {before!r}")
    sigma, rate, steps = after[last]
    head = [(sigma, rate, steps - before[last][2])] if steps > before[last][2] else []
    return head + after[last + 1 :]


def validated_history(history: Sequence[Sequence[float]]) -> AccountantHistory:
    """``history`` as typed tuples; ``PrivacyError`` if an entry is malformed (it crosses process boundaries)."""
    entries: AccountantHistory = []
    for index, entry in enumerate(history):
        try:
            sigma, rate, steps = entry
            typed = (float(sigma), float(rate), int(steps))
        except (TypeError, ValueError) as exc:
            raise PrivacyError(f"accountant history entry {index} is not (noise, sample_rate, steps): {entry!r}"
                               ) from exc
        if not (math.isfinite(typed[0]) and typed[0] > 0 and 0 < typed[1] <= 1 and typed[2] >= 1 and typed[2] == steps):
            raise PrivacyError(f"accountant history entry {index} is out of range: {entry!r}")
        entries.append(typed)
    return entries

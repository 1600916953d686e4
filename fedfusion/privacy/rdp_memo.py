"""Opacus' per-step RDP of the Poisson-subsampled Gaussian mechanism, memoized in this process.

Both accountants spend most of their time in one pure function of Opacus 1.6,
``opacus.accountants.analysis.rdp._compute_rdp(q, sigma, alpha)``: the RDP of one step at order ``alpha``, a
series in pure Python for fractional orders. The RDP accountant calls it for its 151 orders; the PRV accountant
calls it twice as often, to bound its discretization domain. It does not depend on the number of steps
(``compute_rdp`` multiplies by them), so a site whose every round has the same noise and sample rate asks it the
same questions every round: about 0.2 s per epsilon on these machines, three epsilons per round (the ledger's
limit, the study's target, the reply's metric).

``memoize_step_rdp`` replaces that module function by a memoized wrapper of itself (``lru_cache``, arguments
typed, bounded): every answer is the one Opacus computes, bit for bit, only not computed twice. It is one of the two
places fedfusion touches an Opacus internal (the other: ``accounting.prv_grid_points`` asks the PRV accountant's
``_get_domain`` for its grid size); ``tests/privacy/test_rdp_memo.py`` fails when Opacus stops calling the module
function (then the memo is never hit) or when a memoized epsilon differs from Opacus' own.
"""

from __future__ import annotations

from functools import lru_cache

MAX_ENTRIES = 1 << 15
"""Memoized (q, sigma, order) triples at most (about 4 MB): 151 orders per noise and sample rate; a calibration's
bisection adds about a hundred noise levels."""


def memoize_step_rdp() -> None:
    """Memoize Opacus' per-step RDP function for this process (idempotent; imports Opacus, hence torch)."""
    from opacus.accountants.analysis import rdp

    if not hasattr(rdp._compute_rdp, "cache_info"):
        rdp._compute_rdp = lru_cache(maxsize=MAX_ENTRIES, typed=True)(rdp._compute_rdp)


"""Epsilon is computed once per exact question, and the memoized per-step RDP answers as Opacus does, bit for bit.

The contract with Opacus 1.6 (``fedfusion/privacy/rdp_memo.py``): its accountants reach the per-step RDP through
the module function ``opacus.accountants.analysis.rdp._compute_rdp``. If a new Opacus stops doing so, the memo is
never hit and ``test_a_second_epsilon_at_the_same_noise_hits_the_memo`` fails.
"""

from __future__ import annotations

import pytest
from opacus.accountants import create_accountant
from opacus.accountants.analysis import rdp

from fedfusion.privacy import accounting
from fedfusion.privacy.accounting import epsilon_spent
from fedfusion.privacy.rdp_memo import memoize_step_rdp


def opacus_epsilon(mechanism: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' own epsilon, through the unmemoized per-step RDP."""
    accountant = create_accountant(mechanism=mechanism)
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


@pytest.mark.parametrize(("mechanism", "history"), [("prv", [(1.23, 0.25, 8), (0.97, 0.2, 5)]),
                                                    ("rdp", [(1.19, 0.25, 8)])])
def test_memoized_epsilon_equals_opacus_bit_for_bit(mechanism: str, history: list[tuple[float, float, int]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    memoized = [epsilon_spent(mechanism, history, 1e-5) for _ in range(2)]  # the second: the kept answer
    memoize_step_rdp()
    monkeypatch.setattr(rdp, "_compute_rdp", rdp._compute_rdp.__wrapped__)
    assert memoized == [opacus_epsilon(mechanism, history, 1e-5)] * 2


def test_a_second_epsilon_at_the_same_noise_hits_the_memo() -> None:
    epsilon_spent("prv", [(1.31, 0.125, 10)], 1e-5)
    hits = rdp._compute_rdp.cache_info().hits
    later = epsilon_spent("prv", [(1.31, 0.125, 20)], 1e-5)  # the next round: more steps, same noise and rate
    assert rdp._compute_rdp.cache_info().hits >= hits + 2 * len(create_accountant("rdp").DEFAULT_ALPHAS)
    assert later > epsilon_spent("prv", [(1.31, 0.125, 10)], 1e-5)


def test_an_epsilon_is_kept_per_mechanism_history_and_delta() -> None:
    history = [(1.47, 0.1, 12)]
    first = epsilon_spent("prv", history, 1e-5)
    before = accounting._epsilon_of.cache_info()
    assert epsilon_spent("prv", [[1.47, 0.1, 12]], 1e-5) == first  # the same question, however it is spelled
    assert accounting._epsilon_of.cache_info().hits == before.hits + 1
    others = {epsilon_spent("rdp", history, 1e-5), epsilon_spent("prv", history, 1e-6),
              epsilon_spent("prv", [(1.47, 0.1, 13)], 1e-5)}
    assert first not in others and len(others) == 3

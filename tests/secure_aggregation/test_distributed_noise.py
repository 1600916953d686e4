"""Distributed DP in the SecAgg+ core: the unmasked noise is the central noise, integers round-trip, n - t rule.

Real masking and unmasking (``SecAggSite``/``SecAggServer``, real crypto), no Flower: each site's stage 3 is the
real ``masked_noisy_sum`` (its gradient sum to integers, plus its Skellam share, masked).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation import SecAggConfig, SecAggServer, SecAggSite, SecureAverage
from fedfusion.secure_aggregation.config import WORD_LIMIT
from fedfusion.secure_aggregation.integer_noise import (
    INT32_LIMIT,
    NOISE_TAIL_STDS,
    SHARE_VARIANCE_LIMIT,
    DistributedNoise,
    noisy_words,
    randomized_round,
    summed_arrays,
)
from fedfusion.site.distributed_dp import check_threshold, masked_noisy_sum

COORDINATES = 100_000
WEIGHTS = [30, 20, 25]
NOISE = DistributedNoise(noise_multiplier=1.3, max_grad_norm=0.5, tolerance=1)


def run_distributed_round(config: SecAggConfig, sums: list[dict[str, np.ndarray]], weights: list[int],
                          noise: DistributedNoise, drop_after_shares: frozenset[int] = frozenset()) -> SecureAverage:
    """One distributed-DP round through the SecAgg+ state machines; sites in ``drop_after_shares`` (0-based)
    share their keys but never send their masked input."""
    ids = list(range(1, len(sums) + 1))
    sites = {i: SecAggSite(i, config, w) for i, w in zip(ids, weights, strict=True)}
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([site.public_keys() for site in sites.values()])
    routed = server.route_shares([site.share_keys(broadcast) for site in sites.values()])
    masked = [masked_noisy_sum(sites[i], routed[i], sums[i - 1], noise) for i in ids if i - 1 not in drop_after_shares]
    request = server.collect_masked_inputs(masked)
    server.require_noise_shares(noise)
    return server.noisy_sum([sites[i].unmask(request) for i in request.survivors], noise)


@pytest.mark.parametrize("dropped", [frozenset(), frozenset({1})], ids=["all-3-survive", "one-drops-after-sharing"])
def test_unmasked_noise_variance_is_the_central_target_from_the_survivors_shares(dropped: frozenset[int]) -> None:
    config = SecAggConfig(num_sites=3, threshold=NOISE.required_survivors(3))
    zeros = [{"w": np.zeros(COORDINATES)} for _ in WEIGHTS]
    result = run_distributed_round(config, zeros, WEIGHTS, NOISE, dropped)
    survivors = 3 - len(dropped)
    target = survivors * (NOISE.noise_multiplier * NOISE.max_grad_norm) ** 2 / (3 - NOISE.tolerance)
    values = result.arrays["w"]
    variance = float(np.var(values))
    print(f"{survivors} survivors: sample variance {variance:.5f}, target {target:.5f}, "
          f"central sigma^2 C^2 = {(NOISE.noise_multiplier * NOISE.max_grad_norm) ** 2:.5f}")
    # The variance estimate of 1e5 Gaussian-like values has a relative sd of sqrt(2 / 1e5) = 0.45%.
    assert variance == pytest.approx(target, rel=0.03)
    assert abs(float(np.mean(values))) < 5 * np.sqrt(target / COORDINATES)
    assert result.sites == tuple(i for i in (1, 2, 3) if i - 1 not in dropped)
    assert result.total_weight == sum(w for i, w in enumerate(WEIGHTS) if i not in dropped)


def clipped_sum(rng: np.random.Generator, weight: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A site's gradient sum at ``scale`` times its clipping bound: L2 norm ``scale`` * weight * C."""
    arrays = {"a": rng.standard_normal((200, 50)), "b": rng.standard_normal(7)}
    norm = np.sqrt(sum(float(np.sum(a * a)) for a in arrays.values()))
    return {name: a * (scale * weight * NOISE.max_grad_norm / norm) for name, a in arrays.items()}


def test_known_gradient_sums_come_back_as_their_sum_plus_noise() -> None:
    config = SecAggConfig(num_sites=3, threshold=2)
    rng = np.random.default_rng(5)
    sums = [clipped_sum(rng, w) for w in WEIGHTS]  # each at its clipping bound
    result = run_distributed_round(config, sums, WEIGHTS, NOISE)
    noise_sd = NOISE.noise_multiplier * NOISE.max_grad_norm * np.sqrt(3 / 2)
    residual = result.arrays["a"] - sum(s["a"] for s in sums)
    assert result.arrays["b"].shape == (7,)
    assert float(np.std(residual)) == pytest.approx(noise_sd, rel=0.05)


def test_integer_round_trip_of_signed_sums_within_one_unit_per_site() -> None:
    rng = np.random.default_rng(0)
    gamma = NOISE.scale(sum(WEIGHTS), num_sites=3)
    sums = [rng.uniform(-w, w, size=10_000) * NOISE.max_grad_norm for w in WEIGHTS]
    total = np.zeros(10_000, dtype=np.uint32)
    for values in sums:
        total += noisy_words(values, gamma, 0.0, rng)  # no noise: only the rounding
    back = summed_arrays(total, (("x", (10_000,)),), gamma)["x"]
    error = float(np.max(np.abs(back - np.sum(sums, axis=0))))
    print(f"integer round trip: max error {error:.3g}, bound n * gamma = {3 * gamma:.3g}")
    assert error < 3 * gamma
    assert np.any(np.sum(sums, axis=0) < 0)  # two's complement carried negative sums


def test_randomized_rounding_is_unbiased() -> None:
    values = np.full(200_000, 0.3)
    rounded = randomized_round(values, np.random.default_rng(1))
    assert set(np.unique(rounded)) == {0, 1}
    assert float(np.mean(rounded)) == pytest.approx(0.3, abs=0.005)


def test_gamma_keeps_the_largest_sum_and_twelve_noise_sds_inside_int32_and_shares_sampleable() -> None:
    gamma = NOISE.scale(sum(WEIGHTS), num_sites=3)
    worst = sum(WEIGHTS) * NOISE.max_grad_norm / gamma
    noise_sd = NOISE.noise_multiplier * NOISE.max_grad_norm / gamma * np.sqrt(3 / 2)
    assert worst + NOISE_TAIL_STDS * noise_sd + 3 < INT32_LIMIT
    assert 1e8 < NOISE.share_variance(3, gamma) <= SHARE_VARIANCE_LIMIT * (1 + 1e-9)
    assert INT32_LIMIT * 2 == WORD_LIMIT
    small = DistributedNoise(noise_multiplier=0.01, max_grad_norm=1.0, tolerance=0)
    gamma = small.scale(10_000, num_sites=4)  # little noise, many patients: the range decides
    assert 0.99 * INT32_LIMIT < 10_000 / gamma + NOISE_TAIL_STDS * 0.01 / gamma + 4 < INT32_LIMIT


def test_a_round_with_more_than_t_dropouts_is_not_unmasked() -> None:
    """5 sites, t = 1: the SecAgg threshold 3 would unmask 3 survivors, the n - t rule (4) does not."""
    config = SecAggConfig(num_sites=5, threshold=3)
    with pytest.raises(PrivacyError, match="needs a secure-aggregation threshold of at least 4"):
        check_threshold(config, NOISE)  # a site refuses such a round before computing anything
    ids = [1, 2, 3, 4, 5]
    sites = {i: SecAggSite(i, config, 10) for i in ids}
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([site.public_keys() for site in sites.values()])
    routed = server.route_shares([site.share_keys(broadcast) for site in sites.values()])
    gamma = NOISE.scale(50, num_sites=5)
    words = noisy_words(np.zeros(100), gamma, NOISE.share_variance(5, gamma), np.random.default_rng(2))
    masked = [sites[i].masked_words(routed[i], (("w", (100,)),), words) for i in ids[:3]]
    request = server.collect_masked_inputs(masked)
    with pytest.raises(PrivacyError, match="3 sites sent a masked input, fewer than the 4"):
        server.require_noise_shares(NOISE)
    answers = [sites[i].unmask(request) for i in request.survivors]
    with pytest.raises(PrivacyError):
        server.noisy_sum(answers, NOISE)  # every vector was dropped: nothing can be unmasked any more


def test_masked_words_that_are_not_a_noisy_sum_make_the_sum_too_long_and_it_is_refused() -> None:
    config = SecAggConfig(num_sites=3, threshold=2)
    sites = {i: SecAggSite(i, config, w) for i, w in zip((1, 2, 3), WEIGHTS, strict=True)}
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([site.public_keys() for site in sites.values()])
    routed = server.route_shares([site.share_keys(broadcast) for site in sites.values()])
    rng = np.random.default_rng(9)
    layout = (("a", (200, 50)), ("b", (7,)))
    honest = [masked_noisy_sum(sites[i], routed[i], clipped_sum(rng, WEIGHTS[i - 1]), NOISE) for i in (1, 2)]
    random_words = rng.integers(0, 2**32, size=10_007, dtype=np.uint32)  # signed by site 3, but not a noisy sum
    request = server.collect_masked_inputs([*honest, sites[3].masked_words(routed[3], layout, random_words)])
    with pytest.raises(PrivacyError, match=r"L2 norm .* more than the .* 3 sites' clipped gradient sums"):
        server.noisy_sum([sites[i].unmask(request) for i in request.survivors], NOISE)


@pytest.mark.parametrize(("scale", "refused"), [(1.0, False), (20.0, True)])
def test_a_site_past_its_clipping_bound_is_refused_once_it_outgrows_the_noise(scale: float, refused: bool) -> None:
    """One site sends its gradient sum at ``scale`` times its clipping bound (weight * C): at the bound the round is
    used; 20 times past it, the sum outgrows what the survivors' sums plus the noise can reach."""
    config = SecAggConfig(num_sites=3, threshold=2)
    rng = np.random.default_rng(11)
    sums = [clipped_sum(rng, w, scale if i == 0 else 1.0) for i, w in enumerate(WEIGHTS)]
    if refused:
        with pytest.raises(PrivacyError, match="the sum is not used"):
            run_distributed_round(config, sums, WEIGHTS, NOISE)
    else:
        assert run_distributed_round(config, sums, WEIGHTS, NOISE).sites == (1, 2, 3)

"""SecAgg+ core with real crypto: weighted average within quantization error, dropouts, safe failure, server view."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto import shamir as flower_shamir

from fedfusion.errors import ConfigError, PrivacyError
from fedfusion.secure_aggregation import (
    MaskedInput,
    SecAggConfig,
    SecAggServer,
    SecAggSite,
    SecureAverage,
    UnmaskRequest,
    shamir,
)
from fedfusion.secure_aggregation.quantize import scaled_quantized_vector

SHAPES = {"attention.weight": (64, 128), "attention.bias": (128,), "head.weight": (16, 100)}


def make_updates(num_sites: int, scale: float, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in SHAPES.items()}
        for _ in range(num_sites)
    ]


def plain_average(updates: list[dict[str, np.ndarray]], weights: list[int], clip: float) -> dict[str, np.ndarray]:
    total = sum(weights)
    return {
        name: sum(w * np.clip(u[name].astype(np.float64), -clip, clip)
                  for u, w in zip(updates, weights, strict=True)) / total
        for name in SHAPES
    }


@dataclass
class Round:
    """One round driven stage by stage; `server_view` is every object the server received."""

    config: SecAggConfig
    sites: dict[int, SecAggSite]
    server: SecAggServer
    server_view: list[object] = field(default_factory=list)


def run_round(
    config: SecAggConfig,
    updates: list[dict[str, np.ndarray]],
    weights: list[int],
    drop_after_keys: frozenset[int] = frozenset(),
    drop_after_shares: frozenset[int] = frozenset(),
    drop_before_unmask: frozenset[int] = frozenset(),
    server: SecAggServer | None = None,
) -> tuple[Round, SecureAverage]:
    ids = list(range(101, 101 + len(updates)))
    sites = {i: SecAggSite(i, config, w) for i, w in zip(ids, weights, strict=True)}
    rnd = Round(config, sites, server or SecAggServer(config))
    keys = [site.public_keys() for site in rnd.sites.values()]
    rnd.server_view += keys
    broadcast = rnd.server.collect_public_keys(keys)
    sharing = [i for i in ids if i - 101 not in drop_after_keys]
    shares = [rnd.sites[i].share_keys(broadcast) for i in sharing]
    rnd.server_view += shares
    routed = rnd.server.route_shares(shares)
    masking = [i for i in sharing if i - 101 not in drop_after_shares]
    masked = [rnd.sites[i].masked_input(routed[i], updates[i - 101]) for i in masking]
    rnd.server_view += masked
    request = rnd.server.collect_masked_inputs(masked)
    answers = [rnd.sites[i].unmask(request) for i in request.survivors if i - 101 not in drop_before_unmask]
    rnd.server_view += answers
    return rnd, rnd.server.aggregate(answers)


def max_error(result: SecureAverage, expected: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(result.arrays[name] - expected[name]))) for name in SHAPES)


def error_bound(config: SecAggConfig, keyed_weights: list[int], survivor_weights: list[int]) -> float:
    """Half a step per surviving site, scaled back by the survivors' share of the keyed sites' weight."""
    return len(survivor_weights) / 2 * config.step * sum(keyed_weights) / sum(survivor_weights) * (1 + 1e-9)


@pytest.mark.parametrize("num_sites", [3, 5])
def test_secure_average_equals_plain_weighted_average(num_sites: int) -> None:
    config = SecAggConfig(num_sites=num_sites, threshold=num_sites // 2 + 1, clipping_range=1.0)
    updates = make_updates(num_sites, scale=0.05)
    weights = [212, 57, 1033, 88, 9][:num_sites]
    _, result = run_round(config, updates, weights)
    bound = error_bound(config, weights, weights)
    error = max_error(result, plain_average(updates, weights, config.clipping_range))
    assert error <= bound, f"max error {error:.3g} above {num_sites} half steps {bound:.3g}"
    assert result.total_weight == sum(weights)
    assert result.sites == tuple(range(101, 101 + num_sites))
    assert {name: a.shape for name, a in result.arrays.items()} == SHAPES
    print(f"{num_sites} sites: max quantization error {error:.3g} (bound {bound:.3g})")


def test_values_near_and_beyond_clipping_range_are_clipped_exactly() -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0, quantization_range=2**16)
    edge = np.array([-5.0, -1.0 - 1e-6, -1.0, -0.999999, 0.0, 0.999999, 1.0, 1.0 + 1e-6, 3.0, 1e6])
    updates = [{name: np.resize(edge * sign, shape) for name, shape in SHAPES.items()} for sign in (1.0, -1.0, 0.5)]
    weights = [500, 3, 120]
    _, result = run_round(config, updates, weights)
    bound = error_bound(config, weights, weights)
    error = max_error(result, plain_average(updates, weights, config.clipping_range))
    assert error <= bound, f"max error {error:.3g} near/beyond the clipping range, bound {bound:.3g}"


@pytest.mark.parametrize("value", [1.0, 7.5, -1.0, -7.5])
def test_all_sites_at_the_range_end_never_wrap(value: float) -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0)
    assert config.num_sites * config.levels < 2**32 <= (config.num_sites + 1) * config.levels
    updates = [{name: np.full(shape, value) for name, shape in SHAPES.items()} for _ in range(3)]
    _, result = run_round(config, updates, [7, 7, 7])
    for array in result.arrays.values():
        np.testing.assert_allclose(array, np.sign(value), atol=error_bound(config, [7] * 3, [7] * 3))


def test_one_of_five_sites_drops_after_sharing_keys() -> None:
    config = SecAggConfig(num_sites=5, threshold=3, clipping_range=1.0)
    updates = make_updates(5, scale=0.1, seed=1)
    weights = [40, 400, 4, 44, 404]
    _, result = run_round(config, updates, weights, drop_after_shares=frozenset({2}))
    survivors = [0, 1, 3, 4]
    expected = plain_average([updates[i] for i in survivors], [weights[i] for i in survivors], 1.0)
    error = max_error(result, expected)
    assert error <= error_bound(config, weights, [weights[i] for i in survivors]), f"max error {error:.3g}"
    assert result.total_weight == sum(weights) - weights[2]
    assert result.sites == (101, 102, 104, 105)


def test_dropouts_down_to_the_threshold_at_every_stage() -> None:
    config = SecAggConfig(num_sites=5, threshold=3, clipping_range=1.0, quantization_range=2**20)
    updates = make_updates(5, scale=0.1, seed=2)
    weights = [10, 20, 30, 40, 50]
    # Site 0 never shares its keys, site 3 never sends its input: 3 survivors = threshold.
    _, result = run_round(config, updates, weights, drop_after_keys=frozenset({0}), drop_after_shares=frozenset({3}))
    expected = plain_average([updates[i] for i in (1, 2, 4)], [20, 30, 50], 1.0)
    assert max_error(result, expected) <= error_bound(config, weights, [20, 30, 50])
    assert result.total_weight == 100


def test_threshold_not_met_fails_safely() -> None:
    config = SecAggConfig(num_sites=5, threshold=3, clipping_range=1.0, quantization_range=2**20)
    updates = make_updates(5, scale=0.1, seed=3)
    with pytest.raises(PrivacyError, match="fewer than the threshold 3"):
        run_round(config, updates, [5] * 5, drop_after_shares=frozenset({0, 1, 2}))


def test_too_few_unmask_answers_fails_safely_and_server_keeps_nothing() -> None:
    config = SecAggConfig(num_sites=5, threshold=3, clipping_range=1.0, quantization_range=2**20)
    updates = make_updates(5, scale=0.1, seed=4)
    server = SecAggServer(config)
    with pytest.raises(PrivacyError, match="answered the unmask request, fewer than the threshold"):
        run_round(config, updates, [5] * 5, drop_before_unmask=frozenset({0, 1, 2}), server=server)
    # The masked vectors are dropped: a retry has nothing to unmask.
    assert not server._masked
    with pytest.raises(PrivacyError, match="fewer than the threshold"):
        server.aggregate([])


def test_site_refuses_to_unmask_below_threshold() -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0, quantization_range=2**16)
    sites = [SecAggSite(i, config, 1) for i in (1, 2, 3)]
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([s.public_keys() for s in sites])
    routed = server.route_shares([s.share_keys(broadcast) for s in sites])
    update = {"w": np.zeros(4)}
    sites[0].masked_input(routed[1], update)
    with pytest.raises(PrivacyError, match="fewer than the threshold"):
        sites[0].unmask(UnmaskRequest(survivors=(1,), dropouts=(2, 3)))


def test_server_view_holds_only_masked_vectors() -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0, quantization_range=2**20)
    updates = make_updates(3, scale=0.05, seed=5)
    weights = [100, 200, 300]
    rnd, _ = run_round(config, updates, weights)
    blob = b"".join(
        [obj.vector.tobytes() for obj in rnd.server_view if hasattr(obj, "vector")]
        + [c for obj in rnd.server_view if hasattr(obj, "ciphertexts") for c in obj.ciphertexts.values()]
        + [s for obj in rnd.server_view if hasattr(obj, "self_mask_shares") for s in obj.self_mask_shares.values()]
    )
    for index, (site_id, site) in enumerate(rnd.sites.items()):
        masked = next(o for o in rnd.server_view if isinstance(o, MaskedInput) and o.site_id == site_id)
        quantized = scaled_quantized_vector(updates[index], weights[index] / sum(weights), config, str(site_id))
        close = np.abs(masked.vector.astype(np.int64) - quantized.astype(np.int64)) <= 2**10
        assert close.mean() < 1e-3, f"site {site_id}: {close.mean():.2%} of masked entries near its quantized input"
        assert abs(np.corrcoef(masked.vector, quantized)[0, 1]) < 0.05
        for array in updates[index].values():
            for plain in (array.tobytes(), array.astype(np.float64).tobytes(), quantized.tobytes()):
                assert plain[:32] not in blob
        assert site._self_mask_seed not in blob


def test_site_never_reveals_both_masks_of_one_site() -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0, quantization_range=2**16)
    sites = [SecAggSite(i, config, 1) for i in (1, 2, 3)]
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([s.public_keys() for s in sites])
    routed = server.route_shares([s.share_keys(broadcast) for s in sites])
    site = sites[0]
    site.masked_input(routed[1], {"w": np.ones(4)})
    with pytest.raises(PrivacyError, match="both as survivor and as dropout"):
        site.unmask(UnmaskRequest(survivors=(1, 2, 3), dropouts=(2,)))
    # A refused request still ends the round for this site: a second request cannot ask the other way round.
    with pytest.raises(PrivacyError, match="out of order"):
        site.unmask(UnmaskRequest(survivors=(1, 3), dropouts=(2,)))
    fresh = SecAggSite(9, config, 1)
    with pytest.raises(PrivacyError, match="out of order"):
        fresh.unmask(UnmaskRequest(survivors=(9, 2), dropouts=()))


def test_site_answers_once_with_one_kind_of_share_per_site() -> None:
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0, quantization_range=2**16)
    sites = [SecAggSite(i, config, 1) for i in (1, 2, 3)]
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([s.public_keys() for s in sites])
    routed = server.route_shares([s.share_keys(broadcast) for s in sites])
    sites[0].masked_input(routed[1], {"w": np.ones(4)})
    answer = sites[0].unmask(UnmaskRequest(survivors=(1, 3), dropouts=(2,)))
    assert set(answer.self_mask_shares) == {1, 3} and set(answer.masking_key_shares) == {2}
    with pytest.raises(PrivacyError, match="out of order"):
        sites[0].unmask(UnmaskRequest(survivors=(1, 2), dropouts=(3,)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_sites": 1, "threshold": 1},
        {"num_sites": 4, "threshold": 2},
        {"num_sites": 4, "threshold": 5},
        {"num_sites": 3, "threshold": 2, "clipping_range": 0.0},
        {"num_sites": 3, "threshold": 2, "quantization_range": 2**31},
        {"num_sites": 3, "threshold": 2, "quantization_range": 1},
        {"num_sites": 100, "threshold": 51, "quantization_range": 2**26},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SecAggConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, -3, 2.5, True])
def test_bad_weight_share_or_non_finite_update_is_refused(weight: object) -> None:
    config = SecAggConfig(num_sites=3, threshold=2)
    with pytest.raises(ConfigError, match="weight must be a positive integer"):
        SecAggSite(1, config, weight)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weight share"):
        scaled_quantized_vector({"w": np.ones(3)}, 1.5, config, "a")
    with pytest.raises(ConfigError, match="non-finite"):
        scaled_quantized_vector({"w": np.array([1.0, np.nan])}, 0.5, config, "a")


def test_sites_told_different_key_lists_get_masks_that_do_not_cancel() -> None:
    """A coordinator that inflates site 3's weight for site 1 only (to shrink site 1's share) unmasks nothing: site 1
    signs its shares and masked input under another round binding, so the others reject its shares and its input
    is not accepted; without their shares of its masking key its pairwise masks cannot be removed."""
    config = SecAggConfig(num_sites=3, threshold=2, clipping_range=1.0)
    updates = make_updates(3, scale=0.05, seed=6)
    sites = {i: SecAggSite(i, config, w) for i, w in zip((1, 2, 3), (10, 20, 30), strict=True)}
    server = SecAggServer(config)
    broadcast = server.collect_public_keys([s.public_keys() for s in sites.values()])
    forged = {**broadcast, 3: dataclasses.replace(broadcast[3], weight=10**6)}
    shares = [sites[i].share_keys(forged if i == 1 else broadcast) for i in sites]
    routed = server.route_shares(shares)
    masked = [sites[i].masked_input(routed[i], updates[i - 1]) for i in sites]
    request = server.collect_masked_inputs(masked)
    assert request.survivors == (2, 3) and "not signed for this round" in server.rejected[1]
    with pytest.raises(PrivacyError, match="0 shares for site 1, fewer than the threshold"):
        server.aggregate([sites[i].unmask(request) for i in request.survivors])


def test_shares_are_flowers_format() -> None:
    secret = bytes(range(48))
    ours = shamir.create_shares(secret, 3, 5)
    assert flower_shamir.combine_shares(ours[1:4]) == secret
    assert shamir.combine_shares(flower_shamir.create_shares(secret, 3, 5)[:3]) == secret
    assert shamir.combine_shares([ours[4], ours[0], ours[2]]) == secret

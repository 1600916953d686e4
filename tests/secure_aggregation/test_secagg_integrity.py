"""SecAgg+ under a hostile site, on the Flower-free core with real crypto: each attack is detected, the site named
and dropped (as a dropout), and the survivors' aggregate equals their plain weighted average."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from test_secagg_core import SHAPES, error_bound, make_updates, max_error, plain_average

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    SecAggConfig,
    SecAggServer,
    SecAggSite,
    SecureAverage,
    UnmaskShares,
)
from fedfusion.secure_aggregation import site as secagg_site
from fedfusion.secure_aggregation.crypto import MASKED_INPUT, sign, statement
from fedfusion.secure_aggregation.masks import masked_input_digest

CAP = 100_000
WEIGHTS = [40, 400, 4, 44, 404]
HOSTILE = 2
"""Index of the hostile site (id 102) among the round's sites 100..104."""


@dataclasses.dataclass
class Attack:
    """Hooks that rewrite what the hostile site sends at each stage (identity by default)."""

    keys: Callable[[PublicKeys], PublicKeys] = lambda keys: keys
    shares: Callable[[EncryptedShares], EncryptedShares] = lambda shares: shares
    masked: Callable[[MaskedInput], MaskedInput] = lambda masked: masked
    unmask: Callable[[UnmaskShares], UnmaskShares] = lambda answer: answer


def run_round(config: SecAggConfig, updates: list[dict[str, np.ndarray]], attack: Attack,
              seen: set[bytes] | None = None) -> tuple[SecAggServer, SecureAverage, dict[int, SecAggSite]]:
    """One round of sites 100.. with the hostile site's messages rewritten by ``attack``."""
    hostile = 100 + HOSTILE
    sites = {100 + i: SecAggSite(100 + i, config, w) for i, w in enumerate(WEIGHTS)}
    server = SecAggServer(config, max_weight=CAP, seen_inputs=seen)

    def sent(site: int, message: object, rewrite: Callable[[object], object]) -> object:
        return rewrite(message) if site == hostile else message

    keys = server.collect_public_keys([sent(i, s.public_keys(), attack.keys) for i, s in sites.items()])  # type: ignore[misc]
    routed = server.route_shares([sent(i, sites[i].share_keys(keys), attack.shares) for i in keys])  # type: ignore[misc]
    request = server.collect_masked_inputs(
        [sent(i, sites[i].masked_input(routed[i], updates[i - 100]), attack.masked) for i in routed])  # type: ignore[misc]
    answers = [sent(i, sites[i].unmask(request), attack.unmask) for i in request.survivors]
    return server, server.aggregate(answers), sites  # type: ignore[arg-type]


def assert_survivors_average(result: SecureAverage, config: SecAggConfig, updates: list[dict[str, np.ndarray]],
                             survivors: list[int], keyed: list[int]) -> None:
    expected = plain_average([updates[i] for i in survivors], [WEIGHTS[i] for i in survivors], config.clipping_range)
    error = max_error(result, expected)
    bound = error_bound(config, [WEIGHTS[i] for i in keyed], [WEIGHTS[i] for i in survivors])
    assert error <= bound, f"max error {error:.3g} above {bound:.3g}"
    assert result.sites == tuple(100 + i for i in survivors)


CONFIG = SecAggConfig(num_sites=5, threshold=3, clipping_range=1.0)
HONEST = [0, 1, 3, 4]
ALL = [0, 1, 2, 3, 4]


def test_inflated_weight_is_dropped_at_stage_one_and_named() -> None:
    updates = make_updates(5, scale=0.1, seed=11)
    server, result, _ = run_round(CONFIG, updates, Attack(keys=lambda k: dataclasses.replace(k, weight=10**12)))
    assert server.rejected == {102: "announced weight 1000000000000, not an integer in [1, 100000] "
                                    "(study key 'max-site-patients')"}
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=HONEST)
    assert result.total_weight == sum(WEIGHTS[i] for i in HONEST)


def test_masked_input_replayed_from_the_previous_round_is_named_and_dropped() -> None:
    seen: set[bytes] = set()
    kept: dict[str, MaskedInput] = {}

    def keep(masked: MaskedInput) -> MaskedInput:
        kept["round 1"] = masked
        return masked

    run_round(CONFIG, make_updates(5, scale=0.1, seed=12), Attack(masked=keep), seen)
    updates = make_updates(5, scale=0.1, seed=13)
    # Sent again as it was: its tag signs round 1's binding.
    server, result, _ = run_round(CONFIG, updates, Attack(masked=lambda _: kept["round 1"]), seen)
    assert "not signed for this round (replayed" in server.rejected[102]
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=ALL)


def test_masked_input_replayed_and_signed_again_is_recognised_as_an_earlier_rounds() -> None:
    seen: set[bytes] = set()
    kept: dict[str, MaskedInput] = {}

    def keep(masked: MaskedInput) -> MaskedInput:
        kept["round 1"] = masked
        return masked

    run_round(CONFIG, make_updates(5, scale=0.1, seed=14), Attack(masked=keep), seen)
    updates = make_updates(5, scale=0.1, seed=15)
    holder: dict[str, SecAggSite] = {}

    def resign(masked: MaskedInput) -> MaskedInput:
        site = holder["site"]  # the hostile site signs the old words with this round's key and binding
        old = kept["round 1"]
        tag = sign(site._signing_private, statement(site.config.binding(site.announced_weight), MASKED_INPUT,
                                                    site.site_id, masked_input_digest(old.layout, old.vector)))
        return dataclasses.replace(old, tag=tag)

    sites = {100 + i: SecAggSite(100 + i, CONFIG, w) for i, w in enumerate(WEIGHTS)}
    holder["site"] = sites[102]
    server = SecAggServer(CONFIG, max_weight=CAP, seen_inputs=seen)
    keys = server.collect_public_keys([s.public_keys() for s in sites.values()])
    routed = server.route_shares([s.share_keys(keys) for s in sites.values()])
    masked = [sites[i].masked_input(routed[i], updates[i - 100]) for i in routed]
    request = server.collect_masked_inputs([resign(m) if m.site_id == 102 else m for m in masked])
    assert server.rejected == {102: "sent a masked input of an earlier round again (replayed)"}
    result = server.aggregate([sites[i].unmask(request) for i in request.survivors])
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=ALL)


def flip_one_byte(shares: EncryptedShares) -> EncryptedShares:
    """A tampered chunk in the share bundle the hostile site deals to site 100."""
    ciphertext = bytearray(shares.ciphertexts[100])
    ciphertext[len(ciphertext) // 2] ^= 0x01
    return dataclasses.replace(shares, ciphertexts={**shares.ciphertexts, 100: bytes(ciphertext)})


def test_tampered_share_dealt_in_stage_two_names_its_dealer_who_is_dropped() -> None:
    updates = make_updates(5, scale=0.1, seed=16)
    server, result, _ = run_round(CONFIG, updates, Attack(shares=flip_one_byte))
    assert server.rejected == {102: "dealt site 100 a share that did not decrypt or verify"}
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=ALL)


def test_tampered_share_revealed_in_stage_four_names_the_site_and_the_unmask_stays_correct() -> None:
    updates = make_updates(5, scale=0.1, seed=17)

    def alter(answer: UnmaskShares) -> UnmaskShares:
        share = bytearray(answer.self_mask_shares[101])
        share[-1] ^= 0xFF
        return dataclasses.replace(answer, self_mask_shares={**answer.self_mask_shares, 101: bytes(share)})

    server, result, _ = run_round(CONFIG, updates, Attack(unmask=alter))
    assert server.rejected == {102: "revealed a self-mask-share of site 101 that site 101 did not deal it (altered); "
                                    "its unmask answer is set aside"}
    # Its (well-formed) input is in the sum: removing it would need both of its masks, which no site reveals.
    assert_survivors_average(result, CONFIG, updates, ALL, keyed=ALL)


@pytest.mark.parametrize("rewrite, reason", [
    (lambda m: dataclasses.replace(m, vector=m.vector.astype(np.int64) + 2**32), "not one vector of uint32 words"),
    (lambda m: dataclasses.replace(m, vector=m.vector[:-1]), "masked words for"),
    (lambda m: dataclasses.replace(m, vector=m.vector.reshape(2, -1)), "not one vector of uint32 words"),
    (lambda m: dataclasses.replace(m, layout=m.layout[:-1]), "other array names or shapes"),
    (lambda m: dataclasses.replace(m, vector=m.vector ^ np.uint32(1)), "not signed for this round"),
], ids=["out-of-range-words", "one-word-short", "not-a-vector", "wrong-layout", "altered-words"])
def test_malformed_masked_words_drop_the_site_not_the_round(rewrite: Callable[[MaskedInput], MaskedInput],
                                                            reason: str) -> None:
    updates = make_updates(5, scale=0.1, seed=18)
    server, result, _ = run_round(CONFIG, updates, Attack(masked=rewrite))
    assert list(server.rejected) == [102] and reason in server.rejected[102]
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=ALL)


@pytest.mark.parametrize("attack, reason, keyed", [
    (Attack(keys=lambda k: dataclasses.replace(k, masking_key=b"not a key")), "not keys of the round's kinds",
     HONEST),
    (Attack(keys=lambda k: dataclasses.replace(k, weight=0)), "announced weight 0", HONEST),
    (Attack(shares=lambda s: dataclasses.replace(s, ciphertexts={100: s.ciphertexts[100]})),
     "did not share with exactly the other sites", ALL),
], ids=["bad-key", "zero-weight", "shares-with-one-site"])
def test_malformed_stage_answers_drop_the_site_not_the_round(attack: Attack, reason: str, keyed: list[int]) -> None:
    """Stage 1 answers are checked before the key list goes out (the site is not keyed); a stage-2 answer after."""
    updates = make_updates(5, scale=0.1, seed=19)
    server, result, _ = run_round(CONFIG, updates, attack)
    assert list(server.rejected) == [102] and reason in server.rejected[102]
    assert_survivors_average(result, CONFIG, updates, HONEST, keyed=keyed)


def test_well_formed_words_without_masks_that_cancel_are_caught_in_the_sum() -> None:
    """Words the site signs itself but did not mask as agreed: per site this cannot be told from a real masked input
    (that would need a zero-knowledge proof); the unmasked sum falls outside what the inputs allow, so it is not
    used and the round fails safely."""
    updates = make_updates(5, scale=0.1, seed=20)
    holder: dict[str, SecAggSite] = {}

    def garbage(masked: MaskedInput) -> MaskedInput:
        site = holder["site"]
        words = np.random.default_rng(0).integers(0, 2**32, masked.vector.size, dtype=np.uint32)
        tag = sign(site._signing_private, statement(site.config.binding(site.announced_weight), MASKED_INPUT,
                                                    site.site_id, masked_input_digest(masked.layout, words)))
        return dataclasses.replace(masked, vector=words, tag=tag)

    sites = {100 + i: SecAggSite(100 + i, CONFIG, w) for i, w in enumerate(WEIGHTS)}
    holder["site"] = sites[102]
    server = SecAggServer(CONFIG, max_weight=CAP)
    keys = server.collect_public_keys([s.public_keys() for s in sites.values()])
    routed = server.route_shares([s.share_keys(keys) for s in sites.values()])
    masked = [sites[i].masked_input(routed[i], updates[i - 100]) for i in routed]
    request = server.collect_masked_inputs([garbage(m) if m.site_id == 102 else m for m in masked])
    assert not server.rejected
    with pytest.raises(PrivacyError, match=r"values of the unmasked sum lie outside .* the sum is not used"):
        server.aggregate([sites[i].unmask(request) for i in request.survivors])
    assert sum(int(np.prod(s)) for s in SHAPES.values()) > 1000


def test_a_bad_share_its_dealer_signed_cannot_corrupt_the_unmask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile site deals site 100 a wrong share of its seed and key, signed; site 100 cannot tell. In stage 4
    the seed is rebuilt from a subset of shares that fits the dealer's stage-1 commitment, so the unmask is exact."""
    updates = make_updates(5, scale=0.1, seed=21)
    real = secagg_site.create_shares

    def one_bad_share(secret: bytes, threshold: int, num: int) -> list[bytes]:
        shares = real(secret, threshold, num)
        shares[0] = shares[0][:-1] + bytes([shares[0][-1] ^ 0x01])  # the share for site 100
        return shares

    sites = {100 + i: SecAggSite(100 + i, CONFIG, w) for i, w in enumerate(WEIGHTS)}
    server = SecAggServer(CONFIG, max_weight=CAP)
    keys = server.collect_public_keys([s.public_keys() for s in sites.values()])
    shares = []
    for site_id, site in sites.items():
        with monkeypatch.context() as patch:
            if site_id == 102:
                patch.setattr(secagg_site, "create_shares", one_bad_share)
            shares.append(site.share_keys(keys))
    routed = server.route_shares(shares)
    request = server.collect_masked_inputs([sites[i].masked_input(routed[i], updates[i - 100]) for i in routed])
    result = server.aggregate([sites[i].unmask(request) for i in request.survivors])
    assert not server.rejected
    assert_survivors_average(result, CONFIG, updates, ALL, keyed=ALL)

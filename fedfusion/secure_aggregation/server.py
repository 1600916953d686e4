"""`SecAggServer`: the coordinator's side of a SecAgg+ round; it only ever holds masked vectors and shares.

It routes ciphertexts it cannot read, adds masked vectors, and removes the masks with the seeds rebuilt from
`threshold` shares: survivors' self masks, and the pairwise masks of sites that dropped out after sharing keys.
Fewer than `threshold` survivors at any stage raises `PrivacyError` and drops every vector received. It ends with
the weighted average of the sites' updates (`aggregate`) or, in a distributed-DP round, the noisy sum of their
clipped gradient sums (`noisy_sum`, which also refuses to unmask with fewer than n - t survivors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.integer_noise import DistributedNoise, summed_arrays
from fedfusion.secure_aggregation.masks import mask_vector, pairwise_seed, scalar_to_private_key
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    SecureAverage,
    UnmaskRequest,
    UnmaskShares,
)
from fedfusion.secure_aggregation.quantize import Layout, check_weight, vector_length, weighted_average
from fedfusion.secure_aggregation.shamir import combine_shares


class SecAggServer:
    """Collects each stage's answers and hands back what the next stage needs; one instance per round."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._keys: dict[int, PublicKeys] = {}
        self._sharers: set[int] = set()
        self._layout: Layout = ()
        self._masked: dict[int, NDArray[np.uint32]] = {}

    def _require(self, count: int, stage: str) -> None:
        if count < self.config.threshold:
            self._masked.clear()
            raise PrivacyError(
                f"secure aggregation: {count} sites {stage}, fewer than the threshold {self.config.threshold}; "
                f"the round is abandoned and nothing is unmasked"
            )

    def collect_public_keys(self, keys: Sequence[PublicKeys]) -> dict[int, PublicKeys]:
        """Stage 1: check the announced keys; return the list to broadcast to every site."""
        by_site = {k.site_id: k for k in keys}
        if len(by_site) != len(keys) or len(keys) > self.config.num_sites:
            raise PrivacyError(
                f"secure aggregation: {len(keys)} key announcements for {len(by_site)} sites "
                f"(at most {self.config.num_sites} invited)"
            )
        self._require(len(by_site), "announced keys")
        for announced in by_site.values():
            check_weight(announced.weight, str(announced.site_id))
        self._keys = by_site
        return dict(by_site)

    def route_shares(self, shares: Sequence[EncryptedShares]) -> dict[int, dict[int, bytes]]:
        """Stage 2: forward each ciphertext to its recipient; return, per sharing site, {sender: ciphertext}."""
        sharers = {s.site_id for s in shares}
        for sent in shares:
            if sent.site_id not in self._keys or set(sent.ciphertexts) != set(self._keys) - {sent.site_id}:
                raise PrivacyError(f"secure aggregation: site {sent.site_id} did not share with every keyed site")
        self._require(len(sharers), "shared their keys")
        self._sharers = sharers
        return {
            recipient: {s.site_id: s.ciphertexts[recipient] for s in shares if s.site_id != recipient}
            for recipient in sorted(sharers)
        }

    def collect_masked_inputs(self, inputs: Sequence[MaskedInput]) -> UnmaskRequest:
        """Stage 3: keep the masked vectors; return the unmask request naming survivors and dropouts."""
        layouts = {masked.layout for masked in inputs}
        for masked in inputs:
            if (masked.site_id not in self._sharers or masked.vector.dtype != np.uint32
                    or len(masked.vector) != vector_length(masked.layout)):
                raise PrivacyError(f"secure aggregation: unexpected masked input from site {masked.site_id}")
        if len(layouts) > 1:
            raise PrivacyError("secure aggregation: sites sent updates of different array names or shapes")
        self._masked = {masked.site_id: masked.vector for masked in inputs}
        self._require(len(self._masked), "sent a masked input")
        (self._layout,) = layouts
        survivors = tuple(sorted(self._masked))
        return UnmaskRequest(survivors, tuple(sorted(self._sharers - set(survivors))))

    def aggregate(self, answers: Sequence[UnmaskShares]) -> SecureAverage:
        """Stage 4: rebuild seeds from `threshold` shares each, remove every mask, return the weighted average."""
        total, survivors = self._unmasked_sum(answers)
        total_weight = sum(keys.weight for keys in self._keys.values())
        survivor_weight = sum(self._keys[site].weight for site in survivors)
        arrays = weighted_average(total, self._layout, self.config, len(survivors), survivor_weight / total_weight)
        return SecureAverage(arrays, survivor_weight, tuple(survivors))

    def noisy_sum(self, answers: Sequence[UnmaskShares], noise: DistributedNoise) -> SecureAverage:
        """Stage 4 of a distributed-DP round: the survivors' noisy sum of clipped gradient sums (int32 * gamma).

        Refuses (``PrivacyError``, nothing unmasked) unless at least n - t of the n invited sites sent a masked
        input (``require_noise_shares``). ``arrays`` holds the sum (not an average); ``total_weight`` the
        survivors' training patients.
        """
        self.require_noise_shares(noise)
        gamma = noise.scale(sum(keys.weight for keys in self._keys.values()), self.config.num_sites)
        total, survivors = self._unmasked_sum(answers)
        return SecureAverage(summed_arrays(total, self._layout, gamma),
                             sum(self._keys[site].weight for site in survivors), tuple(survivors))

    def require_noise_shares(self, noise: DistributedNoise) -> None:
        """``PrivacyError`` (and every vector dropped) unless at least n - t sites sent a masked input: with fewer,
        their noise shares do not add up to the central noise. Checked before the unmask request is sent."""
        needed = noise.required_survivors(self.config.num_sites)
        if len(self._masked) < needed:
            count = len(self._masked)
            self._masked.clear()
            raise PrivacyError(f"distributed DP: {count} sites sent a masked input, fewer than the {needed} "
                               f"whose noise shares make up the central noise; nothing is unmasked")

    def _unmasked_sum(self, answers: Sequence[UnmaskShares]) -> tuple[NDArray[np.uint32], list[int]]:
        """The survivors' summed vectors with every mask removed, and the survivors."""
        answers = [answer for answer in answers if answer.site_id in self._masked]
        self._require(len({answer.site_id for answer in answers}), "answered the unmask request")
        survivors = sorted(self._masked)
        dropouts = sorted(self._sharers - set(survivors))
        total = np.zeros(vector_length(self._layout), dtype=np.uint32)
        for vector in self._masked.values():
            total += vector
        self._masked.clear()
        for site in survivors:
            seed = self._reconstruct(site, [a.self_mask_shares.get(site) for a in answers])
            total -= mask_vector(seed, len(total))
        total_weight = sum(keys.weight for keys in self._keys.values())
        binding = self.config.binding(total_weight)
        for dropout in dropouts:
            scalar = self._reconstruct(dropout, [a.masking_key_shares.get(dropout) for a in answers])
            try:
                private_key = scalar_to_private_key(scalar)
            except ValueError:
                raise PrivacyError(f"secure aggregation: the key shares of site {dropout} do not rebuild a key"
                                   ) from None
            for site in survivors:
                pairwise = mask_vector(pairwise_seed(private_key, self._keys[site].masking_key, binding), len(total))
                # The survivor added the pair's mask if its id is smaller, else subtracted it: undo that.
                if site < dropout:
                    total -= pairwise
                else:
                    total += pairwise
        return total, survivors

    def _reconstruct(self, site: int, shares: list[bytes | None]) -> bytes:
        present = [share for share in shares if share is not None]
        if len(present) < self.config.threshold:
            raise PrivacyError(
                f"secure aggregation: {len(present)} shares for site {site}, fewer than the threshold "
                f"{self.config.threshold}; nothing is unmasked"
            )
        try:
            return combine_shares(present[: self.config.threshold])
        except ValueError:
            raise PrivacyError(f"secure aggregation: the shares for site {site} do not reconstruct") from None

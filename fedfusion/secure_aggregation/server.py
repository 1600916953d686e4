"""`SecAggServer`: the coordinator's side of a SecAgg+ round; it only ever holds masked vectors and shares.

It routes ciphertexts it cannot read, adds masked vectors, and removes the masks with the seeds rebuilt from
`threshold` shares: survivors' self masks, and the pairwise masks of sites that dropped out after sharing keys.
Fewer than `threshold` survivors at any stage raises `PrivacyError` and drops every vector received. It ends with
the weighted average of the sites' updates (`aggregate`) or, in a distributed-DP round, the noisy sum of their
clipped gradient sums (`noisy_sum`, which also refuses to unmask with fewer than n - t survivors).

**Integrity.** One site's bad answer drops that site, never the round: it is named in `rejected` with the reason
and counts as a dropout from then on (its masks are removed with the other sites' shares). Checked: stage 1, a
weight outside [1, `max_weight`] (the study's ``max-site-patients``), keys that are not keys, a key another site
also announced; stage 2, ciphertexts not for exactly the other keyed sites; stage 3, masked words that are not one
uint32 vector of the global model's layout and length, a masked input not signed with the site's round key over
this round's binding (another round's input), an input already seen in an earlier round (`seen_inputs`), and a
site whose share another site could not decrypt or verify; stage 4, a revealed share its dealer did not sign
(the revealing site altered it; its answer is set aside). Seeds and keys are rebuilt only from shares that match
the dealer's stage-1 commitment, and the unmasked sum must lie where the survivors' inputs can put it (in a
distributed-DP round: within the L2 norm their clipped gradient sums and noise shares can reach).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import combinations, islice

import numpy as np
from numpy.typing import NDArray

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.crypto import (
    MASKED_INPUT,
    MASKING_KEY_SHARE,
    SELF_MASK_SHARE,
    is_public_key,
    is_signed,
    is_signing_key,
    public_key_to_bytes,
    statement,
)
from fedfusion.secure_aggregation.integer_noise import DistributedNoise, check_noisy_sum, summed_arrays
from fedfusion.secure_aggregation.masks import (
    mask_vector,
    masked_input_digest,
    pairwise_seed,
    scalar_to_private_key,
    seed_commitment,
)
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    SecureAverage,
    UnmaskRequest,
    UnmaskShares,
)
from fedfusion.secure_aggregation.quantize import Layout, check_level_sum, vector_length, weighted_average
from fedfusion.secure_aggregation.shamir import combine_shares

COMMITMENT_BYTES = 32
MAX_SHARE_SUBSETS = 256
"""Most subsets of `threshold` signed shares tried to rebuild one seed or key that matches its commitment (the
first one fits unless the dealer signed shares that do not fit together)."""


class SecAggServer:
    """Collects each stage's answers and hands back what the next stage needs; one instance per round.

    ``max_weight``: the largest weight a site may announce (None: no cap). ``layout``: the names and shapes every
    masked input must have (None: the layout most sites sent). ``seen_inputs``: digests of the masked inputs of
    the study's earlier rounds, extended with this round's (keep one set per study).
    """

    def __init__(self, config: SecAggConfig, *, max_weight: int | None = None, layout: Layout | None = None,
                 seen_inputs: set[bytes] | None = None) -> None:
        self.config = config
        self.max_weight = max_weight
        self.expected_layout = layout
        self.seen_inputs = set() if seen_inputs is None else seen_inputs
        self.rejected: dict[int, str] = {}
        """Sites dropped for a failed check, with the reason (in the order found)."""
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

    def _reject(self, site: int, reason: str) -> None:
        self.rejected.setdefault(site, reason)

    @property
    def _binding(self) -> bytes:
        return self.config.binding(sum(keys.weight for keys in self._keys.values()))

    def collect_public_keys(self, keys: Sequence[PublicKeys]) -> dict[int, PublicKeys]:
        """Stage 1: check the announced keys and weights; return the list to broadcast to every site."""
        if len(keys) > self.config.num_sites:
            raise PrivacyError(f"secure aggregation: {len(keys)} key announcements, at most "
                               f"{self.config.num_sites} sites invited")
        announcements = Counter(k.site_id for k in keys)
        published = Counter(key for k in keys for key in (k.encryption_key, k.masking_key, k.signing_key))
        for announced in keys:
            problem = self._keys_problem(announced, announcements[announced.site_id],
                                         max(published[k] for k in (announced.encryption_key, announced.masking_key,
                                                                    announced.signing_key)))
            if problem:
                self._reject(announced.site_id, problem)
            else:
                self._keys[announced.site_id] = announced
        self._require(len(self._keys), "announced valid keys")
        return dict(self._keys)

    def _keys_problem(self, announced: PublicKeys, announcements: int, key_uses: int) -> str | None:
        weight = announced.weight
        if announcements > 1:
            return "announced keys more than once"
        if (isinstance(weight, bool) or not isinstance(weight, int) or weight < 1
                or (self.max_weight is not None and weight > self.max_weight)):
            return (f"announced weight {weight!r}, not an integer in [1, {self.max_weight}] "
                    f"(study key 'max-site-patients')")
        if not (is_public_key(announced.encryption_key) and is_public_key(announced.masking_key)
                and is_signing_key(announced.signing_key) and len(announced.seed_commitment) == COMMITMENT_BYTES):
            return "announced keys that are not keys of the round's kinds"
        if key_uses > 1:
            return "announced a public key that another site announced too"
        return None

    def route_shares(self, shares: Sequence[EncryptedShares]) -> dict[int, dict[int, bytes]]:
        """Stage 2: forward each ciphertext to its recipient; return, per sharing site, {sender: ciphertext}."""
        good: dict[int, EncryptedShares] = {}
        for sent in shares:
            if sent.site_id not in self._keys or sent.site_id in good:
                self._reject(sent.site_id, "shared keys it had not announced, or twice")
            elif set(sent.ciphertexts) != set(self._keys) - {sent.site_id}:
                self._reject(sent.site_id, "did not share with exactly the other sites that announced keys")
            else:
                good[sent.site_id] = sent
        self._require(len(good), "shared their keys")
        self._sharers = set(good)
        return {
            recipient: {s.site_id: s.ciphertexts[recipient] for s in good.values() if s.site_id != recipient}
            for recipient in sorted(good)
        }

    def collect_masked_inputs(self, inputs: Sequence[MaskedInput]) -> UnmaskRequest:
        """Stage 3: keep the masked vectors that pass every check; return the unmask request naming survivors and
        dropouts (sites that shared keys but sent no acceptable input, or that dealt a share another site
        rejected)."""
        layouts = Counter(masked.layout for masked in inputs)
        self._layout = self.expected_layout if self.expected_layout is not None else (
            layouts.most_common(1)[0][0] if layouts else ())
        binding = self._binding
        accepted: dict[int, tuple[MaskedInput, bytes]] = {}
        for masked in inputs:
            problem, digest = self._input_problem(masked, binding)
            if problem or masked.site_id in accepted:
                self._reject(masked.site_id, problem or "sent two masked inputs")
            else:
                accepted[masked.site_id] = (masked, digest)
        for accuser, (masked, _) in sorted(accepted.items()):
            for accused in masked.complaints:
                if accused in self._sharers and accused != accuser:
                    self._reject(accused, f"dealt site {accuser} a share that did not decrypt or verify")
        self._masked = {site: masked.vector for site, (masked, _) in accepted.items() if site not in self.rejected}
        self.seen_inputs.update(digest for site, (_, digest) in accepted.items() if site in self._masked)
        self._require(len(self._masked), "sent an acceptable masked input")
        survivors = tuple(sorted(self._masked))
        return UnmaskRequest(survivors, tuple(sorted(self._sharers - set(survivors))))

    def _input_problem(self, masked: MaskedInput, binding: bytes) -> tuple[str | None, bytes]:
        """Why ``masked`` is not accepted (None if it is), and its digest."""
        vector = masked.vector
        if masked.site_id not in self._sharers:
            return "sent a masked input without sharing its keys", b""
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32 or vector.ndim != 1:
            return ("sent masked words that are not one vector of uint32 words (values modulo 2**32), got "
                    f"{getattr(vector, 'dtype', type(vector).__name__)} of shape {np.shape(vector)}"), b""
        if masked.layout != self._layout:
            return "sent an update of other array names or shapes than the global model's", b""
        if len(vector) != vector_length(self._layout):
            return f"sent {len(vector)} masked words for {vector_length(self._layout)} values", b""
        digest = masked_input_digest(self._layout, vector)
        if not is_signed(self._keys[masked.site_id].signing_key, masked.tag,
                         statement(binding, MASKED_INPUT, masked.site_id, digest)):
            return "sent a masked input not signed for this round (replayed from another round, or altered)", b""
        if digest in self.seen_inputs:
            return "sent a masked input of an earlier round again (replayed)", b""
        return None, digest

    def aggregate(self, answers: Sequence[UnmaskShares]) -> SecureAverage:
        """Stage 4: rebuild seeds from `threshold` shares each, remove every mask, return the weighted average."""
        total, survivors = self._unmasked_sum(answers)
        total_weight = sum(keys.weight for keys in self._keys.values())
        survivor_weight = sum(self._keys[site].weight for site in survivors)
        share_sum = survivor_weight / total_weight
        check_level_sum(total, self.config, len(survivors), share_sum)
        arrays = weighted_average(total, self._layout, self.config, len(survivors), share_sum)
        return SecureAverage(arrays, survivor_weight, tuple(survivors), dict(self.rejected))

    def noisy_sum(self, answers: Sequence[UnmaskShares], noise: DistributedNoise) -> SecureAverage:
        """Stage 4 of a distributed-DP round: the survivors' noisy sum of clipped gradient sums (int32 * gamma).

        Refuses (``PrivacyError``, nothing unmasked) unless at least n - t of the n invited sites sent a masked
        input (``require_noise_shares``), and refuses the sum if it is longer than the survivors' clipped sums
        plus their noise can make it (``check_noisy_sum``). ``arrays`` holds the sum (not an average);
        ``total_weight`` the survivors' training patients.
        """
        self.require_noise_shares(noise)
        gamma = noise.scale(sum(keys.weight for keys in self._keys.values()), self.config.num_sites)
        total, survivors = self._unmasked_sum(answers)
        survivor_weight = sum(self._keys[site].weight for site in survivors)
        check_noisy_sum(total, noise, survivor_weight, len(survivors), self.config.num_sites, gamma)
        return SecureAverage(summed_arrays(total, self._layout, gamma), survivor_weight, tuple(survivors),
                             dict(self.rejected))

    def require_noise_shares(self, noise: DistributedNoise) -> None:
        """``PrivacyError`` (and every vector dropped) unless at least n - t sites sent a masked input: with fewer,
        their noise shares do not add up to the central noise. Checked before the unmask request is sent."""
        needed = noise.required_survivors(self.config.num_sites)
        if len(self._masked) < needed:
            count = len(self._masked)
            self._masked.clear()
            raise PrivacyError(f"distributed DP: {count} sites sent a masked input, fewer than the {needed} "
                               f"whose noise shares make up the central noise; nothing is unmasked")

    def _signed_answers(self, answers: Sequence[UnmaskShares]) -> list[UnmaskShares]:
        """The survivors' answers whose every share carries its dealer's signature; the others' sites rejected."""
        binding = self._binding
        kept = []
        for answer in answers:
            if answer.site_id not in self._masked:
                continue
            altered = next((
                (kind, dealer) for kind, shares, signatures in (
                    (SELF_MASK_SHARE, answer.self_mask_shares, answer.self_mask_signatures),
                    (MASKING_KEY_SHARE, answer.masking_key_shares, answer.masking_key_signatures))
                for dealer, share in shares.items()
                if dealer not in self._keys or not is_signed(
                    self._keys[dealer].signing_key, signatures.get(dealer, b""),
                    statement(binding, kind, dealer, answer.site_id, share))
            ), None)
            if altered is None:
                kept.append(answer)
            else:
                self._reject(answer.site_id, f"revealed a {altered[0]} of site {altered[1]} that site {altered[1]} "
                                             f"did not deal it (altered); its unmask answer is set aside")
        return kept

    def _unmasked_sum(self, answers: Sequence[UnmaskShares]) -> tuple[NDArray[np.uint32], list[int]]:
        """The survivors' summed vectors with every mask removed, and the survivors."""
        answers = self._signed_answers(answers)
        self._require(len({answer.site_id for answer in answers}), "answered the unmask request")
        survivors = sorted(self._masked)
        dropouts = sorted(self._sharers - set(survivors))
        total = np.zeros(vector_length(self._layout), dtype=np.uint32)
        for vector in self._masked.values():
            total += vector
        self._masked.clear()
        for site in survivors:
            seed = self._reconstruct(site, "self-mask seed", [a.self_mask_shares.get(site) for a in answers],
                                     partial(_is_seed_of, self.config.round_nonce, self._keys[site].seed_commitment))
            total -= mask_vector(seed, len(total))
        binding = self._binding
        for dropout in dropouts:
            scalar = self._reconstruct(dropout, "masking key", [a.masking_key_shares.get(dropout) for a in answers],
                                       partial(_is_private_key_of, self._keys[dropout].masking_key))
            private_key = scalar_to_private_key(scalar)
            for site in survivors:
                pairwise = mask_vector(pairwise_seed(private_key, self._keys[site].masking_key, binding), len(total))
                # The survivor added the pair's mask if its id is smaller, else subtracted it: undo that.
                if site < dropout:
                    total -= pairwise
                else:
                    total += pairwise
        return total, survivors

    def _reconstruct(self, site: int, what: str, shares: list[bytes | None], fits: Callable[[bytes], bool]) -> bytes:
        """The secret rebuilt from `threshold` of ``shares`` that ``fits`` the dealer's stage-1 commitment."""
        present = [share for share in shares if share is not None]
        if len(present) < self.config.threshold:
            raise PrivacyError(
                f"secure aggregation: {len(present)} shares for site {site}, fewer than the threshold "
                f"{self.config.threshold}; nothing is unmasked"
            )
        for subset in islice(combinations(present, self.config.threshold), MAX_SHARE_SUBSETS):
            try:
                secret = combine_shares(list(subset))
            except ValueError:
                continue
            if fits(secret):
                return secret
        raise PrivacyError(f"secure aggregation: site {site} dealt signed shares of its {what} that do not rebuild "
                           f"what it committed to in stage 1; nothing is unmasked")


def _is_seed_of(round_nonce: bytes, commitment: bytes, seed: bytes) -> bool:
    """True when ``seed`` is what ``commitment`` commits to in the round of ``round_nonce``."""
    return seed_commitment(seed, round_nonce) == commitment


def _is_private_key_of(public_key: bytes, scalar: bytes) -> bool:
    """True when ``scalar`` is the private key of the PEM ``public_key``."""
    try:
        return public_key_to_bytes(scalar_to_private_key(scalar).public_key()) == public_key
    except ValueError:
        return False

"""Train/test assignment of a patient by a hash of (patient id, study seed): no statistic of the site is used."""

from __future__ import annotations

import hashlib


def is_test_patient(patient_id: str, seed: int, test_fraction: float) -> bool:
    """True if the patient is held out: the hash of (seed, id) mapped to [0, 1) falls below ``test_fraction``."""
    digest = hashlib.sha256(f"{seed}\x00{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction

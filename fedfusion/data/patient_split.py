"""Train/test assignment of a patient by a hash of (patient id, split seed): no statistic of the site is used.

A deployed site splits by its own policy (``fedfusion.privacy.site_policy``: ``split-seed``, ``test-fraction``,
``use-split-column``), so the coordinator cannot move a site's held-out patients through the study's ``seed`` or
``test-fraction``; those apply where one party holds every site (``fedfusion simulate`` writes them into each
simulated site's policy, so its baselines score the same patients as the federation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedfusion.study.config import StudyConfig


@dataclass(frozen=True)
class PatientSplit:
    """How a site splits its patients: the hash rule's seed and test fraction, and whether a schema split column
    (the site's own column in its ``clinical.csv``) decides instead."""

    seed: int
    test_fraction: float
    use_split_column: bool = True

    @classmethod
    def of_study(cls, study: StudyConfig) -> PatientSplit:
        """The study's own split (its ``seed`` and ``test-fraction``): the one a simulation's researcher chooses."""
        return cls(study.seed, study.test_fraction)

    def is_test(self, patient_id: str) -> bool:
        """True if the hash rule holds ``patient_id`` out."""
        return is_test_patient(patient_id, self.seed, self.test_fraction)


def is_test_patient(patient_id: str, seed: int, test_fraction: float) -> bool:
    """True if the patient is held out: the hash of (seed, id) mapped to [0, 1) falls below ``test_fraction``."""
    digest = hashlib.sha256(f"{seed}\x00{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction

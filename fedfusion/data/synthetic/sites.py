"""How synthetic hospitals differ: case mix, cohort size, H&E stain colour, omics batch effects, gene coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_PATIENTS_PER_SITE = (260, 190, 130)
"""Patients of the first sites of a default cohort; further sites get 40-120 drawn from the seed."""
HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29])
"""Reference optical-density direction of haematoxylin (Ruifrok & Johnston), per RGB channel."""
EOSIN_OD = np.array([0.07, 0.99, 0.11])
"""Reference optical-density direction of eosin."""


@dataclass(frozen=True)
class SiteProfile:
    """One synthetic hospital's population and equipment."""

    name: str
    num_patients: int
    subtype_probs: tuple[float, float, float]
    """Case mix over ``SUBTYPES`` (same order)."""
    age_mean: float
    hematoxylin_od: tuple[float, float, float]
    eosin_od: tuple[float, float, float]
    stain_intensity: float
    """Overall stain strength (scanner and protocol)."""
    batch_seed: int
    """Seeds the site's per-gene multiplicative batch effect."""
    missing_panel_genes: int
    """How many panel genes this site's RNA-seq pipeline does not report."""


def site_name(index: int) -> str:
    """``site-a``, ``site-b``, ... (``site-aa`` after ``site-z``)."""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return f"site-{letters}"


def draw_site_profiles(num_sites: int, patients_per_site: tuple[int, ...] | None,
                       rng: np.random.Generator) -> list[SiteProfile]:
    """Profiles of ``num_sites`` hospitals, all drawn from ``rng`` (deterministic given its seed)."""
    if patients_per_site is None:
        extra = tuple(int(n) for n in rng.integers(40, 121, max(0, num_sites - len(DEFAULT_PATIENTS_PER_SITE))))
        patients_per_site = (DEFAULT_PATIENTS_PER_SITE + extra)[:num_sites]
    profiles = []
    for index, n in enumerate(patients_per_site):
        profiles.append(SiteProfile(
            name=site_name(index),
            num_patients=int(n),
            subtype_probs=_triple(rng.dirichlet([3.0, 3.0, 3.0])),
            age_mean=float(rng.uniform(52.0, 68.0)),
            hematoxylin_od=_tint(HEMATOXYLIN_OD, rng),
            eosin_od=_tint(EOSIN_OD, rng),
            stain_intensity=float(rng.uniform(0.8, 1.2)),
            batch_seed=int(rng.integers(2**31)),
            missing_panel_genes=2 if index == 2 else 0,
        ))
    return profiles


def _tint(od: npt.NDArray[np.float64], rng: np.random.Generator) -> tuple[float, float, float]:
    """A site's version of a stain: the reference OD direction, shifted in hue and renormalised."""
    shifted = np.clip(od + rng.normal(0.0, 0.08, 3), 0.02, None)
    return _triple(shifted / np.linalg.norm(shifted))


def _triple(values: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """The three entries of ``values`` as Python floats."""
    first, second, third = (float(v) for v in values)
    return first, second, third

"""Which cohort a simulation runs on, and the rule that keeps it from writing into a user's folder.

``fedfusion simulate --cohort-dir DIR`` classifies ``DIR`` before anything is written (``plan_cohort``):

- a folder that does not exist, or is empty (or holds a synthetic generation that was interrupted): a synthetic
  cohort of ``--sites N`` sites (default 3) is generated there;
- a folder holding site data (sub-folders with a ``clinical.csv``, ``fedfusion.data.cohort_index.find_sites``):
  used as it is, every site in it (sorted by name) or the ``--sites a,b`` named; nothing is written into it but
  the documented feature cache (``<site>/.fedfusion-cache/``), which each site's data path keeps;
- anything else (a non-empty folder without site data): ``ConfigError`` naming the folder, nothing written.

``cohort.json`` is only the synthetic generator's extra (its parameters and the oracle file); a real cohort needs
none. A number of sites given for an existing cohort that holds another number is refused with the names to
choose from: a simulation never silently takes the first N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.cohort_index import (
    COHORT_INDEX_FILE,
    GENERATING_MARKER,
    SITE_DATA_FILE,
    CohortSite,
    cohort_oracle,
    find_sites,
)
from fedfusion.errors import ConfigError

DEFAULT_GENERATED_SITES = 3
"""Sites of a generated synthetic cohort when ``--sites`` gives no number."""


@dataclass(frozen=True)
class SiteChoice:
    """What ``--sites`` asked for: a number (sites to generate, or all of an existing cohort), names, or nothing."""

    count: int | None = None
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> SiteChoice:
        """``None`` -> nothing asked; ``"4"`` -> a number; ``"site-a,site-c"`` -> names (``ConfigError`` if odd)."""
        if text is None or not text.strip():
            return cls()
        if text.strip().isdigit():
            count = int(text)
            if count <= 0:
                raise ConfigError(f"--sites must be a positive number or site names, got '{text}'")
            return cls(count=count)
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"--sites names {duplicates} more than once")
        return cls(names=names)


@dataclass(frozen=True)
class CohortPlan:
    """A classified ``--cohort-dir``: generate a synthetic cohort there, or use the existing one's chosen sites."""

    root: Path
    generate: int | None
    """Sites to generate (a new, empty or interrupted folder); None for an existing cohort."""
    sites: tuple[CohortSite, ...] = ()
    """The chosen sites of an existing cohort (empty when generating)."""
    available: int = 0
    """How many sites the existing cohort holds."""


@dataclass(frozen=True)
class SimulationCohort:
    """The cohort a simulation runs on: its chosen sites and the oracle of a synthetic one."""

    root: Path
    sites: tuple[CohortSite, ...]
    oracle_path: Path | None


def plan_cohort(cohort_dir: Path, choice: SiteChoice) -> CohortPlan:
    """Classify ``cohort_dir`` and resolve ``choice`` against it, writing nothing (``ConfigError`` when refused)."""
    root = Path(cohort_dir).resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--cohort-dir {root} is a file, not a folder")
    interrupted = (root / GENERATING_MARKER).is_file() and not (root / COHORT_INDEX_FILE).is_file()
    if not root.exists() or interrupted or not any(root.iterdir()):
        if choice.names:
            raise ConfigError(f"--sites {','.join(choice.names)} names sites of an existing cohort, but {root} "
                              "holds none (a new or empty folder gets a synthetic cohort: give --sites a number)")
        return CohortPlan(root, generate=choice.count or DEFAULT_GENERATED_SITES)
    found = find_sites(root)
    if not found:
        raise ConfigError(f"--cohort-dir {root} is not empty and holds no site data (no sub-folder with a "
                          f"{SITE_DATA_FILE}); a synthetic cohort is generated only into a new or empty folder: "
                          "choose one, or the folder of an existing cohort. Nothing was written.")
    return CohortPlan(root, generate=None, sites=tuple(_chosen(root, found, choice)), available=len(found))


def _chosen(root: Path, found: list[CohortSite], choice: SiteChoice) -> list[CohortSite]:
    names = [site.name for site in found]
    if choice.names:
        unknown = [name for name in choice.names if name not in names]
        if unknown:
            raise ConfigError(f"cohort {root} has no site {unknown} (its sites: {', '.join(names)})")
        return [site for site in found if site.name in choice.names]
    if choice.count is not None and choice.count != len(found):
        example = ",".join(names[:choice.count]) if choice.count < len(found) else ",".join(names)
        raise ConfigError(f"cohort {root} has {len(found)} sites ({', '.join(names)}); --sites {choice.count} "
                          f"does not say which: name them, e.g. --sites {example}, or leave --sites out for all "
                          f"{len(found)}")
    return found


def open_cohort(plan: CohortPlan, *, seed: int, emit: Callable[[str], None]) -> SimulationCohort:
    """Generate the synthetic cohort a plan asks for (saying so), then the cohort with its chosen sites."""
    sites = plan.sites
    if plan.generate is not None:
        from fedfusion.data.synthetic import generate_cohort

        emit(f"generating a synthetic cohort of {plan.generate} sites in {plan.root} (a new or empty folder)")
        generate_cohort(plan.root, num_sites=plan.generate, seed=seed, progress=emit)
        sites = tuple(find_sites(plan.root))
        emit(f"using all {len(sites)} sites of the generated cohort: {', '.join(s.name for s in sites)}")
    elif len(sites) < plan.available:
        emit(f"using {len(sites)} of {plan.available} sites of {plan.root}: {', '.join(s.name for s in sites)}")
    else:
        emit(f"using all {len(sites)} sites of {plan.root}: {', '.join(s.name for s in sites)} "
             "(read only: nothing but the feature cache is written there)")
    return SimulationCohort(plan.root, sites, cohort_oracle(plan.root))

"""A site's radiology preprocessing, ahead of any study: the features of every volume in its manifest.

``fedfusion site prepare`` runs this after the slides when the study fuses radiology. For each distinct volume of
``manifest.csv`` (with its mask): the cache key (``volume_key``), then, unless the cache holds it, reading
(``volume_reader``), the features (``radiomics``, or the study's CNN ``volume_encoder``) and an atomic write
into the site's feature cache. A volume that cannot be used gets a failure entry naming the file and the problem,
so training says what was wrong with it;
without ``skip_bad`` the run stops at the first. Volumes are small, so they are read one at a time (SimpleITK's
filters use the machine's threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fedfusion.data.findings import Findings
from fedfusion.data.progress import progress_bar
from fedfusion.data.radiology.radiomics import normalised_region, volume_features
from fedfusion.data.radiology.volume_encoder import cnn_features, get_volume_encoder
from fedfusion.data.radiology.volume_key import volume_key
from fedfusion.data.radiology.volume_reader import read_mask, read_volume
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.tables.manifest import MANIFEST_FILE, ManifestEntry, parse_manifest
from fedfusion.devices import resolve_device
from fedfusion.errors import DataError, VolumeError
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import RADIOMICS, RadiologySpec

SKIPPED = "skipped with --skip-bad (patient kept without this volume)"
Featurizer = Callable[[sitk.Image, sitk.Image | None, str], npt.NDArray[np.float32]]
"""(read volume, its mask or None, the volume's name for messages) -> its unscaled features."""


@dataclass(frozen=True)
class VolumeFailure:
    """A volume that could not be prepared: its patient and the ``VolumeError`` message (naming the file)."""

    patient_id: str
    volume: Path
    message: str


@dataclass(frozen=True)
class VolumePrepareSummary:
    """What ``prepare_volume_features`` did for one site."""

    site: str
    cache_dir: Path
    volumes: int
    cached: int
    extracted: int
    failures: tuple[VolumeFailure, ...]
    skip_bad: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """True when training with this site's ``skip-bad`` setting finds every volume ready (or skipped)."""
        return self.skip_bad or not self.failures

    def describe(self) -> str:
        """One line: counts and time."""
        return (f"site {self.site}: {self.volumes} radiology volumes: {self.cached} already cached, "
                f"{self.extracted} extracted, {len(self.failures)} failed ({self.seconds:.1f} s)")

    def report(self) -> str:
        """The summary a site admin reads: counts, every failed volume, and the outcome."""
        lines = [self.describe()]
        if self.failures:
            lines.append("failed volumes:")
            lines += [f"  - patient {f.patient_id}: {f.message}" + (f": {SKIPPED}" if self.skip_bad else "")
                      for f in self.failures]
        ready = self.cached + self.extracted
        lines.append(f"OK: features of {ready} volumes ready in {self.cache_dir}" if self.ok else
                     f"FAILED: {len(self.failures)} volumes could not be prepared; fix them, or pass --skip-bad, "
                     "and run the command again")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the site admin; never sent anywhere)."""
        return {"site": self.site, "cache_dir": str(self.cache_dir), "ok": self.ok, "volumes": self.volumes,
                "cached": self.cached, "extracted": self.extracted, "failed": len(self.failures),
                "skip_bad": self.skip_bad, "seconds": round(self.seconds, 2),
                "failures": [{"patient_id": f.patient_id, "volume": str(f.volume), "message": f.message}
                             for f in self.failures]}


def prepare_volume_features(site_dir: Path, study: StudyConfig, *, cache_dir: Path | None = None,
                            skip_bad: bool = False, progress: Callable[[str], None] | None = None,
                            device: str = "auto", encoder_file: Path | None = None) -> VolumePrepareSummary:
    """Compute the features (radiomics, or the study's CNN encoder on ``device`` with the site's ``encoder_file``)
    of every volume of ``site_dir``'s manifest that the cache lacks; a bad encoder file fails before any work."""
    started = time.monotonic()
    site_dir = Path(site_dir)
    spec = study.spec.radiology
    if spec is None:
        raise DataError("the study declares no [radiology] section: there are no volumes to prepare")
    report = progress or (lambda _msg: None)
    owners = volume_owners(_manifest(site_dir, study))
    features_of = volume_featurizer(spec, device, encoder_file)
    cache_dir = Path(cache_dir) if cache_dir is not None else site_dir / CACHE_DIRNAME
    cache = FeatureCache(cache_dir)
    report(f"preparing radiology features of site {site_dir.name}: {len(owners)} volumes, cache {cache_dir}")
    cached = extracted = 0
    failures: list[VolumeFailure] = []
    with progress_bar(len(owners), "volumes", "volume") as bar:
        for (volume, mask), patient in owners.items():
            bar.update(1)
            key = volume_key(volume, mask, spec)
            if cache.tiles(key) is not None:
                cached += 1
                continue
            try:
                features = compute_volume(volume, mask, spec, features_of)
            except VolumeError as error:
                cache.store_failure(key, str(error))
                failures.append(VolumeFailure(patient, volume, str(error)))
                if skip_bad:
                    continue
                break
            cache.store(key, features.reshape(1, -1))
            extracted += 1
    return VolumePrepareSummary(site=site_dir.name, cache_dir=cache_dir, volumes=len(owners), cached=cached,
                                extracted=extracted, failures=tuple(failures), skip_bad=skip_bad,
                                seconds=time.monotonic() - started)


def volume_featurizer(spec: RadiologySpec, device: str = "cpu", encoder_file: Path | None = None) -> Featurizer:
    """The study's features of one read volume: radiomics, or its CNN encoder (``volume_encoder``) on ``device``."""
    if spec.encoder == RADIOMICS:
        return lambda image, mask, where: volume_features(image, mask, spec, where)
    encoder = get_volume_encoder(spec.encoder, str(resolve_device(device)), encoder_file)
    return lambda image, mask, where: cnn_features(encoder, image, mask, spec, where)


def compute_volume(volume: Path, mask: Path | None, spec: RadiologySpec,
                   features_of: Featurizer | None = None) -> npt.NDArray[np.float32]:
    """One volume's unscaled features from its files (``features_of``, default ``volume_featurizer(spec)``);
    ``VolumeError`` naming them."""
    image, label = _read(volume, mask, spec)
    return (features_of or volume_featurizer(spec))(image, label, f"volume {volume}")


def check_volume(volume: Path, mask: Path | None, spec: RadiologySpec) -> None:
    """Read a volume and its mask and take the study's crop, as ``compute_volume`` does: ``VolumeError`` naming the
    file when it cannot be used (every feature option fails only there)."""
    image, label = _read(volume, mask, spec)
    normalised_region(image, label, spec, f"volume {volume}")


def _read(volume: Path, mask: Path | None, spec: RadiologySpec) -> tuple[sitk.Image, sitk.Image | None]:
    image = read_volume(volume, spec.modality)
    return image, read_mask(mask, image, volume) if mask is not None else None


def volume_owners(entries: list[ManifestEntry]) -> dict[tuple[Path, Path | None], str]:
    """Every distinct (volume, mask) of the manifest, in manifest order, with the first patient naming it."""
    owners: dict[tuple[Path, Path | None], str] = {}
    for entry in entries:
        for volume, mask in zip(entry.volumes, entry.masks, strict=True):
            owners.setdefault((volume, mask), entry.patient_id)
    return owners


def _manifest(site_dir: Path, study: StudyConfig) -> list[ManifestEntry]:
    if not site_dir.is_dir():
        raise DataError(f"site {site_dir.name}: directory {site_dir} does not exist")
    findings = Findings()
    entries = parse_manifest(site_dir / MANIFEST_FILE, findings, study.spec)
    findings.raise_errors()
    return entries

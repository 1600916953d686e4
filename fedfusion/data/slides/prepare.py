"""A site's slide preprocessing, ahead of any study: tile features of every slide in its manifest, into its cache.

``fedfusion site prepare`` runs this once per site (and again after slides are added or the study's slide knobs
change); a training round only reads the cache (``prepared_features``) and refuses when features are missing.
For each slide of ``manifest.csv``: the cheap file checks, the cache key (content hash + encoder + tiling knobs),
then, unless the cache already holds it, tiling, stain normalisation and the encoder, in ``workers`` spawned
processes (one slide per task) on the CPU; on a GPU, one encoder in this process fed by ``workers`` spawned reader
processes (``device_extraction``). Each finished slide is written into the cache at once and
atomically, so a killed run leaves no partial entry and a rerun extracts only what is missing. A worker exits
when the preparing process dies, even by SIGKILL. Without ``skip_bad`` the run stops at the first unusable slide
(the slides already running finish and are kept); with it, every bad slide is reported and the rest proceed.
A failed slide gets a failure entry, so training says what was wrong with it rather than "not prepared". Each slide
is extracted under a time limit (``slide_seconds``, ``slide_limits.ReadBudget``), with progress lines on standard
error when it runs long; one past it is a failed slide.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedfusion.data.findings import Findings
from fedfusion.data.progress import progress_bar
from fedfusion.data.slides.device_extraction import encode_slides
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.slides.slide_features import extract_slide_features
from fedfusion.data.slides.slide_limits import ReadBudget
from fedfusion.data.slides.slide_reader import check_slide_file
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.tables.manifest import MANIFEST_FILE, ManifestEntry, parse_manifest
from fedfusion.devices import resolve_device
from fedfusion.errors import ConfigError, DataError, SlideError
from fedfusion.study.config import StudyConfig

PREPARE_COMMAND = "fedfusion site prepare"
SLIDE_STUDY_KEYS = ("encoder", "tile-size", "target-mpp", "max-background", "stain-normalization",
                    "allow-non-brightfield")
"""The study config keys that decide a slide's features (with the site's fallback mpp: the cache key)."""
LOCK_FILE = "prepare.lock"
PARENT_POLL_S = 1.0
"""How often a worker checks that the preparing process is still alive."""
SKIPPED = "skipped with --skip-bad (patient kept without this slide)"
SLIDE_SECONDS = 3600.0
"""Default time limit of one slide's extraction (tiling, reading and encoding its tiles)."""


@dataclass(frozen=True)
class SlideFailure:
    """A slide that could not be prepared: its patient and the ``SlideError`` message (naming the file)."""

    patient_id: str
    slide: Path
    message: str


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare_slide_features`` did for one site."""

    site: str
    cache_dir: Path
    slides: int
    """Distinct slides in the manifest."""
    tiles: int
    """Tiles of the slides whose features are in the cache now."""
    cached: int
    """Slides found in the cache (skipped)."""
    extracted: int
    failures: tuple[SlideFailure, ...]
    skip_bad: bool
    seconds: float
    device: str = ""
    workers: int = 1

    @property
    def not_attempted(self) -> int:
        """Slides left unprepared because the run stopped at a failure (0 with ``skip_bad``)."""
        return self.slides - self.cached - self.extracted - len(self.failures)

    @property
    def ok(self) -> bool:
        """True when training with this site's ``skip-bad`` setting finds every slide ready (or skipped)."""
        return self.skip_bad or not self.failures

    def describe(self) -> str:
        """One line: counts and time."""
        stopped = f", {self.not_attempted} not attempted (stopped at the first failure)" if self.not_attempted else ""
        return (f"site {self.site}: {self.slides} slides, {self.tiles} tiles: {self.cached} already cached, "
                f"{self.extracted} extracted, {len(self.failures)} failed{stopped} ({self.seconds:.1f} s)")

    def report(self) -> str:
        """The summary a site admin reads: counts, every failed slide, and the outcome."""
        lines = [self.describe()]
        if self.failures:
            lines.append("failed slides:")
            lines += [f"  - patient {f.patient_id}: {f.message}" + (f": {SKIPPED}" if self.skip_bad else "")
                      for f in self.failures]
        ready = self.cached + self.extracted
        if self.ok:
            lines.append(f"OK: features of {ready} slides ready in {self.cache_dir}")
        else:
            lines.append(f"FAILED: {len(self.failures)} slides could not be prepared; fix them, or pass --skip-bad "
                         "(training with skip-bad = true leaves them out), and run the command again: the "
                         f"{ready} slides ready are kept")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for the site admin; never sent anywhere)."""
        return {"site": self.site, "cache_dir": str(self.cache_dir), "ok": self.ok, "slides": self.slides,
                "tiles": self.tiles, "cached": self.cached, "extracted": self.extracted,
                "failed": len(self.failures), "not_attempted": self.not_attempted, "skip_bad": self.skip_bad,
                "seconds": round(self.seconds, 2), "device": self.device, "workers": self.workers,
                "failures": [{"patient_id": f.patient_id, "slide": str(f.slide), "message": f.message}
                             for f in self.failures]}


@dataclass(frozen=True)
class _SlideJob:
    path: Path
    key: str
    index: int


@dataclass
class _Tally:
    tiles: int = 0
    cached: int = 0
    extracted: int = 0
    failures: list[SlideFailure] = field(default_factory=list)


def prepare_slide_features(site_dir: Path, study: StudyConfig, *, cache_dir: Path | None = None,
                           device: str = "auto", workers: int = 1, fallback_mpp: float | None = None,
                           encoder_file: Path | None = None, skip_bad: bool = False,
                           progress: Callable[[str], None] | None = None,
                           slide_seconds: float | None = SLIDE_SECONDS) -> PrepareSummary:
    """Extract the tile features of every slide in ``site_dir``'s manifest that the cache lacks; return a summary.

    ``study`` gives the encoder and tiling knobs (``SLIDE_STUDY_KEYS``); ``cache_dir`` defaults to
    ``<site_dir>/.fedfusion-cache``, the only place written. ``workers`` > 1 extracts in that many spawned
    processes (a calling script needs the usual ``if __name__ == "__main__"`` guard); ``device`` is ``auto`` (the
    GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``. A slide that cannot be used is a ``SlideFailure`` in
    the summary; without ``skip_bad`` the first one stops the run. A manifest that cannot be read raises
    ``DataError``, a bad encoder file ``ConfigError``; ``progress`` receives a line as each phase starts.
    ``slide_seconds`` limits the time one slide's extraction may take (None: no limit); past it the slide fails.
    """
    started = time.monotonic()
    site_dir = Path(site_dir)
    report = progress or (lambda _msg: None)
    device = str(resolve_device(device))
    workers = max(1, workers)
    owners = slide_owners(_manifest(site_dir, study))
    cache_dir = Path(cache_dir) if cache_dir is not None else site_dir / CACHE_DIRNAME
    params = TilingParams.from_study(study)
    get_tile_encoder(study.encoder, "cpu", encoder_file)  # a missing or wrong encoder file fails before any work
    tally = _Tally()
    with _cache_lock(cache_dir):
        cache = FeatureCache(cache_dir)
        cache.remove_interrupted_writes()
        report(f"preparing slide features of site {site_dir.name}: {len(owners)} slides in its manifest, cache "
               f"{cache_dir}")
        jobs = _pending(owners, cache, study.encoder, params, fallback_mpp, skip_bad, tally)
        if jobs and (skip_bad or not tally.failures):
            report(f"extracting tile features of {len(jobs)} slides ({tally.cached} cached) on {device}, "
                   f"{min(workers, len(jobs))} processes")
            _extract_jobs(jobs, owners, cache, study.encoder, params, device, fallback_mpp, encoder_file, workers,
                          skip_bad, tally, slide_seconds)
    return PrepareSummary(site=site_dir.name, cache_dir=cache_dir, slides=len(owners), tiles=tally.tiles,
                          cached=tally.cached, extracted=tally.extracted, failures=tuple(tally.failures),
                          skip_bad=skip_bad, seconds=time.monotonic() - started, device=device,
                          workers=workers)


def slide_owners(entries: list[ManifestEntry]) -> dict[Path, str]:
    """Every distinct slide of the manifest, in manifest order, with the first patient naming it."""
    owners: dict[Path, str] = {}
    for entry in entries:
        for slide in entry.slides:
            owners.setdefault(slide, entry.patient_id)
    return owners


def prepare_command(site_dir: Path, study: StudyConfig, *, cache_dir: Path | None = None,
                    fallback_mpp: float | None = None, encoder_file: Path | None = None,
                    skip_bad: bool = False) -> str:
    """The ``fedfusion site prepare`` command line that prepares ``site_dir`` for these settings (shell-quoted).

    Names the cache folder when it is not the default, the site's fallback mpp and encoder file, ``--skip-bad``,
    and ``--set KEY=VALUE`` for each slide knob of ``study`` that differs from the default study's.
    """
    words = [*PREPARE_COMMAND.split(), str(site_dir)]
    default_cache = Path(site_dir) / CACHE_DIRNAME
    if cache_dir is not None and Path(cache_dir).resolve() != default_cache.resolve():
        words += ["--cache-dir", str(cache_dir)]
    knobs, defaults = study.to_run_config(), StudyConfig().to_run_config()
    for key in SLIDE_STUDY_KEYS:
        if knobs[key] != defaults[key]:
            words += ["--set", f"{key}={knobs[key]}"]
    if fallback_mpp is not None:
        words += ["--fallback-mpp", str(fallback_mpp)]
    if encoder_file is not None:
        words += ["--encoder-file", str(encoder_file)]
    if skip_bad:
        words.append("--skip-bad")
    return shlex.join(words)


def _manifest(site_dir: Path, study: StudyConfig) -> list[ManifestEntry]:
    """The manifest's entries; none when the study fuses no slides and the site has no manifest."""
    if not site_dir.is_dir():
        raise DataError(f"site {site_dir.name}: directory {site_dir} does not exist")
    if "wsi" not in study.modality_set and not (site_dir / MANIFEST_FILE).is_file():
        return []
    findings = Findings()
    entries = parse_manifest(site_dir / MANIFEST_FILE, findings, study.spec)
    findings.raise_errors()
    return entries


@contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the cache's lock: one preparing process per cache (the kernel releases it if the process dies)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(f"feature cache {cache_dir}: another `{PREPARE_COMMAND}` is writing to it; wait for "
                              "it to finish") from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pending(owners: dict[Path, str], cache: FeatureCache, encoder: str, params: TilingParams,
             fallback_mpp: float | None, skip_bad: bool, tally: _Tally) -> list[_SlideJob]:
    """The slides the cache lacks (counting the cached ones); stops at the first bad file unless ``skip_bad``."""
    jobs: list[_SlideJob] = []
    with progress_bar(len(owners), "cache", "slide") as bar:
        for path, patient in owners.items():
            bar.update(1)
            try:
                check_slide_file(path)
            except SlideError as error:
                tally.failures.append(SlideFailure(patient, path, str(error)))
                if skip_bad:
                    continue
                break
            key = cache.key(path, encoder, params, fallback_mpp)
            tiles = cache.tiles(key)
            if tiles is None:
                jobs.append(_SlideJob(path, key, len(jobs)))
            else:
                tally.cached += 1
                tally.tiles += tiles
    return jobs


def _extract_jobs(jobs: list[_SlideJob], owners: dict[Path, str], cache: FeatureCache, encoder: str,
                  params: TilingParams, device: str, fallback_mpp: float | None, encoder_file: Path | None,
                  workers: int, skip_bad: bool, tally: _Tally, slide_seconds: float | None) -> None:
    """Extract and store each job as it finishes; without ``skip_bad`` stop at the first failure."""
    with progress_bar(len(jobs), "slides", "slide") as bar:

        def done(job: _SlideJob, result: npt.NDArray[np.float32] | SlideError) -> bool:
            bar.update(1)
            if isinstance(result, SlideError):
                cache.store_failure(job.key, str(result))
                tally.failures.append(SlideFailure(owners[job.path], job.path, str(result)))
                return skip_bad
            cache.store(job.key, result)
            tally.extracted += 1
            tally.tiles += len(result)
            return True

        if device.startswith("cuda"):  # one encoder on the GPU, reading in worker processes
            encode_slides([job.path for job in jobs], params, encoder, device, readers=min(workers, len(jobs)),
                          done=lambda index, result: done(jobs[index], result), fallback_mpp=fallback_mpp,
                          encoder_file=encoder_file, slide_seconds=slide_seconds, reader_setup=_exit_with_parent,
                          setup_args=(os.getpid(),))
            return
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                if not done(job, _extract_one(job.path, params, encoder, device, fallback_mpp, encoder_file, 1,
                                              slide_seconds)):
                    return
            return
        _extract_in_pool(jobs, params, encoder, device, fallback_mpp, encoder_file, min(workers, len(jobs)), done,
                         slide_seconds)


def _extract_in_pool(jobs: list[_SlideJob], params: TilingParams, encoder: str, device: str,
                     fallback_mpp: float | None, encoder_file: Path | None, workers: int,
                     done: Callable[[_SlideJob, npt.NDArray[np.float32] | SlideError], bool],
                     slide_seconds: float | None) -> None:
    """Run the jobs in ``workers`` spawned processes, handing each result to ``done`` as it finishes.

    When ``done`` returns False the jobs not started are cancelled; those running finish and are still handed on.
    """
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        futures: dict[Future[npt.NDArray[np.float32] | SlideError], _SlideJob] = {
            pool.submit(_extract_one, job.path, params, encoder, device, fallback_mpp, encoder_file,
                        1 + job.index % workers, slide_seconds): job
            for job in jobs}
        stopping = False
        for future in as_completed(futures):
            if future.cancelled():
                continue
            job = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                raise DataError(f"slide {job.path}: a worker process died while extracting it (out of memory?); "
                                "run the command again: the slides finished so far are kept") from exc
            if not done(job, result) and not stopping:
                stopping = True
                for pending in futures:
                    pending.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _extract_one(path: Path, params: TilingParams, encoder: str, device: str, fallback_mpp: float | None,
                 encoder_file: Path | None, bar_position: int,
                 slide_seconds: float | None) -> npt.NDArray[np.float32] | SlideError:
    """One slide's features, or its ``SlideError`` (returned, so that a worker hands it back like a result)."""
    try:
        return extract_slide_features(path, params, encoder, device, fallback_mpp, encoder_file, bar_position,
                                      ReadBudget(path, slide_seconds))
    except SlideError as error:
        return error


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the preparing process is gone (even killed by SIGKILL)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()

"""Resource limits of slide reading: a plausible size for the file's bytes, and a per-slide time budget.

A slide file states its own pixel dimensions, and a few kilobytes of TIFF header can claim billions of pixels
(tiles with no data read as blank). Before OpenSlide reads anything, ``check_claimed_size`` refuses a slide whose
level 0 claims more than ``MAX_SIDE_PX`` pixels on a side, or (for a single-file TIFF-based slide: SVS, NDPI, SCN,
BIF, Philips and generic TIFF) more than ``MAX_PIXELS_PER_BYTE`` level-0 pixels per byte of the file. A scan of
nothing but blank glass, JPEG-compressed, is about 40 pixels per byte and tissue 3-10, so the rule leaves a
25-fold margin. Multi-file formats (MRXS, VMS, DICOM) keep their pixels in other files: only the side limit
applies to them. ``ReadBudget`` then bounds the time one slide may take and reports progress on long reads.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from fedfusion.errors import SlideError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""Classic and BigTIFF byte-order marks; most slide formats (SVS, NDPI, SCN, generic TIFF) are TIFF inside."""
MAX_SIDE_PX = 1 << 20
"""Longest level-0 side believed (1,048,576 px): over 3x a whole 75 mm glass slide at 0.25 um/px."""
MAX_PIXELS_PER_BYTE = 1000
"""Most level-0 pixels a single-file TIFF-based slide may claim per byte of its file (blank glass is about 40)."""
HEADER_PAGES = 16
"""TIFF directories examined before OpenSlide opens the file (OpenSlide's own level 0 is checked again after)."""
PROGRESS_EVERY_S = 10.0
"""Seconds between progress lines of a long slide read."""


def has_tiff_header(path: Path) -> bool:
    """True when ``path`` starts with a TIFF byte-order mark."""
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGIC


def check_header_size(path: Path) -> None:
    """Apply ``check_claimed_size`` to the largest image a TIFF-based file's header claims, before OpenSlide opens it.

    A header whose image data runs past the end of the file is a truncated file (``SlideError`` saying so). Reads
    only the first ``HEADER_PAGES`` directories; a file that is not TIFF, or whose header cannot be parsed,
    is left to OpenSlide (which names what is wrong) and to the check after opening; tifffile's own warnings about
    it are not shown (OpenSlide's error is the one that names the problem).
    """
    if not has_tiff_header(path):
        return
    tifffile_log = logging.getLogger("tifffile")
    was_disabled, tifffile_log.disabled = tifffile_log.disabled, True
    try:
        with tifffile.TiffFile(path) as tif:
            pages = [page for page in tif.pages[:HEADER_PAGES] if isinstance(page, tifffile.TiffPage)]
            sizes = [(page.imagewidth, page.imagelength) for page in pages]
            data_end = max((int(np.max(np.asarray(page.dataoffsets, dtype=np.uint64)
                                       + np.asarray(page.databytecounts, dtype=np.uint64)))
                            for page in pages if len(page.dataoffsets)), default=0)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, TypeError):
        return
    finally:
        tifffile_log.disabled = was_disabled
    file_size = path.stat().st_size
    if data_end > file_size:
        raise SlideError(f"slide {path}: file is truncated or corrupt (it starts like a TIFF, but its image data runs "
                         f"to byte {data_end} and the file has {file_size} bytes)")
    if sizes:
        check_claimed_size(path, *max(sizes, key=lambda size: size[0] * size[1]))


def check_claimed_size(path: Path, width: int, height: int) -> None:
    """Raise ``SlideError`` naming ``path`` when ``width`` x ``height`` level-0 pixels are not plausible for it.

    The limits: ``MAX_SIDE_PX`` on each side; ``MAX_PIXELS_PER_BYTE`` level-0 pixels per file byte for a
    TIFF-based file (its pixels are all in that one file).
    """
    if max(width, height) > MAX_SIDE_PX:
        raise SlideError(f"slide {path}: claims {width} x {height} px, more than the {MAX_SIDE_PX} px a side that "
                         "any scanned glass slide has (refused before reading)")
    size = path.stat().st_size
    if has_tiff_header(path) and width * height > MAX_PIXELS_PER_BYTE * size:
        raise SlideError(f"slide {path}: claims {width} x {height} px in a {size} byte file, "
                         f"{width * height / size:.0f} px per byte; more than {MAX_PIXELS_PER_BYTE} px per byte is "
                         "implausible (blank glass is about 40): the header claims pixels the file cannot hold, so it "
                         "is refused before reading")


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class ReadBudget:
    """The time one slide may take (``seconds``; None: no limit), with a progress line every ``PROGRESS_EVERY_S``.

    Callers ``tick`` before each bounded read (a thumbnail band, a tile); past the budget ``tick`` raises
    ``SlideError`` naming the slide and the limit. The clock starts when the budget is made.
    """

    path: Path
    seconds: float | None
    report: Callable[[str], None] = _stderr_line
    """Where progress lines go (default: standard error, also from a worker process)."""
    started: float = field(default_factory=time.monotonic)
    _reported: float = field(default=0.0, init=False)

    def tick(self, step: str, done: int, total: int) -> None:
        """Check the budget before reading part ``done`` of ``total`` of ``step``; report progress when due."""
        elapsed = time.monotonic() - self.started
        if self.seconds is not None and elapsed > self.seconds:
            raise SlideError(f"slide {self.path}: still reading after {elapsed:.0f} s ({step}: {done} of {total} "
                             f"done), over the per-slide time limit of {self.seconds:g} s (raise "
                             "--slide-time-limit if the slide is genuine)")
        if elapsed - self._reported >= PROGRESS_EVERY_S:
            self._reported = elapsed
            self.report(f"slide {self.path}: {step}: {done} of {total} done after {elapsed:.0f} s")

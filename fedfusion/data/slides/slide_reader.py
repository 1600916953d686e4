"""Opening whole-slide images with OpenSlide, with failures turned into ``SlideError`` naming the file.

Any format OpenSlide reads works (Aperio SVS, generic tiled TIFF, NDPI, MRXS, ...). Pixel reads go through
``read_rgb`` so that a slide whose header opens but whose tile data is truncated or corrupt also fails with a
clear message instead of an OpenSlide traceback. Before reading, a slide's claimed size is checked against its file
(``slide_limits``): a small file claiming billions of pixels is refused at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openslide

from fedfusion.data.slides.slide_limits import check_claimed_size, check_header_size, has_tiff_header
from fedfusion.errors import SlideError

MPP_PROPERTIES = (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)
PROBE_PIXELS = 64
"""Side of the region ``probe_slide`` reads."""


@contextmanager
def open_slide(path: Path) -> Iterator[openslide.OpenSlide]:
    """Open ``path`` with OpenSlide; raise ``SlideError`` naming the file and the reason if it cannot be read.

    A slide whose claimed level-0 size is implausible for its file (``slide_limits.check_claimed_size``) is refused
    from its TIFF header before OpenSlide parses it, and from OpenSlide's level 0 after.
    """
    check_slide_file(path)
    check_header_size(path)
    try:
        slide = openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        if has_tiff_header(path):
            raise SlideError(f"slide {path}: file is truncated or corrupt (it starts like a TIFF, but OpenSlide "
                             f"cannot read it: {exc or 'unsupported format'})") from exc
        raise SlideError(f"slide {path}: not a slide OpenSlide can read ({exc or 'unsupported format'})") from exc
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise SlideError(f"slide {path}: file is truncated or corrupt ({exc})") from exc
    try:
        check_claimed_size(path, *slide.dimensions)
        yield slide
    finally:
        slide.close()


def check_slide_file(path: Path) -> None:
    """Raise ``SlideError`` naming ``path`` unless it is a non-empty regular file this process may read."""
    if not path.exists():
        raise SlideError(f"slide {path}: file does not exist")
    if not path.is_file():
        raise SlideError(f"slide {path}: not a regular file (a directory or device)")
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except PermissionError as exc:
        raise SlideError(f"slide {path}: file cannot be read (permission denied)") from exc
    except OSError as exc:
        raise SlideError(f"slide {path}: file cannot be read ({exc.strerror or exc})") from exc
    if empty:
        raise SlideError(f"slide {path}: file is empty (0 bytes)")


def slide_mpp(slide: openslide.OpenSlide, path: Path, fallback_mpp: float | None = None) -> float:
    """Microns per pixel at level 0 (mean of x and y).

    Without ``openslide.mpp-x``/``mpp-y`` metadata this raises ``SlideError`` unless the caller passes an explicit
    ``fallback_mpp``: a resolution is never guessed.
    """
    values: list[float] = []
    for name in MPP_PROPERTIES:
        raw = slide.properties.get(name)
        if raw is None:
            continue
        try:
            values.append(float(raw))
        except ValueError as exc:
            raise SlideError(f"slide {path}: property {name}={raw!r} is not a number") from exc
    if values:
        mpp = sum(values) / len(values)
        if not mpp > 0:
            raise SlideError(f"slide {path}: microns per pixel must be > 0, the file says {mpp}")
        return mpp
    if fallback_mpp is None:
        raise SlideError(
            f"slide {path}: no microns-per-pixel metadata ({', '.join(MPP_PROPERTIES)} absent); "
            "pass an explicit fallback mpp if you know the scan resolution"
        )
    if not fallback_mpp > 0:
        raise SlideError(f"slide {path}: fallback mpp must be > 0, got {fallback_mpp}")
    return float(fallback_mpp)


def read_rgb(slide: openslide.OpenSlide, path: Path, location: tuple[int, int], level: int,
             size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Read a region as ``[h, w, 3]`` uint8 RGB, transparent (outside-scan) pixels made white.

    ``location`` is in level-0 pixels, ``size`` in pixels of ``level`` (OpenSlide's convention). A region without
    transparent pixels (the usual case inside the scan) is returned as a read-only view of OpenSlide's buffer,
    without a copy.
    """
    try:
        region = slide.read_region(location, level, size)
    except (openslide.OpenSlideError, OSError, ValueError) as exc:
        raise SlideError(f"slide {path}: file is truncated or corrupt (reading level {level} at {location}: {exc})"
                         ) from exc
    rgba: npt.NDArray[np.uint8] = np.asarray(region)
    transparent = rgba[..., 3] == 0
    if not transparent.any():
        return rgba[..., :3]
    rgb = rgba[..., :3].copy()
    rgb[transparent] = 255
    return rgb


def probe_slide(path: Path, fallback_mpp: float | None = None) -> float:
    """Open ``path``, read its resolution and one small region from the middle of level 0; return the mpp.

    A cheap readability check (no tiling, no features): raises ``SlideError`` naming the file when the slide
    cannot be opened, has no usable microns-per-pixel (and no ``fallback_mpp``), or its pixels cannot be read.
    """
    with open_slide(path) as slide:
        mpp = slide_mpp(slide, path, fallback_mpp)
        width, height = slide.dimensions
        size = (min(PROBE_PIXELS, width), min(PROBE_PIXELS, height))
        read_rgb(slide, path, ((width - size[0]) // 2, (height - size[1]) // 2), 0, size)
    return mpp

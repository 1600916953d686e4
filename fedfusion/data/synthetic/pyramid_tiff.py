"""Writing a pyramidal, tiled, JPEG-compressed TIFF that OpenSlide reads as a generic TIFF with known mpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

from fedfusion.atomic_io import atomic_write

TIFF_TILE_PX = 256
JPEG_QUALITY = 85


def write_pyramid_tiff(path: Path, rgb: npt.NDArray[np.uint8], mpp: float, levels: int) -> None:
    """Write ``rgb`` (level 0) and ``levels - 1`` halvings as one TIFF page per level, atomically.

    Microns per pixel go into the resolution tags (pixels per centimetre), which OpenSlide reports as
    ``openslide.mpp-x`` / ``openslide.mpp-y``.
    """
    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp) as tif:
            image = rgb
            for level in range(levels):
                pixels_per_cm = 1e4 / (mpp * 2**level)
                tif.write(image, tile=(TIFF_TILE_PX, TIFF_TILE_PX), photometric="rgb", compression="jpeg",
                          compressionargs={"level": JPEG_QUALITY}, resolution=(pixels_per_cm, pixels_per_cm),
                          resolutionunit="CENTIMETER", subfiletype=1 if level else 0, metadata=None)
                image = np.asarray(Image.fromarray(image).reduce(2)) if level + 1 < levels else image

    atomic_write(path, write)

"""Synthetic H&E histology: tissue blobs on white glass, with low- and high-grade nuclear texture.

Low-grade tissue has sparse, small, pale nuclei; high-grade tissue has crowded, large, dark nuclei. The tissue is
divided into 128 px cells and each cell is high grade with probability ``image_score``, so the patient's grade is
visible as the fraction of high-grade tiles. Colour comes from Beer-Lambert mixing of the site's haematoxylin and
eosin optical-density vectors, so every site has its own stain hue and intensity.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from fedfusion.data.synthetic.sites import SiteProfile

GRADE_CELL_PX = 128
LOW_GRADE = {"radius": 4.0, "px_per_nucleus": 700.0, "darkness": 0.9}
HIGH_GRADE = {"radius": 8.0, "px_per_nucleus": 420.0, "darkness": 1.6}
COMPOSE_BAND_ROWS = 64


def render_slide(size: int, image_score: float, profile: SiteProfile,
                 rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """A ``[size, size, 3]`` uint8 RGB H&E image at level 0."""
    tissue = _tissue(size, rng)
    solid = tissue > 0.5
    cells = -(-size // GRADE_CELL_PX)
    high = np.kron(rng.random((cells, cells)) < image_score, np.ones((GRADE_CELL_PX, GRADE_CELL_PX), dtype=bool))
    high = high[:size, :size]
    nuclei = np.zeros((size, size), dtype=np.float32)
    for is_high, kind in ((False, LOW_GRADE), (True, HIGH_GRADE)):
        _stamp_nuclei(nuclei, solid & (high == is_high), kind, rng)
    fibres = _smooth_noise(size, size // 48, rng)
    return _compose_stains(tissue, nuclei, fibres, profile, rng)


def _compose_stains(tissue: npt.NDArray[np.float32], nuclei: npt.NDArray[np.float32],
                    fibres: npt.NDArray[np.float32], profile: SiteProfile,
                    rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Beer-Lambert RGB from stain amounts, band by band (small temporaries avoid page-fault-bound full-size ones)."""
    size = tissue.shape[0]
    hematoxylin_od = profile.stain_intensity * np.asarray(profile.hematoxylin_od, np.float32)
    eosin_od = profile.stain_intensity * np.asarray(profile.eosin_od, np.float32)
    out = np.empty((size, size, 3), dtype=np.uint8)
    for top in range(0, size, COMPOSE_BAND_ROWS):
        rows = slice(top, top + COMPOSE_BAND_ROWS)
        hematoxylin = nuclei[rows] + 0.08 * tissue[rows]
        eosin = tissue[rows] * (0.45 + 0.2 * fibres[rows]) * (1.0 - 0.6 * (nuclei[rows] > 0))
        rgb = np.exp(-(hematoxylin[..., None] * hematoxylin_od + eosin[..., None] * eosin_od))
        rgb *= 250.0
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * 3.0
        np.clip(rgb, 0, 255, out=rgb)
        out[rows] = rgb
    return out


def _tissue(size: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Soft tissue mask in [0, 1]: one to three irregular blobs, background elsewhere."""
    low = max(8, size // 32)
    yy, xx = np.mgrid[0:low, 0:low] / low
    field = np.zeros((low, low))
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        sy, sx = rng.uniform(0.16, 0.28, 2)
        field += np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    field += rng.normal(0.0, 0.12, field.shape)
    up = np.asarray(Image.fromarray(field.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR))
    return np.clip((up - 0.45) * 8.0 + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Smooth noise in about [-1, 1], varying over ``size / cells`` pixels."""
    low = rng.uniform(-1.0, 1.0, (max(2, cells), max(2, cells))).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC))


def _stamp_nuclei(canvas: npt.NDArray[np.float32], where: npt.NDArray[np.bool_], kind: dict[str, float],
                  rng: np.random.Generator) -> None:
    """Draw elliptical nuclei of one kind at random positions inside ``where`` (in place)."""
    size = canvas.shape[0]
    count = rng.poisson(size * size / kind["px_per_nucleus"])
    ys, xs = rng.integers(0, size, count), rng.integers(0, size, count)
    inside = where[ys, xs]
    ys, xs = ys[inside], xs[inside]
    if ys.size == 0:
        return
    r = kind["radius"]
    span = int(np.ceil(r * 1.3))
    dy, dx = np.mgrid[-span:span + 1, -span:span + 1]
    darkness = kind["darkness"] * rng.uniform(0.8, 1.2, ys.size).astype(np.float32)
    for angle in range(4):  # four orientations of an ellipse with axes 1.3 r and 0.8 r
        pick = rng.integers(0, 4, ys.size) == angle
        theta = angle * np.pi / 4
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside_disc = (u / (1.3 * r)) ** 2 + (v / (0.8 * r)) ** 2 <= 1.0
        oy, ox = dy[inside_disc], dx[inside_disc]
        py = np.clip(ys[pick, None] + oy[None, :], 0, size - 1)
        px = np.clip(xs[pick, None] + ox[None, :], 0, size - 1)
        canvas[py, px] = np.broadcast_to(darkness[pick, None], py.shape)

"""Reading overlapped with encoding: the same features as the sequential path, errors and early stops handled."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedfusion.data.slides.prefetch import prefetched
from fedfusion.data.slides.slide_features import ENCODE_BATCH, extract_slide_features, slide_tiles
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams, batched, plan_tiles
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.errors import SlideError


@pytest.mark.parametrize("stain", ["none", "reinhard"])
def test_overlapped_extraction_equals_sequential_read_then_encode(tmp_path: Path, stain: str) -> None:
    profile = draw_site_profiles(1, (1,), np.random.default_rng(0))[0]
    path = tmp_path / "slide.tiff"
    write_pyramid_tiff(path, render_slide(768, 0.5, profile, np.random.default_rng(1)), 0.5, 2)
    params = TilingParams(tile_size=64, target_mpp=1.0, max_background=0.8, stain_normalization=stain)
    encoder = get_tile_encoder("random-conv-v1")
    plan = plan_tiles(path, params)
    sequential = np.concatenate([encoder.encode(batch) for batch in batched(slide_tiles(plan), ENCODE_BATCH)])
    assert len(plan.coords) > 2 * ENCODE_BATCH  # several batches, so the reader runs ahead
    np.testing.assert_array_equal(extract_slide_features(path, params, "random-conv-v1"), sequential)


def test_reader_error_reaches_the_consumer_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise SlideError("slide x.tiff: file is truncated or corrupt")

    got: list[int] = []
    with pytest.raises(SlideError, match=r"x\.tiff: file is truncated"):
        got.extend(prefetched(items()))
    assert got == [1, 2]


def test_reader_stays_bounded_and_stops_when_the_consumer_stops() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(produced) <= 4  # one taken, two queued, one waiting to be put
    stream.close()
    assert not any(t.name == "tile-reader" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 4

"""The GPU extraction pipeline (reader processes feeding one encoder), run here with the encoder on the CPU."""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedfusion.data.slides.device_extraction import SlideResult, encode_slides
from fedfusion.data.slides.slide_features import ENCODE_BATCH, extract_slide_features
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.errors import DataError, SlideError

PARAMS = TilingParams(tile_size=64, target_mpp=1.0, max_background=0.8, stain_normalization="reinhard")
BATCH = 12
"""Tiles per batch here (the GPU's default is larger than these slides)."""


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tissue slides of different sizes and a blank one (no tissue: a ``SlideError``) in the middle."""
    folder = tmp_path_factory.mktemp("device-slides")
    profile = draw_site_profiles(1, (3,), np.random.default_rng(0))[0]
    paths = []
    for i, size in enumerate((1024, 512, 768)):
        paths.append(folder / f"slide-{i}.tiff")
        write_pyramid_tiff(paths[-1], render_slide(size, i / 2, profile, np.random.default_rng(i)), 0.5, 2)
    blank = folder / "blank.tiff"
    write_pyramid_tiff(blank, np.full((512, 512, 3), 245, dtype=np.uint8), 0.5, 2)
    return [paths[0], blank, *paths[1:]]


def test_reader_processes_give_the_features_of_the_cpu_path(slides: list[Path]) -> None:
    results: dict[int, SlideResult] = {}

    def done(index: int, result: SlideResult) -> bool:
        results[index] = result
        return True

    encode_slides(slides, PARAMS, "random-conv-v1", "cpu", readers=2, done=done, batch=BATCH)
    assert sorted(results) == [0, 1, 2, 3]
    failure = results.pop(1)
    assert isinstance(failure, SlideError) and "blank.tiff" in str(failure)
    for index, features in results.items():
        expected = extract_slide_features(slides[index], PARAMS, "random-conv-v1")
        assert isinstance(features, np.ndarray) and features.dtype == np.float32
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert len(results[0]) > 2 * BATCH != ENCODE_BATCH  # several batches of one slide, in order
    assert not multiprocessing.active_children()


def test_a_reader_that_dies_is_an_error_not_a_hang(slides: list[Path]) -> None:
    with pytest.raises(DataError, match=r"tile reader process died \(exit code 3"):
        encode_slides(slides, PARAMS, "random-conv-v1", "cpu", readers=1, done=lambda _i, _r: True,
                      reader_setup=os._exit, setup_args=(3,))
    assert not multiprocessing.active_children()


def test_a_stop_with_many_slides_left_lets_the_process_exit(slides: list[Path], tmp_path: Path) -> None:
    """The first slide handed on stops the run; the jobs no reader took (more than a pipe holds) must not keep the
    preparing process from exiting."""
    script = tmp_path / "stop_early.py"
    script.write_text(
        "from pathlib import Path\n"
        "from fedfusion.data.slides.device_extraction import encode_slides\n"
        "from fedfusion.data.slides.tiling import TilingParams\n"
        "if __name__ == '__main__':\n"
        f"    params = TilingParams(**{PARAMS.__dict__!r})\n"
        "    handed = []\n"
        f"    encode_slides([Path({str(slides[2])!r})] * 20000, params, 'random-conv-v1', 'cpu', readers=1,\n"
        "                  done=lambda index, _result: handed.append(index) is not None)\n"
        "    print(handed)\n", encoding="utf-8")
    checkout = str(Path(__file__).resolve().parents[3])
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": checkout}, timeout=120,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.split() == ["[0]"], done.stderr

"""Tile encoder determinism and the on-site feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.tile_encoder import ENCODERS, get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.errors import ConfigError

PARAMS = TilingParams(tile_size=256, target_mpp=0.5, max_background=0.6)


def _tiles(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)


def test_encoder_is_fixed_across_fresh_instances() -> None:
    tiles = _tiles(0)
    first = ENCODERS["random-conv-v1"]().encode(tiles)
    second = ENCODERS["random-conv-v1"]().encode(tiles)
    assert first.shape == (5, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(get_tile_encoder("random-conv-v1").encode(tiles[:2]), first[:2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])


def test_encoder_sees_colour_and_texture() -> None:
    encoder = get_tile_encoder("random-conv-v1")
    flat = np.full((1, 64, 64, 3), 180, dtype=np.uint8)
    pink = flat.copy()
    pink[..., 1] = 120
    dotted = flat.copy()
    dotted[:, ::8, ::8] = 60
    features = encoder.encode(np.concatenate([flat, pink, dotted]))
    assert np.abs(features[0] - features[1]).max() > 0.1
    assert np.abs(features[0] - features[2]).max() > 0.1


def test_unknown_encoder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown tile encoder 'resnet-imaginary'"):
        get_tile_encoder("resnet-imaginary")


def test_cache_key_tracks_content_and_knobs(tmp_path: Path) -> None:
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"slide bytes v1")
    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(slide, "random-conv-v1", PARAMS, None)
    assert key == cache.key(slide, "random-conv-v1", PARAMS, None)
    assert key != cache.key(slide, "random-conv-v1", TilingParams(256, 0.5, 0.5), None)
    assert key != cache.key(slide, "other-encoder", PARAMS, None)
    assert key != cache.key(slide, "random-conv-v1", PARAMS, 0.25)
    slide.write_bytes(b"slide bytes v2")
    assert key != cache.key(slide, "random-conv-v1", PARAMS, None)


def test_cache_store_load_and_corrupt_entry(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    assert cache.load("k") is None and cache.misses == 1
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.store("k", features)
    np.testing.assert_array_equal(cache.load("k"), features)
    assert cache.hits == 1
    (tmp_path / "cache" / "k.npy").write_bytes(b"\x93NUMPY garbage")
    assert cache.load("k") is None
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["k.npy"]
    assert not list((tmp_path / "cache").glob(f"*{TEMP_SUFFIX}"))

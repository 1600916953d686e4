"""SlideHashIndex: a slide is hashed once, and again only when its size or modification time changes."""

import hashlib
import os
from pathlib import Path

from fedfusion.data.slides.slide_hash_index import SlideHashIndex


def _slide(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "slides" / "p1.svs"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def test_hash_is_remembered_across_instances(tmp_path: Path) -> None:
    slide = _slide(tmp_path, b"slide bytes" * 1000)
    index_file = tmp_path / "cache" / "slide-hashes.json"
    first = SlideHashIndex(index_file)
    assert first.sha256(slide) == hashlib.sha256(slide.read_bytes()).hexdigest()
    assert first.computed == 1
    second = SlideHashIndex(index_file)  # a new run
    assert second.sha256(slide) == hashlib.sha256(slide.read_bytes()).hexdigest()
    assert second.computed == 0
    assert not [p for p in index_file.parent.iterdir() if p.name != index_file.name]  # no temp files left


def test_changed_size_or_mtime_is_hashed_again(tmp_path: Path) -> None:
    slide = _slide(tmp_path, b"a" * 100)
    index = SlideHashIndex(tmp_path / "index.json")
    old = index.sha256(slide)
    slide.write_bytes(b"b" * 101)
    assert index.sha256(slide) == hashlib.sha256(b"b" * 101).hexdigest() != old
    stat = slide.stat()
    os.utime(slide, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, re-hashed
    index.sha256(slide)
    assert index.computed == 3


def test_damaged_index_only_costs_a_rehash(tmp_path: Path) -> None:
    slide = _slide(tmp_path, b"x" * 10)
    index_file = tmp_path / "index.json"
    index_file.write_text("{not json")
    index = SlideHashIndex(index_file)
    assert index.sha256(slide) == hashlib.sha256(b"x" * 10).hexdigest()
    assert index.computed == 1
    assert SlideHashIndex(index_file).sha256(slide) == hashlib.sha256(b"x" * 10).hexdigest()

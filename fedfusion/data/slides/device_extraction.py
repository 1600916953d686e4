"""Slides encoded on a GPU: reader processes read and normalise tiles, the preparing process encodes them.

On a CPU, ``site prepare`` extracts whole slides in worker processes that each encode their own tiles
(``prepare.py``, ``slide_features.py``). On a CUDA device one process holds the encoder (one CUDA context, batches
of ``DEVICE_BATCH`` tiles) and ``readers`` spawned processes do the work a GPU cannot: each takes one slide at a
time (tile plan, OpenSlide reads, stain normalisation, under the slide's time budget) and puts its tiles, in grid
order, into a bounded queue in batches. The encoding process takes the batches as they come (a thread reads and
unpickles them ahead, ``prefetch``), copies each through pinned host memory to the device without blocking
(``TileEncoder.start_encoding``) and, while the device works, collects the features of the batch before; a
slide's features are handed on when its last batch is encoded. So reading, copying and encoding overlap, and
memory stays bounded (``QUEUED_BATCHES_PER_READER`` batches per reader waiting). The features are the CPU path's
within float tolerance: the same tiles, the same encoder, larger batches (tests/data/slides/test_device_extraction.py
runs this pipeline with the encoder on the CPU, tests/gpu/test_gpu_smoke.py on a GPU).
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedfusion.data.slides.prefetch import prefetched
from fedfusion.data.slides.slide_features import DEVICE_BATCH, slide_tiles
from fedfusion.data.slides.slide_limits import ReadBudget
from fedfusion.data.slides.tile_encoder import EncodingBatch, get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams, batched, plan_tiles, require_tissue
from fedfusion.errors import DataError, SlideError

QUEUED_BATCHES_PER_READER = 2
"""Batches each reader may have waiting for the encoder."""
POLL_S = 1.0
"""How often the encoder, waiting for a batch, checks that the readers are alive."""
PREFETCH_MESSAGES = 2
"""Batches taken from the queue (unpickled) ahead of the encoder, in a thread of the encoding process."""
_TILES, _DONE, _FAILED, _CRASHED = "tiles", "done", "failed", "crashed"
"""What a reader puts on the queue, with the slide's index: a batch, the slide's end, its ``SlideError`` message,
another error's type and message."""

SlideResult = npt.NDArray[np.float32] | SlideError


def encode_slides(slides: Sequence[Path], params: TilingParams, encoder_name: str, device: str, *,
                  readers: int, done: Callable[[int, SlideResult], bool], fallback_mpp: float | None = None,
                  encoder_file: Path | None = None, slide_seconds: float | None = None, batch: int = DEVICE_BATCH,
                  reader_setup: Callable[..., None] | None = None, setup_args: tuple[Any, ...] = ()) -> None:
    """Extract every slide's ``[num_tiles, feature_dim]`` features with the encoder on ``device`` and ``readers``
    reader processes; hand each result to ``done(index in slides, features or SlideError)`` as it finishes.

    When ``done`` returns False the readers are stopped and slides not finished are not handed on. A reader that
    dies is a ``DataError`` naming the slides being read; another error reading a slide is one naming the slide.
    Each reader first calls ``reader_setup(*setup_args)`` (``prepare`` ends them with it); ``batch``: tiles per
    batch.
    """
    encoder = get_tile_encoder(encoder_name, device, encoder_file)
    context = multiprocessing.get_context("spawn")
    todo: multiprocessing.Queue[tuple[int, Path] | None] = context.Queue()
    for job in enumerate(slides):
        todo.put(job)
    for _ in range(readers):
        todo.put(None)
    batches: multiprocessing.Queue[tuple[int, str, Any]] = context.Queue(maxsize=QUEUED_BATCHES_PER_READER * readers)
    processes = [context.Process(target=_read_slides, name=f"tile-reader-{i}", daemon=True,
                                 args=(todo, batches, params, fallback_mpp, slide_seconds, batch, reader_setup,
                                       setup_args))
                 for i in range(readers)]
    for process in processes:
        process.start()
    try:
        _encode_batches(slides, encoder.start_encoding, batches, processes, done)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        todo.cancel_join_thread()  # jobs no reader will take must not hold this process at exit
        todo.close()


def _encode_batches(slides: Sequence[Path], start_encoding: Callable[[npt.NDArray[np.uint8]], EncodingBatch],
                    batches: multiprocessing.Queue[tuple[int, str, Any]], processes: list[SpawnProcess],
                    done: Callable[[int, SlideResult], bool]) -> None:
    """Encode batches as they arrive, one in flight on the device while the next is taken (and unpickled, in a
    thread: ``prefetch``) from the queue."""
    parts: dict[int, list[npt.NDArray[np.float32]]] = {}
    in_flight: tuple[int, EncodingBatch] | None = None
    with closing(prefetched(_messages(slides, batches, processes), PREFETCH_MESSAGES)) as messages:
        for index, kind, payload in messages:
            slide_parts = parts.setdefault(index, [])
            if kind == _TILES:
                started = (index, start_encoding(payload))
                if in_flight is not None:
                    parts[in_flight[0]].append(in_flight[1].result())
                in_flight = started
                continue
            if in_flight is not None:
                parts[in_flight[0]].append(in_flight[1].result())
                in_flight = None
            del parts[index]
            if kind == _CRASHED:
                raise DataError(f"slide {slides[index]}: reading its tiles failed: {payload}")
            if not done(index, np.concatenate(slide_parts, axis=0) if kind == _DONE else SlideError(payload)):
                return


def _messages(slides: Sequence[Path], batches: multiprocessing.Queue[tuple[int, str, Any]],
              processes: list[SpawnProcess]) -> Iterator[tuple[int, str, Any]]:
    """The readers' messages until every slide has ended; ``DataError`` naming the slides being read when a reader
    died."""
    reading: set[int] = set()
    remaining = len(slides)
    while remaining:
        try:
            index, kind, payload = batches.get(timeout=POLL_S)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                names = ", ".join(str(slides[i]) for i in sorted(reading)) or "none yet"
                raise DataError(f"a tile reader process died (exit code {dead[0]}; out of memory?) while reading "
                                f"slides: {names}; run the command again: the slides finished so far are kept"
                                ) from None
            continue
        if kind == _TILES:
            reading.add(index)
        else:
            reading.discard(index)
            remaining -= 1
        yield index, kind, payload


def _read_slides(todo: multiprocessing.Queue[tuple[int, Path] | None],
                 batches: multiprocessing.Queue[tuple[int, str, Any]], params: TilingParams,
                 fallback_mpp: float | None, slide_seconds: float | None, batch_size: int,
                 setup: Callable[..., None] | None, setup_args: tuple[Any, ...]) -> None:
    """A reader process: slides from ``todo`` until ``None``, each one's tile batches then its end onto ``batches``."""
    if setup is not None:
        setup(*setup_args)
    while (job := todo.get()) is not None:
        index, path = job
        try:
            budget = ReadBudget(path, slide_seconds)
            plan = require_tissue(plan_tiles(path, params, fallback_mpp, budget))
            for batch in batched(slide_tiles(plan, budget), batch_size):
                batches.put((index, _TILES, batch))
            batches.put((index, _DONE, None))
        except SlideError as error:
            batches.put((index, _FAILED, str(error)))
        except Exception as error:  # handed to the encoding process, which names the slide
            batches.put((index, _CRASHED, f"{type(error).__name__}: {error}"))

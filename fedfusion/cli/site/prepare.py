"""``fedfusion site prepare DATA_DIR``: all of a site's slide preprocessing, before any study round.

Tiles every slide of the manifest at the study's resolution, normalises its stains and encodes the tiles, writing
each slide's features into the site's feature cache (``DATA_DIR/.fedfusion-cache`` or ``--cache-dir``; nothing
else is written). Slides already cached are skipped, so a run that was stopped continues where it was. The
study's slide knobs (encoder, tile size, target mpp, max background, stain normalisation) come from
``--study-config`` (the study's config as TOML: ``fedfusion study defaults`` output, or the study app's
``pyproject.toml``) and ``--set KEY=VALUE``; the defaults otherwise. When the study's schema (``--schema FILE``, or
the study config's) fuses radiology, every volume of the manifest gets its radiomics features too
(``fedfusion.data.radiology.prepare``; a CNN encoder's weights file from ``--volume-encoder-file``). The
summary is printed last. Exit code 1 when a slide or volume failed
without ``--skip-bad`` (a slide past ``--slide-time-limit`` fails), 2 for a configuration or data error, 130 after
Ctrl-C, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from fedfusion.cli.site.check import slide_time_limit
from fedfusion.cli.study_options import parse_key_value
from fedfusion.data.radiology.prepare import prepare_volume_features
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME
from fedfusion.data.slides.prepare import SLIDE_SECONDS, SLIDE_STUDY_KEYS, prepare_slide_features
from fedfusion.errors import ConfigError
from fedfusion.site.node_context import DEFAULT_DEVICE
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import load_schema

INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT, as shells report it)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare`` site command."""
    parser = subparsers.add_parser(
        "prepare", help="extract the tile features of every slide into the site's feature cache (before training)",
        description="Tile, stain-normalise and encode every slide named in DATA_DIR/manifest.csv with the study's "
                    "slide settings, and write each slide's features into the site's feature cache. Slides "
                    "already cached are skipped; a stopped run continues where it was. Training rounds only "
                    "read the cache: run this after `fedfusion site check` and before the study starts. Exit "
                    "code 1 if a slide failed (without --skip-bad).",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the site folder (holds manifest.csv)")
    parser.add_argument("--study-config", type=Path, default=None, metavar="FILE",
                        help="the study's config as TOML (`fedfusion study defaults` output, or the study app's "
                             "pyproject.toml); its slide keys (" + ", ".join(SLIDE_STUDY_KEYS) + ") decide the "
                             "features (default: the default study's)")
    parser.add_argument("--schema", type=Path, default=None, metavar="FILE",
                        help="the study schema (TOML); with a [radiology] section the radiology volumes are "
                             "prepared too (default: the study config's schema)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study config key, after --study-config; repeatable")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"the feature cache, as the site daemon's --cache-dir (default: DATA_DIR/{CACHE_DIRNAME})")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="slides extracted at once, each in its own process (default: the CPU count, "
                             "%(default)s)")
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help="torch device of the encoder: auto (the GPU when there is one), cpu, cuda, cuda:N "
                             "(default: %(default)s)")
    parser.add_argument("--fallback-mpp", type=float, default=None, metavar="X",
                        help="microns per pixel to assume for slides without resolution metadata (as the site "
                             "daemon's --fallback-mpp)")
    parser.add_argument("--encoder-file", type=Path, default=None, metavar="FILE",
                        help="this site's copy of a torchscript: or safetensors: study encoder")
    parser.add_argument("--volume-encoder-file", type=Path, default=None, metavar="FILE",
                        help="this site's copy of the weights of a [radiology] encoder = "
                             "\"safetensors:cnn3d:<sha256>\"")
    parser.add_argument("--skip-bad", action="store_true",
                        help="go on past unusable slides (each reported; training with skip-bad = true leaves "
                             "them out) instead of stopping at the first")
    parser.add_argument("--slide-time-limit", type=float, default=SLIDE_SECONDS, metavar="SECONDS",
                        help="most seconds one slide's extraction may take, 0 for no limit; a slide past it fails "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the site's slide features and print the summary; 1 if a slide failed without --skip-bad."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    study = study_from_options(args.study_config, args.overrides)
    slide_seconds = slide_time_limit(args.slide_time_limit)
    if args.schema is not None:
        study = study.replace(schema=load_schema(args.schema).to_json())
    progress_to = sys.stderr if args.json else sys.stdout  # with --json, stdout holds only the JSON
    try:
        summary = prepare_slide_features(args.data_dir, study, cache_dir=args.cache_dir, device=args.device,
                                         workers=args.workers, fallback_mpp=args.fallback_mpp,
                                         encoder_file=args.encoder_file, skip_bad=args.skip_bad,
                                         progress=lambda line: print(line, file=progress_to, flush=True),
                                         slide_seconds=slide_seconds)
    except KeyboardInterrupt:
        print("interrupted: the slides finished so far are kept; run the same command again to continue",
              file=sys.stderr)
        return INTERRUPTED
    if "radiology" not in study.modality_set:
        print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.report(), flush=True)
        return 0 if summary.ok else 1
    volumes = prepare_volume_features(args.data_dir, study, cache_dir=args.cache_dir, skip_bad=args.skip_bad,
                                      progress=lambda line: print(line, file=progress_to, flush=True),
                                      device=args.device, encoder_file=args.volume_encoder_file)
    print(json.dumps({**summary.to_dict(), "radiology": volumes.to_dict()}, indent=2) if args.json
          else f"{summary.report()}\n{volumes.report()}", flush=True)
    return 0 if summary.ok and volumes.ok else 1


def study_from_options(study_config: Path | None, overrides: list[str]) -> StudyConfig:
    """The study the options describe: defaults, then the ``--study-config`` file's keys, then ``--set`` values.

    Unknown keys are refused, naming them (and the file).
    """
    values: dict[str, Any] = dict(_study_file(study_config)) if study_config is not None else {}
    values.update(parse_key_value(item) for item in overrides)
    study = StudyConfig.from_run_config({**StudyConfig().to_run_config(), **values})
    if study.extra:
        source = f"study config {study_config} / --set" if study_config is not None else "--set"
        raise ConfigError(f"{source}: unknown study config keys {sorted(study.extra)} (`fedfusion study defaults` "
                          "lists them)")
    return study


def _study_file(path: Path) -> dict[str, Any]:
    """The study keys of a TOML file: its top-level keys, or a Flower app manifest's ``tool.flwr.app.config``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"study config {path}: file does not exist") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"study config {path}: not a readable TOML file ({exc})") from exc
    app_config: Any = raw
    for key in ("tool", "flwr", "app", "config"):
        app_config = app_config.get(key) if isinstance(app_config, dict) else None
    if isinstance(app_config, dict):
        return app_config
    if "tool" in raw or "project" in raw:
        raise ConfigError(f"study config {path}: a pyproject.toml without [tool.flwr.app.config]")
    return raw

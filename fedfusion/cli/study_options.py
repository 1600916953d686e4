"""The study options shared by every command that starts a study (``simulate``, ``study prepare``/``start``).

``--schema FILE`` gives the study schema (TOML, ``fedfusion.study.schema``); ``--dp-recipe NAME`` sets the keys of
a named DP recipe (``fedfusion.study.config.DP_RECIPES``); ``--set KEY=VALUE`` overrides any other study config key
(``fedfusion study defaults`` lists them with their defaults; ``fedfusion.study.config.StudyConfig`` documents them)
and ``--rounds N`` is short for ``--set num-server-rounds=N``. Unknown keys are refused, naming them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.errors import ConfigError
from fedfusion.study.config import DP_RECIPES, RUN_KEYS, StudyConfig
from fedfusion.study.schema import load_schema


def add_study_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--schema``, ``--dp-recipe``, ``--rounds`` and ``--set KEY=VALUE`` to ``parser``."""
    parser.add_argument("--schema", type=Path, default=None, metavar="FILE",
                        help="the study schema (TOML: covariates, tasks, omics panels, modalities; docs/SITE_DATA.md). "
                             "Default: the cohort's study.toml where there is one, else the synthetic cohort's")
    parser.add_argument("--dp-recipe", choices=tuple(DP_RECIPES), default="local",
                        help="local: each site runs DP-SGD on its own update (the study defaults); distributed: one "
                             "DP gradient step of the whole federation per round, noise added in shares inside "
                             "secure aggregation (20 rounds; docs/DP_RECIPE.md, trust assumption in "
                             "docs/THREAT_MODEL.md). --set and --rounds override its keys (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=None, help="federated rounds (default: study config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study config key (`fedfusion study defaults` lists them); repeatable")


def study_from_args(args: argparse.Namespace, *, default_schema: Path | None = None, **fixed: object) -> StudyConfig:
    """The study the options describe: defaults, then the ``--dp-recipe`` keys, then ``--set`` values, then
    ``--rounds`` and ``fixed`` keys; the schema from ``--schema``, else ``default_schema`` when given, else the
    built-in synthetic one. A ``fixed`` ``dp = false`` (``--no-dp``) drops the recipe: it has nothing to apply."""
    recipe = {} if fixed.get("dp") is False else DP_RECIPES[args.dp_recipe]
    overrides: dict[str, object] = {key.replace("_", "-"): value for key, value in recipe.items()}
    overrides.update(parse_key_value(item) for item in args.overrides)
    if "schema" in overrides:
        raise ConfigError("give the study schema as a file: --schema FILE (not --set schema=...)")
    schema_file = args.schema or default_schema
    if schema_file is not None:
        overrides["schema"] = load_schema(schema_file).to_json()
    if args.rounds is not None:
        overrides["num-server-rounds"] = args.rounds
    overrides.update(fixed)
    run_keys = sorted(RUN_KEYS & set(overrides))
    if run_keys:
        raise ConfigError(f"{run_keys} are not study config keys: the study's id, results folder and round timeout "
                          "are command options (--study-id, --results-dir, --round-timeout)")
    study = StudyConfig.from_run_config({**StudyConfig().to_run_config(), **overrides})
    if study.extra:
        raise ConfigError(f"unknown study config keys: {sorted(study.extra)} (`fedfusion study defaults` lists "
                          "the study's keys; the device and folders are command options)")
    return study


def parse_key_value(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``, stripped; ``ConfigError`` for anything else."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()

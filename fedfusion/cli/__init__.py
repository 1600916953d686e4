"""The ``fedfusion`` command.

    fedfusion synth      write a synthetic multi-hospital cohort (real slide, omics and clinical files)
    fedfusion simulate   run a federated study of several simulated sites on this machine
    fedfusion site ...   a site admin's commands: check data, show the privacy ledger and the egress record
    fedfusion provision  an operator's commands: consortium CA, coordinator certificate, site keys
    fedfusion coordinator run   the coordinator service (SuperLink on loopback + Fleet gateway)
    fedfusion study ...  prepare and submit a study to the running coordinator
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedfusion.cli.coordinator import register as register_coordinator
from fedfusion.cli.provision import register as register_provision
from fedfusion.cli.site import REGISTRARS as SITE_COMMANDS
from fedfusion.errors import ConfigError, FedfusionError

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedfusion`` command; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except FedfusionError as exc:
        print(f"fedfusion: error: {exc}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedfusion",
        description="Federated multimodal (histology + omics + clinical) survival learning across hospitals, "
                    "with patient-level differential privacy.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth", help="write a synthetic multi-hospital cohort",
        description="Write, per site, the files a hospital would have: pyramidal TIFF slides, an RNA-seq TPM "
                    "table, a clinical table and a cohort manifest, with a planted risk signal (image pattern "
                    "AND expression module AND age) and the oracle risk. Reuses an identical existing cohort.",
    )
    synth.add_argument("--out", type=Path, default=Path("cohorts/default"), help="cohort folder (default: %(default)s)")
    synth.add_argument("--sites", type=int, default=3, help="number of hospitals (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    synth.add_argument("--patients", type=_int_list, default=None,
                       help="patients per site, comma-separated (default: differing sizes per site)")
    synth.set_defaults(handler=_synth)

    simulate = commands.add_parser(
        "simulate", help="run a federated study of simulated sites on this machine",
        description="Generate (or reuse) a synthetic cohort, extract tile features per site, and train the "
                    "fusion model in Flower's simulation engine with patient-level DP-SGD at every site. "
                    "Writes metrics per round and site (CSV, JSON), a plot, the final model and the config.",
    )
    simulate.add_argument("--cohort-dir", type=Path, default=None,
                          help="cohort folder, generated when missing (default: cohorts/default)")
    simulate.add_argument("--sites", type=int, default=3, help="number of simulated sites (default: %(default)s)")
    simulate.add_argument("--rounds", type=int, default=None, help="federated rounds (default: study config)")
    simulate.add_argument("--results-dir", type=Path, default=None,
                          help="results folder (default: runs/<timestamp>); an interrupted study is resumed by "
                               "running the same command with the same folder")
    simulate.add_argument("--baselines", action="store_true",
                          help="also train centralized, single-modality and site-alone models and compare "
                               "them with the federated one on the same held-out patients")
    simulate.add_argument("--no-dp", action="store_true", help="train without differential privacy (comparison)")
    simulate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a study config key (see pyproject.toml [tool.flwr.app.config]); repeatable")
    simulate.add_argument("--verbose", action="store_true", help="show all of Flower's log, not only progress")
    simulate.set_defaults(handler=_simulate)

    site = commands.add_parser(
        "site", help="commands for a hospital's site admin",
        description="Inspect and run what happens at one hospital: its data, its privacy spend, what left it.",
    )
    site_commands = site.add_subparsers(title="site commands", required=True, metavar="SITE_COMMAND")
    for register in SITE_COMMANDS:  # one module per site command
        register(site_commands)
    register_provision(commands)
    register_coordinator(commands)
    return parser


def _synth(args: argparse.Namespace) -> int:
    from fedfusion.data.synthetic import generate_cohort

    path = generate_cohort(args.out, num_sites=args.sites, seed=args.seed, patients_per_site=args.patients,
                           progress=print)
    print(f"cohort ready: {path}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fedfusion.coordinator.progress_log import quiet_flower_console
    from fedfusion.simulation.local_study import simulate_study
    from fedfusion.study.config import StudyConfig

    if not args.verbose:
        quiet_flower_console()

    overrides: dict[str, object] = dict(_key_value(item) for item in args.overrides)
    if args.cohort_dir is not None:
        overrides["cohort-dir"] = str(args.cohort_dir)
    if args.rounds is not None:
        overrides["num-server-rounds"] = args.rounds
    if args.no_dp:
        overrides["dp"] = False
    study = StudyConfig.from_run_config({**StudyConfig().to_run_config(), **overrides})
    if study.extra:
        print(f"fedfusion: error: unknown study config keys: {sorted(study.extra)}", file=sys.stderr)
        return 2
    results_dir = args.results_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    simulate_study(study, num_sites=args.sites, results_dir=results_dir, with_baselines=args.baselines)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from exc


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()


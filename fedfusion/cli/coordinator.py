"""``fedfusion coordinator run`` and ``fedfusion study ...``: the operator's commands on the coordinator host.

    coordinator run   the SuperLink (loopback) and the Fleet gateway (network), in the foreground
    study prepare     write a study's Flower app and print its FAB hash, for the sites to approve
    study start       submit a (prepared) study to the running coordinator and follow it, or --resubmit one
    study feature-scaling   the study-fixed input scaling from a reference cohort (``cli/feature_scaling.py``)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tomli_w

from fedfusion.cli.feature_scaling import register as register_feature_scaling
from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.deployment.coordinator.fleet_gateway import (
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    MIB,
    GatewayLimits,
)
from fedfusion.deployment.coordinator.service import DEFAULT_SUPERLINK_PORT, CoordinatorOptions, run_coordinator
from fedfusion.deployment.coordinator.state import CoordinatorPaths
from fedfusion.deployment.coordinator.study import prepare_study, prepared_study, resubmission, run_study
from fedfusion.deployment.coordinator.study_state import FINISHED
from fedfusion.deployment.logging_setup import log_to_file
from fedfusion.errors import ConfigError
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.run_config import DEFAULT_ROUND_TIMEOUT_S, CoordinatorSettings
from fedfusion.study.schema import feature_scaling_file


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``coordinator`` and ``study`` commands."""
    coordinator = commands.add_parser("coordinator", help="run the coordinator (SuperLink + Fleet gateway)")
    actions = coordinator.add_subparsers(title="coordinator commands", required=True, metavar="COORDINATOR_COMMAND")
    run = actions.add_parser(
        "run", help="run the coordinator in the foreground (a service)",
        description="Start flower-superlink on 127.0.0.1 with TLS, SuperNode authentication and a database in "
                    "STATE_DIR; register the consortium's active site keys (again whenever registry.json "
                    "changes); serve only the Fleet API to the network through a TLS gateway with the "
                    "consortium certificate; resubmit the studies the last stop interrupted (they resume at the "
                    "round after their checkpoint). Stops cleanly on SIGTERM.",
    )
    run.add_argument("--consortium-dir", type=Path, required=True,
                     help="the consortium folder (registry.json, coordinator/ with the TLS key and certificate)")
    run.add_argument("--state-dir", type=Path, required=True, help="the coordinator's state folder")
    run.add_argument("--host", default="0.0.0.0", help="address the gateway listens on (default: %(default)s)")
    run.add_argument("--port", type=int, default=None, help="gateway port (default: the registry's port)")
    run.add_argument("--superlink-port", type=int, default=DEFAULT_SUPERLINK_PORT,
                     help="the SuperLink's loopback port (default: %(default)s)")
    run.add_argument("--max-request-mb", type=int, default=DEFAULT_MAX_BODY_MB,
                     help="largest request body the gateway forwards, in MiB; larger is refused with 413 before it "
                          "is read (default: %(default)s)")
    run.add_argument("--max-connections-per-client", type=int, default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                     help="connections one client address may hold open at the gateway; one more is answered 503 "
                          "(default: %(default)s)")
    run.add_argument("--no-resume", dest="resume_studies", action="store_false",
                     help="do not resubmit interrupted studies at start; only log them (resubmit with "
                          "`fedfusion study start --resubmit ID`)")
    run.set_defaults(handler=_run_coordinator)

    study = commands.add_parser("study", help="submit studies to the running coordinator")
    study_actions = study.add_subparsers(title="study commands", required=True, metavar="STUDY_COMMAND")
    prepare = study_actions.add_parser(
        "prepare", help="write a study's Flower app and print its FAB hash (sites approve it)",
        description="Write the study's Flower app under STATE_DIR/studies/ID and print its FAB SHA-256, which "
                    "the sites approve with `fedfusion site approve HASH`; `study start --study-id ID` submits it.")
    prepare.add_argument("--state-dir", type=Path, required=True, help="the coordinator's state folder")
    prepare.add_argument("--study-id", required=True, help="the study's id (letters, digits, . _ -)")
    add_study_options(prepare)
    _coordinator_settings_options(prepare)
    prepare.set_defaults(handler=_prepare)
    start = study_actions.add_parser(
        "start", help="submit a study and follow it until it ends",
        description="Submit the study prepared as ID (or prepare it now from the options), print its FAB hash, "
                    "submit it with `flwr run` over the loopback Control API and stream its log. Exit code 0 when "
                    "the results folder was written. --resubmit ID submits an interrupted or failed study again, "
                    "unchanged (the coordinator resubmits interrupted studies itself when it starts).",
    )
    start.add_argument("--state-dir", type=Path, required=True, help="the coordinator's state folder")
    start.add_argument("--study-id", default=None, help="a prepared or new study's id (letters, digits, . _ -)")
    start.add_argument("--resubmit", default=None, metavar="ID", help="submit an interrupted study again")
    add_study_options(start)
    _coordinator_settings_options(start)
    start.set_defaults(handler=_start)
    defaults = study_actions.add_parser(
        "defaults", help="print every study config key with its default (TOML), or the example schema",
        description="Print the study config keys that --set accepts, with their defaults, as TOML; with --schema "
                    "the synthetic cohort's study schema, the worked example to start a study's schema from.")
    defaults.add_argument("--schema", action="store_true", help="print the example study schema (study.toml)")
    defaults.set_defaults(handler=_defaults)
    register_feature_scaling(study_actions)


def _coordinator_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="the study's results folder at the coordinator (default: STATE_DIR/studies/ID/results)")
    parser.add_argument("--round-timeout", type=float, default=DEFAULT_ROUND_TIMEOUT_S,
                        help="seconds to wait for the sites' replies in each round phase (default: %(default)s)")


def _coordinator_settings(args: argparse.Namespace) -> CoordinatorSettings:
    return CoordinatorSettings(results_dir=str(args.results_dir.resolve()) if args.results_dir else "",
                               round_timeout=args.round_timeout)


def _defaults(args: argparse.Namespace) -> int:
    if args.schema:
        text = SYNTHETIC_SCHEMA_FILE.read_text(encoding="utf-8")
        scaling = feature_scaling_file(SYNTHETIC_SCHEMA_FILE)
        if scaling is not None:  # the printed copy lives elsewhere: it names the installed file by its full path
            text = text.replace(f'"{scaling.name}"', json.dumps(str(scaling)))
        print(text, end="")
        return 0
    keys = {k: v for k, v in StudyConfig().to_run_config().items() if k != "schema"}
    print(tomli_w.dumps(keys) + "# schema: a file given with --schema (`fedfusion study defaults --schema` prints "
          "the example)")
    return 0


def _run_coordinator(args: argparse.Namespace) -> int:
    log_to_file(args.state_dir / "logs" / "coordinator.log")
    return run_coordinator(CoordinatorOptions(consortium_dir=args.consortium_dir.resolve(),
                                              state_dir=args.state_dir.resolve(), host=args.host, port=args.port,
                                              superlink_port=args.superlink_port,
                                              resume_studies=args.resume_studies,
                                              gateway_limits=_gateway_limits(args)))


def _gateway_limits(args: argparse.Namespace) -> GatewayLimits:
    if args.max_request_mb < 1 or args.max_connections_per_client < 1:
        raise ConfigError(f"--max-request-mb ({args.max_request_mb}) and --max-connections-per-client "
                          f"({args.max_connections_per_client}) must be at least 1")
    return GatewayLimits(max_body_bytes=args.max_request_mb * MIB,
                         max_connections_per_client=args.max_connections_per_client)


def _prepare(args: argparse.Namespace) -> int:
    record = prepare_study(CoordinatorPaths(args.state_dir.resolve()), study_from_args(args), args.study_id,
                           _coordinator_settings(args))
    print(f"study {record.study_id}: app sha256 {record.fab_hash}")
    print(f"sites approve it with: fedfusion site approve {record.fab_hash} --state-dir SITE_STATE_DIR")
    return 0


def _start(args: argparse.Namespace) -> int:
    paths = CoordinatorPaths(args.state_dir.resolve())
    if (args.study_id is None) == (args.resubmit is None):
        raise ConfigError("give either --study-id ID (a new study) or --resubmit ID (an interrupted one)")
    if args.resubmit is not None:
        record = resubmission(paths, args.resubmit)
    else:
        record = prepared_study(paths, args.study_id) or prepare_study(paths, study_from_args(args), args.study_id,
                                                                        _coordinator_settings(args))
    print(f"study {record.study_id}: app sha256 {record.fab_hash}; results in {record.results_dir}", flush=True)
    record = run_study(paths, record, echo=lambda line: print(line, flush=True))
    print(f"study {record.study_id}: {record.status}")
    return 0 if record.status == FINISHED else 1

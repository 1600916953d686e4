"""``fedfusion site run BUNDLE_DIR``: this hospital's site daemon (SuperNode + gated app launcher), foreground.

Meant to run as a service (deploy/fedfusion-site.service); logs go to STATE_DIR/logs/ and stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.deployment.logging_setup import log_to_file
from fedfusion.deployment.site.daemon import DEFAULT_RUNTIME_PORT, SiteOptions, run_site
from fedfusion.deployment.site.supernode_launch import (
    DEFAULT_PULL_INTERVAL_S,
    MAX_PULL_INTERVAL_S,
    MIN_PULL_INTERVAL_S,
    pull_interval,
)
from fedfusion.site.site_privacy import LEDGER_DIR_KEY, POLICY_FILE_KEY

NODE_CONFIG_OPTIONS = {
    "data_dir": "data-dir", "cache_dir": "cache-dir", "device": "device",
    "ledger_dir": LEDGER_DIR_KEY, "policy_file": POLICY_FILE_KEY, "encoder_file": "encoder-file",
    "fallback_mpp": "fallback-mpp", "skip_bad": "skip-bad",
}
"""Command-line option -> node config key read by the ClientApp (fedfusion.site.node_context, site_privacy)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` site command."""
    parser = subparsers.add_parser(
        "run", help="run this site's daemon: a SuperNode dialing the coordinator (outbound only)",
        description="Run flower-supernode with the bundle's CA and key and this site's node config, and a "
                    "launcher that runs only apps listed in STATE_DIR/approved-apps.txt (`fedfusion site "
                    "approve`). Stops cleanly on SIGTERM.",
    )
    parser.add_argument("bundle_dir", type=Path, metavar="BUNDLE_DIR", help="the site bundle (site.toml, ca.crt, key)")
    parser.add_argument("--state-dir", type=Path, required=True, help="site daemon state: allow-list, logs, apps")
    parser.add_argument("--data-dir", type=Path, required=True, help="the site's data folder (manifest.csv)")
    parser.add_argument("--skip-bad", action="store_const", const="true", default=None,
                        help="leave out a bad slide or an unlabelled patient (logged) instead of refusing the round")
    parser.add_argument("--cache-dir", type=Path, default=None, help="tile feature cache (default: in data dir)")
    parser.add_argument("--ledger-dir", type=Path, default=None,
                        help="privacy ledger and egress record (default: DATA_DIR/.fedfusion-ledger)")
    parser.add_argument("--policy-file", type=Path, default=None, help="the site's privacy policy (TOML)")
    parser.add_argument("--device", default=None, help="torch device for this site, e.g. cpu or cuda:1")
    parser.add_argument("--encoder-file", type=Path, default=None, help="the site's copy of a TorchScript encoder")
    parser.add_argument("--fallback-mpp", type=float, default=None, help="mpp for slides without resolution")
    parser.add_argument("--runtime-port", type=int, default=DEFAULT_RUNTIME_PORT,
                        help="the SuperNode's local Runtime API port on 127.0.0.1; each site daemon on one host needs "
                             "its own (default: %(default)s)")
    parser.add_argument("--superlink", default=None, metavar="HOST:PORT",
                        help="override the coordinator address of site.toml")
    parser.add_argument("--pull-interval", type=pull_interval, default=DEFAULT_PULL_INTERVAL_S, metavar="SECONDS",
                        help="seconds the SuperNode waits after asking the coordinator for a message and getting "
                             "none: 1/SECONDS requests per second while idle; a message waits SECONDS/2 on average "
                             f"(default: %(default)s; Flower's own: 3; from {MIN_PULL_INTERVAL_S} to "
                             f"{MAX_PULL_INTERVAL_S})")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="compute threads of the site's worker (torch, OpenMP, BLAS; default: one per core); "
                             "when several site daemons share one host, give each its share of the cores")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the site daemon until SIGTERM; return its exit code."""
    log_to_file(args.state_dir / "logs" / "site.log")
    node_config = {key: str(Path(value).resolve()) if isinstance(value, Path) else str(value)
                   for option, key in NODE_CONFIG_OPTIONS.items() if (value := getattr(args, option)) is not None}
    return run_site(SiteOptions(bundle_dir=args.bundle_dir.resolve(), state_dir=args.state_dir.resolve(),
                                node_config=node_config, runtime_port=args.runtime_port, superlink=args.superlink,
                                pull_interval=args.pull_interval, threads=args.threads))

"""``fedfusion site privacy PATH``: what a site has spent of its privacy budget, per dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.privacy.ledger import LEDGER_DIR_NAME, ledgers_in, study_epsilon
from fedfusion.privacy.site_policy import POLICY_FILE_NAME, load_policy


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``privacy`` site command."""
    parser = subparsers.add_parser(
        "privacy", help="print the site's privacy ledger",
        description="Print, per dataset in the site's privacy ledger, the epsilon spent (at the policy's delta, by "
                    "the policy's accountant), the lifetime budget, the rounds (settled and charged), the "
                    "accounted DP steps with their (noise, sample rate, steps) entries, and each study's noise "
                    "calibrated to its target epsilon with that study's spend.",
    )
    parser.add_argument("path", type=Path, metavar="SITE_DIR_OR_LEDGER_DIR",
                        help=f"a site's data folder (its ledger is {LEDGER_DIR_NAME}/) or a ledger folder")
    parser.add_argument("--policy", type=Path, default=None,
                        help=f"the site's policy file (default: SITE_DIR/{POLICY_FILE_NAME} if present, else the "
                             "built-in default)")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    is_site_dir = (args.path / LEDGER_DIR_NAME).is_dir() or (args.path / POLICY_FILE_NAME).is_file()
    site_dir = args.path if is_site_dir else None
    ledger_dir = args.path / LEDGER_DIR_NAME if site_dir is not None else args.path
    policy_file = args.policy
    if policy_file is None and site_dir is not None and (site_dir / POLICY_FILE_NAME).is_file():
        policy_file = site_dir / POLICY_FILE_NAME
    policy = load_policy(policy_file)
    ledgers = ledgers_in(ledger_dir) if ledger_dir.is_dir() else []
    print(f"ledger {ledger_dir}; policy: {policy.source} (max-epsilon {policy.max_epsilon}, delta {policy.delta}, "
          f"accountant {policy.accountant})")
    if not ledgers:
        print("nothing spent: no dataset in this ledger")
    for ledger in ledgers:
        rounds = ledger.rounds()
        history = ledger.history()
        charged = sum(r.status == "charged" for r in rounds)
        reconciled = sum(r.reconciled for r in rounds)
        print(f"site {ledger.dataset.site}  dataset {ledger.dataset.key}  ({ledger.dataset.data_dir})")
        print(f"  epsilon {ledger.epsilon(policy.accountant, policy.delta):.4f} of budget {policy.max_epsilon} "
              f"at delta {policy.delta}")
        print(f"  rounds {len(rounds)} ({charged} charged but not settled, {reconciled} reconciled, "
              f"{sum(not r.dp for r in rounds)} without DP)  steps {sum(entry[2] for entry in history)}")
        for sigma, rate, steps in history:
            print(f"  entry noise {sigma:g}  sample-rate {rate:.6g}  steps {steps}")
        for calibration in ledger.calibrations():
            print(f"  study {calibration.study_id}: target epsilon {calibration.target_epsilon} at delta "
                  f"{calibration.delta} ({calibration.accountant}) -> noise multiplier "
                  f"{calibration.noise_multiplier:.4f} for {calibration.planned_steps} steps at sample-rate "
                  f"{calibration.sample_rate:.6g} ({calibration.patients} patients, {calibration.calibrated_at}); "
                  f"spent {study_epsilon(rounds, calibration):.4f}")
    return 0

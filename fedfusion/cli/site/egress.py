"""``fedfusion site egress PATH [--verify]``: everything the site sent, from its egress record."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import LEDGER_DIR_NAME


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``egress`` site command."""
    parser = subparsers.add_parser(
        "egress", help="print the site's egress record",
        description="Print one line per message the site sent (round, kind, bytes, sha256, arrays, metrics, DP "
                    "parameters and epsilon, error reason); --verify checks the hash chain.",
    )
    parser.add_argument("path", type=Path, metavar="SITE_DIR_OR_RECORD",
                        help=f"a site's data folder, its ledger folder or the {EGRESS_FILE} file itself")
    parser.add_argument("--verify", action="store_true", help="check the hash chain; exit 2 at the first break")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    record = EgressRecord(_record_path(args.path))
    if args.verify:
        count = record.verify_chain()
        print(f"egress record {record.path}: hash chain intact over {count} entries")
        return 0
    entries = record.entries()
    print(f"egress record {record.path}: {len(entries)} messages")
    for e in entries:
        arrays = f"{len(e['arrays'])} arrays (L2 {sum(a['l2'] ** 2 for a in e['arrays']) ** 0.5:.4g})"
        print(f"#{e['seq']} {e['time']} run {e['run_id']} round {e['round']} {e['kind']:8s} {e['bytes']} bytes "
              f"sha256 {e['sha256'][:16]}  {arrays}")
        if e["dp"]:
            print("    dp " + "  ".join(f"{k.split('/')[-1]}={v:g}" for k, v in e["dp"].items()))
        if e["metrics"]:
            print("    metrics " + "  ".join(f"{k.split('/')[-1]}={v}" for k, v in e["metrics"].items()))
        if e["error"]:
            print(f"    error {e['error']['code']}: {e['error']['reason']}")
    return 0


def _record_path(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / LEDGER_DIR_NAME).is_dir():
        return path / LEDGER_DIR_NAME / EGRESS_FILE
    return path / EGRESS_FILE

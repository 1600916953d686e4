"""``fedfusion site egress PATH [--verify] [--expect-head HASH[:COUNT]] [--expect-head-file F] [--write-head F]``:
everything the site sent, from its egress record; ``--verify`` checks it and prints its head to pin elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.privacy.egress_head import EgressHead, check_head, head_of, parse_head, read_head_file, write_head_file
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import LEDGER_DIR_NAME


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``egress`` site command."""
    parser = subparsers.add_parser(
        "egress", help="print the site's egress record",
        description="Print one line per message the site sent (round, kind, bytes, sha256, arrays, metrics, DP "
                    "parameters and epsilon, error reason). --verify checks the hash chain and prints the head "
                    "(HASH:COUNT) to pin elsewhere; with a pinned head it also fails on a record cut at its end, "
                    "emptied or deleted. Exit 0: verified; 1: an empty or missing record and no head to check it "
                    "against; 2: broken, torn or short of a pinned head.",
    )
    parser.add_argument("path", type=Path, metavar="SITE_DIR_OR_RECORD",
                        help=f"a site's data folder, its ledger folder or the {EGRESS_FILE} file itself")
    parser.add_argument("--verify", action="store_true",
                        help="check the hash chain (and the site's head file beside the record) and print the head")
    parser.add_argument("--expect-head", metavar="HASH[:COUNT]",
                        help="a head printed by an earlier --verify: it must still be in the record (implies --verify)")
    parser.add_argument("--expect-head-file", type=Path, metavar="FILE",
                        help="the same, read from a head file kept outside the site's folder (implies --verify)")
    parser.add_argument("--write-head", type=Path, metavar="FILE",
                        help="after a successful check, write the head to FILE atomically (implies --verify)")
    parser.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    record = EgressRecord(_record_path(args.path))
    if args.verify or args.expect_head or args.expect_head_file or args.write_head:
        return _verify(record, args)
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


def _verify(record: EgressRecord, args: argparse.Namespace) -> int:
    """Check the chain and every head pinned for it; print the head. ``PrivacyError`` (exit 2) on any break."""
    pins: list[tuple[EgressHead, str]] = []
    if args.expect_head:
        pins.append((parse_head(args.expect_head, "--expect-head"), "--expect-head"))
    if args.expect_head_file:
        pins.append((read_head_file(args.expect_head_file), f"head file {args.expect_head_file}"))
    if record.head_file.exists():
        pins.append((read_head_file(record.head_file), f"the site's head file {record.head_file}"))
    hashes = record.line_hashes()
    matches = [(check_head(record.path, hashes, pin, source), source) for pin, source in pins]
    if not hashes and not pins:
        state = "is empty" if record.path.exists() else "does not exist"
        print(f"egress record {record.path} {state}: nothing to verify. An empty or missing record cannot be told "
              f"from an emptied or deleted one without a head pinned elsewhere (--expect-head HASH:COUNT, "
              f"--expect-head-file FILE)")
        return 1
    head = head_of(hashes)
    print(f"egress record {record.path}: hash chain intact over {head.count} entries")
    for entry, source in matches:
        print(f"  holds the head pinned by {source} at entry {entry} ({len(hashes) - entry} entries since)")
    if not args.expect_head and not args.expect_head_file:
        print("  no head pinned elsewhere: a record cut at its end, its head file rewritten, would pass too; "
              "pin the head below")
    print(f"head {head}")
    if args.write_head:
        write_head_file(args.write_head, head)
        print(f"wrote the head to {args.write_head}")
    return 0


def _record_path(path: Path) -> Path:
    if path.is_file():
        return path
    if (path / LEDGER_DIR_NAME).is_dir():
        return path / LEDGER_DIR_NAME / EGRESS_FILE
    return path / EGRESS_FILE

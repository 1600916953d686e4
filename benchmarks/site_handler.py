"""Where a site's warm train and evaluate handlers spend their time, part by part, without any transport.

The study and cohort of ``deployment_overhead.py`` (its STUDY settings; its site-a: 24 patients, slide features
prepared first, the policy ``fedfusion simulate`` writes): the site's real ClientApp is called the way a site's
long-lived worker calls it (one process, one ``context.state``): a secure-aggregation train message, then an
evaluate message, for ``ROUNDS`` rounds. Round 1 holds the study's noise calibration and the first cohort read; rounds
2 and later are the warm case a deployed round pays. Each part is timed by a wrapper around the real function
(``PARTS``: inclusive wall time, a part may contain another); "training loop" is the trainer's own
``train-seconds``. Prints medians over the warm rounds; writes ``benchmarks/results/site_handler.json``.
Torch runs with its default threads, as the product does.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fedfusion.atomic_io import atomic_write_text
from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.data.cohort_index import SCHEMA_FILE, read_cohort_index
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.synthetic import generate_cohort
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.site_policy import policy_to_toml
from fedfusion.protocol import ARRAYS_RECORD, CONFIG_RECORD, METRICS_RECORD, SECAGG_RECORD, SERVER_ROUND_KEY
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.wire_records import train_request
from fedfusion.simulation.simulated_nodes import simulated_site_policy
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployment_overhead import STUDY
from dp_overhead import record_summary

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 6
RUN_ID = 7
PARTS = {
    "epsilon (accountant)": ("fedfusion.privacy.accounting", "epsilon_spent",
                             ("fedfusion.privacy.ledger", "fedfusion.site.trainer", "fedfusion.site.site_round")),
    "ledger charge": ("fedfusion.privacy.ledger", "PrivacyLedger.charge", ()),
    "ledger settle": ("fedfusion.privacy.ledger", "PrivacyLedger.settle", ()),
    "trainer.train": ("fedfusion.site.trainer", "SiteTrainer.train", ()),
    "opacus make_private": ("fedfusion.site.trainer", "make_private", ()),
    "stored reply": ("fedfusion.site.round_replay", "RoundReplay.store", ()),
    "trainer.evaluate": ("fedfusion.site.trainer", "SiteTrainer.evaluate", ()),
    "task metrics": ("fedfusion.site.trainer", "task_metrics", ()),
    "evaluation log": ("fedfusion.privacy.evaluation_log", "EvaluationLog.count", ()),
    "evaluation log answer": ("fedfusion.privacy.evaluation_log", "EvaluationLog.answer", ()),
    "egress record": ("fedfusion.site.client_app", "release", ()),
    "cohort memo check": ("fedfusion.site.site_round", "load_cohort_once", ()),
}
"""Label -> (module, attribute, modules that imported the attribute by name)."""


def _timed(label: str, function: Callable[..., Any], spent: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started
    return timed


def instrument(spent: dict[str, float]) -> None:
    """Wrap every part of ``PARTS`` so that its wall time adds up in ``spent``."""
    for label, (module_name, attribute, importers) in PARTS.items():
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        timed = _timed(label, getattr(owner, name), spent)
        setattr(owner, name, timed)
        for importer in importers:
            setattr(importlib.import_module(importer), name, timed)


def _study(cohort: Path) -> StudyConfig:
    parser = argparse.ArgumentParser()
    add_study_options(parser)
    return study_from_args(parser.parse_args([*STUDY, "--rounds", str(ROUNDS)]), default_schema=cohort / SCHEMA_FILE)


def _message(kind: str, study: StudyConfig, server_round: int) -> Message:
    content = RecordDict({ARRAYS_RECORD: ArrayRecord(build_model(study, seed=server_round).state_dict()),
                          CONFIG_RECORD: ConfigRecord({SERVER_ROUND_KEY: server_round})})
    if kind == "train":
        content[SECAGG_RECORD] = train_request(SecAggConfig(num_sites=3, threshold=2, clipping_range=8.0,
                                                            quantization_range=2**22, round_nonce=os.urandom(16)), 1)
    metadata = Metadata(run_id=RUN_ID, message_id=uuid.uuid4().hex, src_node_id=1, dst_node_id=11,
                        reply_to_message_id="", group_id=str(server_round), created_at=time.time(), ttl=3600.0,
                        message_type=kind)
    return Message(metadata=metadata, content=content)


def measure(work: Path) -> dict[str, Any]:
    """Answer ``ROUNDS`` rounds of train and evaluate messages at one site; each message's time and parts."""
    cohort = generate_cohort(work / "cohort", num_sites=3, seed=3, patients_per_site=[24, 20, 20],
                             slide_size_px=1024)
    site = read_cohort_index(cohort).sites[0]
    study = _study(cohort)
    summary = prepare_slide_features(site.site_dir, study, cache_dir=work / "cache", device="cpu")
    if not summary.ok:
        raise RuntimeError(summary.report())
    policy = work / "policy.toml"
    atomic_write_text(policy, policy_to_toml(simulated_site_policy(study)))
    node_config = {"site-name": site.name, "data-dir": str(site.site_dir), "cache-dir": str(work / "cache"),
                   "ledger-dir": str(work / "ledger"), "device": "cpu", "policy-file": str(policy)}
    run_config = StudyRun.of(study, "bench").to_run_config()
    spent: dict[str, float] = defaultdict(float)
    instrument(spent)
    from fedfusion.site.client_app import app

    state = RecordDict()
    messages: dict[str, list[dict[str, Any]]] = {"train": [], "evaluate": []}
    for server_round in range(1, ROUNDS + 1):
        for kind in messages:
            message = _message(kind, study, server_round)
            context = Context(run_id=RUN_ID, node_id=11, node_config=node_config, state=state, run_config=run_config)
            spent.clear()
            started = time.perf_counter()
            reply = app(message, context)
            seconds = time.perf_counter() - started
            if reply.has_error():
                raise RuntimeError(f"{kind} of round {server_round}: {reply.error.reason}")
            parts = dict(spent)
            if kind == "train":
                parts["training loop"] = float(str(reply.content.metric_records[METRICS_RECORD]["train-seconds"]))
            messages[kind].append({"round": server_round, "seconds": seconds, "parts": parts})
    return messages


def warm_medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of the message and of each part over rounds 2 and later."""
    warm = [r for r in rounds if r["round"] > 1]
    labels = sorted({label for r in warm for label in r["parts"]})
    medians = {label: statistics.median(r["parts"].get(label, 0.0) for r in warm) for label in labels}
    return {"message": statistics.median(r["seconds"] for r in warm),
            **dict(sorted(medians.items(), key=lambda item: -item[1]))}


def main() -> None:
    """Measure, print and record the warm handlers' time per part."""
    with tempfile.TemporaryDirectory(prefix="fedfusion-site-handler-") as tmp:
        messages = measure(Path(tmp))
    result: dict[str, Any] = {kind: {"first_round_seconds": rounds[0]["seconds"],
                                     "warm_median_seconds": warm_medians(rounds), "rounds": rounds}
                              for kind, rounds in messages.items()}
    result["study"] = STUDY
    result["load_average"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "site_handler.json", json.dumps(result, indent=2) + "\n")
    for kind in messages:
        first = result[kind]["first_round_seconds"]
        print(f"{kind}: round 1 {first * 1000:.0f} ms; warm rounds 2-{ROUNDS}, median ms:")
        for label, seconds in result[kind]["warm_median_seconds"].items():
            print(f"  {seconds * 1000:8.1f}  {label}")
    train, evaluate = (result[kind]["warm_median_seconds"] for kind in ("train", "evaluate"))
    ms = {"train": train["message"] * 1000, "outside": (train["message"] - train["training loop"]) * 1000,
          "epsilon": train["epsilon (accountant)"] * 1000, "evaluate": evaluate["message"] * 1000}
    record_summary("site_handler",
                   f"a site's warm handlers, no transport (deployment_overhead's study, site-a, 24 patients; median of "
                   f"rounds 2-{ROUNDS}): train (secure) {ms['train']:.0f} ms per message, {ms['outside']:.0f} ms of "
                   f"it outside the training loop (epsilon {ms['epsilon']:.0f} ms); evaluate {ms['evaluate']:.0f} ms; "
                   f"load average {result['load_average']:.1f} -> [site_handler.json](site_handler.json)")

if __name__ == "__main__":
    main()

"""Secure aggregation overhead: one train round's aggregation with SecAgg+ vs plain patient-weighted FedAvg.

5 sites, models of 1M and 10M float32 parameters, measured side by side in one process (interleaved, order
alternating; medians reported). Each round is the real strategy (`SecurePatientWeightedFedAvg`, "on" vs "off")
and the real site adapter (`fedfusion.site.secure_stages` with `site_round.secure_update`) over a grid that
serializes every message and reply with Flower's protobuf wire format, as between SuperLink and SuperNode.

Inside the timed region: building and serializing the train messages (global model to every site), each site
deserializing its message, its update (trained minus global), keys, shares, quantization and masking (secure)
or its weights reply (plain), serializing the replies, the coordinator deserializing them, the SecAgg stages 2-4
(three more round trips) and the unmasking / the weighted average. Outside it: local training (a site's
"trained" weights are precomputed, the same for both), network transfer (loopback in memory; bytes are counted),
the site's policy check and privacy ledger, and federated evaluation.

Two round times are reported. "parallel sites": coordinator time plus, per round trip, the slowest site's time
(each site is its own machine, as deployed); "sequential": everything on this one process, one after the other.
Writes ``benchmarks/results/secure_aggregation.json`` and a line in ``benchmarks/results/README.md``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp_overhead import record_summary

from fedfusion.atomic_io import atomic_write_text
from fedfusion.coordinator.strategies.secure_fedavg import SecurePatientWeightedFedAvg
from fedfusion.flower_compat import message_from_bytes, message_to_bytes
from fedfusion.protocol import ARRAYS_RECORD, CONFIG_RECORD, METRICS_RECORD, SECAGG_RECORD, SERVER_ROUND_KEY, WEIGHT_KEY
from fedfusion.simulation.in_process_grid import RUN_ID, InProcessGrid, set_message_id
from fedfusion.site import secure_stages
from fedfusion.site.round_replay import StoredReply
from fedfusion.site.site_round import secure_update

RESULTS = Path(__file__).resolve().parent / "results"
SITES = 5
PATIENTS = (212, 57, 1033, 88, 409)
SIZES = {"1M": 1_000_000, "10M": 10_000_000}
REPETITIONS = {"1M": 5, "10M": 3}


def model_arrays(parameters: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A model of `parameters` float32 values: one large matrix, a smaller one and two bias vectors."""
    width = 1000
    rows = (parameters - 2 * width - 100 * width) // width
    shapes = {"encoder.weight": (rows, width), "encoder.bias": (width,), "head.weight": (100, width),
              "head.bias": (width,)}
    return {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape in shapes.items()}


def serialize(message: Message) -> bytes:
    """The message's bytes on the wire."""
    return message_to_bytes(message)


def deserialize(payload: bytes) -> Message:
    """The message as the receiver rebuilds it."""
    return message_from_bytes(payload)


class TimedGrid(InProcessGrid):
    """Delivers each message (over the wire format) to its site and times the coordinator and every site."""

    def __init__(self, trained: dict[int, dict[str, np.ndarray]]) -> None:
        super().__init__()
        self.trained = trained
        self.states = {node: RecordDict() for node in trained}
        self.site_seconds = 0.0
        self.slowest_site_seconds = 0.0
        self.bytes = 0

    def get_node_ids(self) -> Iterable[int]:
        """The sites' node ids."""
        return list(self.trained)

    def _site(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        site = f"site-{node}"

        def trained_weights(msg: Message, *_: object) -> RecordDict:  # local training is outside the benchmark
            return RecordDict({ARRAYS_RECORD: ArrayRecord({k: Array(v) for k, v in self.trained[node].items()}),
                               METRICS_RECORD: MetricRecord({WEIGHT_KEY: PATIENTS[node - 100]})})

        server_round = int(message.content.config_records[CONFIG_RECORD][SERVER_ROUND_KEY])  # type: ignore[arg-type]
        if message.metadata.message_type == "train":
            secure_stages.forget(self.states[node])
            request = secure_stages.secure_request(message.content)
            content = trained_weights(message)
            if request is not None:  # what the ClientApp does with SiteRound's answer in a secure round
                received = message.content.array_records[ARRAYS_RECORD].to_torch_state_dict()
                weights = {k: torch.from_numpy(v) for k, v in self.trained[node].items()}
                update = secure_update(received, StoredReply(weights, PATIENTS[node - 100], {}), request, site)
                keys = secure_stages.keep_round(self.states[node], update, RUN_ID, server_round)
                content = RecordDict({METRICS_RECORD: content[METRICS_RECORD], SECAGG_RECORD: keys})
        else:
            content = secure_stages.answer_stage(message, self.states[node], site, server_round)
        return Message(content, reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Serialize each message, run its site, deserialize the reply; evaluate messages are not delivered."""
        ids, slowest = [], 0.0
        for message in messages:
            if message.metadata.message_type == "evaluate":
                continue
            set_message_id(message, f"m{time.monotonic_ns()}")
            ids.append(message.metadata.message_id)
            payload = serialize(message)
            site_started = time.perf_counter()  # the site: read the message, answer, write the reply
            reply_payload = serialize(self._site(deserialize(payload)))
            site_seconds = time.perf_counter() - site_started
            self._replies[message.metadata.message_id] = deserialize(reply_payload)
            self.bytes += len(payload) + len(reply_payload)
            self.site_seconds += site_seconds
            slowest = max(slowest, site_seconds)
        self.slowest_site_seconds += slowest
        return ids


def one_round(mode: str, initial: ArrayRecord, trained: dict[int, dict[str, np.ndarray]]
              ) -> tuple[dict[str, float], ArrayRecord]:
    """One train round with secure aggregation "on" or "off"; its times, bytes and the new global model."""
    grid = TimedGrid(trained)
    strategy = SecurePatientWeightedFedAvg(min_sites=SITES, secure_aggregation=mode)
    started = time.perf_counter()
    result = strategy.start(grid, initial, num_rounds=1, timeout=3600)
    sequential = time.perf_counter() - started
    times = {"sequential": sequential, "parallel": sequential - grid.site_seconds + grid.slowest_site_seconds,
             "megabytes": grid.bytes / 1e6}
    return times, result.arrays


def measure(size: str) -> dict[str, object]:
    """Interleaved repetitions of both rounds for one model size; medians, ratios and the max deviation."""
    rng = np.random.default_rng(0)
    global_arrays = model_arrays(SIZES[size], rng)
    trained = {100 + i: {k: (v + rng.standard_normal(v.shape, dtype=np.float32) * 0.01) for k, v in
                         global_arrays.items()} for i in range(SITES)}
    initial = ArrayRecord({k: Array(v) for k, v in global_arrays.items()})
    samples: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    results: dict[str, ArrayRecord] = {}
    one_round("on", initial, trained)  # warm-up
    for rep in range(REPETITIONS[size]):
        for mode in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            times, results[mode] = one_round(mode, initial, trained)
            samples[mode].append(times)
    medians = {mode: {key: statistics.median(t[key] for t in runs) for key in runs[0]}
               for mode, runs in samples.items()}
    error = max(float(np.max(np.abs(results["on"][k].numpy().astype(np.float64) - results["off"][k].numpy())))
                for k in global_arrays)
    return {
        "parameters": sum(v.size for v in global_arrays.values()),
        "median_seconds_secure": medians["on"], "median_seconds_plain": medians["off"],
        "ratio_parallel_sites": medians["on"]["parallel"] / medians["off"]["parallel"],
        "ratio_sequential": medians["on"]["sequential"] / medians["off"]["sequential"],
        "max_abs_difference_secure_vs_plain": error,
        "samples": samples,
    }


def main() -> None:
    """Measure, print and record the secure/plain round-time ratios at 1M and 10M parameters."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    sizes = {size: measure(size) for size in SIZES}
    for size, numbers in sizes.items():
        secure, plain = numbers["median_seconds_secure"], numbers["median_seconds_plain"]
        print(f"{size}: secure {secure['parallel']:.3f} s vs plain {plain['parallel']:.3f} s with parallel sites "
              f"({numbers['ratio_parallel_sites']:.2f}x); sequential {secure['sequential']:.3f} vs "
              f"{plain['sequential']:.3f} s ({numbers['ratio_sequential']:.2f}x); "
              f"{secure['megabytes']:.0f} vs {plain['megabytes']:.0f} MB on the wire; "
              f"max |secure - plain| {numbers['max_abs_difference_secure_vs_plain']:.2g}")
    result = {
        "benchmark": "secure_aggregation",
        "setup": {"sites": SITES, "patients": PATIENTS, "repetitions": REPETITIONS,
                  "secure": "SecAgg+ 'on', default threshold fraction, clipping range 8, 2**22 levels",
                  "timed": "train messages out, sites' replies and SecAgg stages 2-4 over Flower's wire format, "
                           "aggregation; not local training, network transfer, policy/ledger, evaluation"},
        "sizes": sizes,
        "environment": {"numpy": np.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count()},
    }
    atomic_write_text(RESULTS / "secure_aggregation.json", json.dumps(result, indent=2) + "\n")
    line = ("5 sites, SecAgg+/plain FedAvg round time (sites in parallel): "
            + ", ".join(f"**{n['ratio_parallel_sites']:.2f}x** at {s} parameters "
                        f"({n['median_seconds_secure']['parallel']:.2f} vs "
                        f"{n['median_seconds_plain']['parallel']:.2f} s)"
                        for s, n in sizes.items())
            + "; all on one process: " + ", ".join(f"{n['ratio_sequential']:.2f}x at {s}" for s, n in sizes.items())
            + " -> [secure_aggregation.json](secure_aggregation.json)")
    print(line)
    record_summary("secure_aggregation", line)


if __name__ == "__main__":
    main()

"""Coordination overhead per round: deployment (coordinator + 3 site daemons, TLS) vs Flower's simulation engine.

One small study (3 sites, a few dozen patients each, 3 rounds), run twice in one go on the same cohort and config:
with ``fedfusion simulate`` and with a real ``fedfusion coordinator run`` + three ``fedfusion site run`` processes
on loopback (each site's slide features prepared first with ``fedfusion site prepare``, as a site admin does).
A round's wall time is the time between the coordinator's "train federation" progress lines of consecutive
rounds (round 1, which includes start-up, is left out): one train message (which also carries the previous round's
evaluation) and the secure-aggregation stages; its overhead is that minus the longest local training time a site
reported for the round (sites train in parallel). Overhead therefore includes message transport (each
object, three per message, one request through the gateway), handing each message to the site's long-lived worker,
model (de)serialisation and evaluation. Prints the ratio; writes ``benchmarks/results/deployment_overhead.json``
(with the host's load average at the end).
It also prints and records where each deployed message's time went, per message type (``message_timeline.py``:
queue wait, process start, pull, handler, reply), from the coordinator's grid lines and the sites' ``timeline``
lines, and the CPU seconds per round of each kind of deployed process (``process_cpu.py``: what a round costs the
host, less tied to what else runs there). The deployed sites run ``fedfusion site run``'s default ``--pull-interval``,
``--threads 1`` (three site daemons share one host, as the simulation gives each simulated site one CPU;
SITE_GUIDE.md section 6) and the privacy policy ``fedfusion simulate`` wrote for their simulated twins (the study's
split; evaluation on any number of held-out patients), so both evaluate the same patients.
Every server binds to 127.0.0.1; every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

import fedfusion
from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.synthetic import generate_cohort
from fedfusion.deployment.coordinator.state import DAEMON_FILE
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.provisioning.consortium import init_consortium
from fedfusion.simulation.simulated_nodes import SIMULATED_SITES_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dp_overhead import record_summary
from message_timeline import format_timeline, message_timeline, node_ids, site_spans
from process_cpu import cpu_by_role, per_round

RESULTS = Path(__file__).resolve().parent / "results"
SITES = ("site-a", "site-b", "site-c")
ROUNDS = 3
STUDY = ["--set", "hidden-dim=8", "--set", "local-epochs=1", "--set", "batch-size=4", "--set", "tiles-per-patient=4",
         "--set", "noise-multiplier=1.0"]
ROUND_END = re.compile(r"\[round (\d+)/\d+\] train\s+federation")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fedfusion(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedfusion.cli", *args]


def _round_end_times(command: list[str], env: dict[str, str], cwd: Path,
                     on_round_end: Callable[[int], None] = lambda r: None) -> tuple[dict[int, float], str]:
    """Run ``command``, stamping each "round N train federation" line as it arrives (and calling
    ``on_round_end(N)`` then); return stamps and output."""
    stamps: dict[int, float] = {}
    lines = []
    with subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if (match := ROUND_END.search(line)) and int(match.group(1)) not in stamps:
                stamps[int(match.group(1))] = time.monotonic()
                on_round_end(int(match.group(1)))
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} failed:\n{output[-3000:]}")
    return stamps, output


def _overheads(stamps: dict[int, float], site_metrics: Path) -> dict[str, list[float]]:
    sites = pd.read_csv(site_metrics)
    train = sites[sites["phase"] == "train"].groupby("round")["train-seconds"].max()
    rounds = sorted(r for r in stamps if r - 1 in stamps)
    if not rounds:
        raise RuntimeError(f"no two consecutive rounds ended with a 'train federation' line (ended: "
                           f"{sorted(stamps)}); see {site_metrics.parent}")
    wall = [stamps[r] - stamps[r - 1] for r in rounds]
    return {"rounds": rounds, "round_seconds": wall, "max_site_train_seconds": [float(train[r]) for r in rounds],
            "overhead_seconds": [w - float(train[r]) for w, r in zip(wall, rounds, strict=True)]}


def _simulation(work: Path, cohort: Path, env: dict[str, str]) -> dict[str, list[float]]:
    results = work / "sim-results"
    stamps, _ = _round_end_times(_fedfusion("simulate", "--sites", "3", "--rounds", str(ROUNDS), "--cohort-dir",
                                            str(cohort), "--results-dir", str(results), *STUDY), env, work)
    return _overheads(stamps, results / "site_metrics.csv")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _simulated_twin_policy(work: Path, site: str) -> Path:
    """The privacy policy ``fedfusion simulate`` wrote for ``site`` (the study's split, evaluation on any number of
    held-out patients): a deployed site runs with its simulated twin's, so both evaluate the same patients."""
    policy = work / "sim-results" / SIMULATED_SITES_DIR / site / POLICY_FILE_NAME
    if not policy.is_file():
        raise RuntimeError(f"{policy} is missing: run the simulation first")
    return policy


def _deployment(work: Path, cohort: Path, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, object]]:
    port = _free_port()
    consortium, state = work / "consortium", work / "coordinator"
    init_consortium(consortium, "coordinator", ["127.0.0.1"], list(SITES), port=port)
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with (work / f"{name}.out").open("ab") as out:
            started.append(subprocess.Popen(_fedfusion(*args), env=env, cwd=work, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("coordinator", "coordinator", "run", "--consortium-dir", str(consortium), "--state-dir", str(state),
              "--host", "127.0.0.1", "--superlink-port", str(_free_port()))
        deadline = time.monotonic() + 120
        while not (state / DAEMON_FILE).is_file():
            if started[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "coordinator.out").read_text()[-3000:])
            time.sleep(0.5)
        for site in SITES:
            site_state = work / "sites" / site
            subprocess.run(_fedfusion("site", "approve", f"fedfusion=={fedfusion.__version__}", "--state-dir",
                                      str(site_state)), env=env, check=True, capture_output=True)
            subprocess.run(_fedfusion("site", "prepare", str(cohort / site), "--cache-dir", str(site_state / "cache"),
                                      "--device", "cpu"), env=env, check=True, capture_output=True)
            start(site, "site", "run", str(consortium / "sites" / site), "--state-dir", str(site_state),
                  "--data-dir", str(cohort / site), "--cache-dir",
                  str(site_state / "cache"), "--ledger-dir", str(site_state / "ledger"), "--device", "cpu",
                  "--runtime-port", str(_free_port()), "--policy-file", str(_simulated_twin_policy(work, site)),
                  "--threads", "1")
        cpu: dict[int, dict[str, float]] = {}
        stamps, output = _round_end_times(
            _fedfusion("study", "start", "--state-dir", str(state), "--study-id", "bench", "--rounds", str(ROUNDS),
                       "--set", "min-sites=3", *STUDY), env, work,
            lambda r: cpu.__setitem__(r, cpu_by_role(str(work))))
        results = Path(re.search(r"results in (\S+)", output).group(1))  # type: ignore[union-attr]
        overheads = _overheads(stamps, results / "site_metrics.csv")
        return ({**overheads, "cpu_seconds_per_round": per_round(cpu, overheads["rounds"])},
                _timeline(output, work / "sites", overheads["rounds"]))
    finally:
        for process in reversed(started):
            _stop(process)


def _timeline(coordinator_output: str, sites_dir: Path, rounds: list[float]) -> dict[str, object]:
    """Each deployed message's time, per message type (``message_timeline.py``), from the study's and sites' logs."""
    site_of_node, spans = {}, {}
    for site in SITES:
        logs = sites_dir / site / "logs"
        site_of_node.update(dict.fromkeys(node_ids((logs / "supernode.log").read_text(errors="replace")), site))
        spans[site] = site_spans("".join(f.read_text(errors="replace") for f in sorted(logs.rglob("*.log"))))
    return message_timeline(coordinator_output.splitlines(), site_of_node, spans, [int(r) for r in rounds])


def main() -> None:
    """Run the study in simulation and in deployment; print and record the overhead per round."""
    with tempfile.TemporaryDirectory(prefix="fedfusion-deploy-bench-") as tmp:
        work = Path(tmp)
        cohort = generate_cohort(work / "cohort", num_sites=3, seed=3, patients_per_site=[24, 20, 20],
                                 slide_size_px=1024)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "FLWR_HOME": str(work / "flwr-home"), "RAY_TMPDIR": str(work / "ray")}
        simulation = _simulation(work, cohort, env)
        deployment, timeline = _deployment(work, cohort, env)
    mean = {name: sum(r["overhead_seconds"]) / len(r["overhead_seconds"])
            for name, r in (("simulation", simulation), ("deployment", deployment))}
    ratio = mean["deployment"] / mean["simulation"]
    result = {"sites": len(SITES), "rounds": ROUNDS, "patients_per_site": [24, 20, 20], "study": STUDY,
              "simulation": simulation, "deployment": deployment,
              "mean_overhead_seconds": mean, "deployment_over_simulation": ratio,
              "deployment_message_timeline": timeline, "cpus": os.cpu_count(),
              "load_average_1_5_15_min": list(os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "deployment_overhead.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"deployed messages, rounds {deployment['rounds']} (seconds, mean over rounds and sites):")
    print(format_timeline(timeline))
    print("deployment CPU seconds per round, by role: "
          + ", ".join(f"{role} {seconds:.2f}" for role, seconds in deployment["cpu_seconds_per_round"].items()))
    record_summary("deployment_overhead",
                   f"coordination overhead per round (round wall time - longest site training), 3 sites x "
                   f"{ROUNDS} rounds: deployment {mean['deployment']:.1f} s vs simulation "
                   f"{mean['simulation']:.1f} s = **{ratio:.1f}x** (a long-lived worker per site, each message's "
                   f"content packed into one record; TLS + gateway on loopback) -> "
                   f"[deployment_overhead.json](deployment_overhead.json)")


if __name__ == "__main__":
    main()
